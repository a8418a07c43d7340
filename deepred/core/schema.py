"""The configuration schema (deepred/core/config.schema.yaml): every key, its type, default and bounds.

Torch- and pandas-free: the model-name catalogue reads the neural baselines from it at Snakemake parse time.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml


def load_schema() -> dict:
    """The schema as a fresh dict (callers may fill it)."""
    return yaml.safe_load(_schema_text())


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("deepred.core").joinpath("config.schema.yaml").read_text()
