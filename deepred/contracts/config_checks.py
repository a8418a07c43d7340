"""Config values that name folders, models and files, checked at load against what the pipeline provides.

- data_dir and results_dir: `~` and `$VARS` are expanded (in place); an empty path, an unset variable or the
  filesystem root is refused, never taken literally (a folder named `$HOME`, outputs planned at `/`).
- Model names: an architecture may not take a name the pipeline writes for something else (a baseline, an
  ensemble, the truth tables of results/pdfs/), and at least one model must be enabled.
- YAML files are read with duplicate keys refused, naming the file and the line (the last one would win).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from deepred.core.model_names import ENSEMBLES, FEATURE_BASELINES, enabled_baselines, enabled_networks, neural_baselines

PATH_KEYS = ("data_dir", "results_dir")
TRUTH = "truth"  # results/pdfs/truth/{test_set}.hdf5: the truth tables beside every PDF model's ensembles


def reserved_names() -> tuple[str, ...]:
    """Names an architecture may not take: the pipeline writes files under them for other models."""
    return (*neural_baselines(), *FEATURE_BASELINES, *ENSEMBLES, TRUTH)


def path_problems(config: dict) -> list[str]:
    """Expand `~` and `$VARS` in data_dir and results_dir (in place); the problems of what cannot be used."""
    problems = []
    for key in PATH_KEYS:
        raw = config.get(key)
        if raw is None:
            continue
        value = os.path.expandvars(os.path.expanduser(str(raw)))
        unset = re.findall(r"\$\{?(\w+)", value)
        if not value.strip():
            problems.append(f"config key '{key}': empty; give a folder (e.g. '{key.split('_')[0]}')")
        elif unset:
            problems.append(f"config key '{key}' ({raw!r}): environment variable ${unset[0]} is not set")
        elif Path(value).resolve() == Path(value).resolve().parent:
            problems.append(f"config key '{key}' ({raw!r}): the filesystem root; give a folder of its own")
        else:
            config[key] = value
    return problems


def name_problems(config: dict) -> list[str]:
    problems = []
    reserved = reserved_names()
    for name in config.get("architectures", {}):
        if name in reserved:
            problems.append(f"config key 'architectures.{name}': '{name}' is reserved (the pipeline writes files "
                            f"under it for another model); reserved: {', '.join(reserved)}")
    if not enabled_networks(config) and not enabled_baselines(config):
        problems.append("config: every model is disabled (architectures and baselines); enable at least one")
    return problems


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1}; the last one would silently win)",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path):
    """A YAML file's content; duplicate keys and syntax errors (a tab for indentation) name the file and line."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        hint = " (YAML indents with spaces, not tabs)" if "\\t" in str(exc.problem) else ""
        what = "" if str(exc.problem).startswith("duplicate key") else "not valid YAML: "
        raise ValueError(f"{where}: {what}{exc.problem}{hint}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None


def check_config_files(paths) -> None:
    """Snakemake's WorkflowError naming the file and line of the first config file that does not read right."""
    from snakemake.exceptions import WorkflowError  # only in a Snakemake process

    for path in dict.fromkeys(Path(p).resolve() for p in paths):
        if not path.is_file():
            continue  # Snakemake's own message names a missing config file
        try:
            load_yaml(path)
        except ValueError as exc:
            raise WorkflowError(str(exc)) from None
