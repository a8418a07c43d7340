"""The configuration schema (deepred/core/config.schema.yaml): every key, its type, default and bounds.

Torch- and pandas-free: the model-name catalogue reads the neural baselines from it at Snakemake parse time.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources

import yaml

# libyaml's loader where PyYAML has it: the pure-Python one took ~0.23 s per parse of the schema, three parses per
# Snakemake invocation (a third of a no-op rerun)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_schema() -> dict:
    """The schema as a fresh dict (callers may fill it)."""
    return copy.deepcopy(_parsed_schema())


@lru_cache(maxsize=1)
def _parsed_schema() -> dict:
    return yaml.load(_schema_text(), Loader=_LOADER)  # noqa: S506 (a safe loader)


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("deepred.core").joinpath("config.schema.yaml").read_text()
