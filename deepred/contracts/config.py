"""Load and validate the pipeline configuration against deepred/core/config.schema.yaml.

Validation fills schema defaults, rejects unknown keys and reports each problem by its key path,
so a typo in config.yaml stops the run before any job starts.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import jsonschema

from deepred.contracts.config_checks import load_yaml, name_problems, path_problems
from deepred.contracts.query import query_structure_problem
from deepred.contracts.weights import safetensors_problem
from deepred.core.model_names import (
    PHOTOMETRY_BASELINE,
    enabled_architectures,
    enabled_baselines,
    enabled_networks,
    ensemble_candidates,
)
from deepred.core.schema import load_schema


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is allowed."""


def _extend_with_defaults(validator_class):
    """A validator that also fills `default:` values in (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _extend_with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, allowed, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        where = "the top level" if key == "<top level>" else f"'{key}'"
        return f"unknown key {', '.join(hints)} in {where}; allowed keys: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"config key '{key}': {error.instance!r} is not one of {error.validator_value}"
    return f"config key '{key}': {error.message}"


def validate_config(config: dict) -> dict:
    """Validate `config` in place (filling defaults) and return it; raise ConfigError on problems."""
    schema = load_schema()
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        # An if/then failure hides the precise cause in its context: report the leaves.
        leaves = []
        for e in errors:
            leaves.extend(e.context or [e]) if e.validator in ("allOf", "anyOf", "oneOf") else leaves.append(e)
        msgs = sorted({_describe(e, schema) for e in leaves})
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(msgs))
    _resolve_model_lists(config)
    _check_semantics(config)
    return config


def _resolve_model_lists(config: dict) -> None:
    """`null` model lists (the schema default) mean every enabled architecture, so a minimal config is valid."""
    for section, key in (("ensemble", "members"), ("shap", "models")):
        if config[section].get(key) is None:
            config[section][key] = enabled_architectures(config)


def _model_list_problems(config: dict) -> list[str]:
    """Models named in lists (ensemble, SHAP, transfer) must exist and be enabled: a disabled one never trains."""
    archs, networks = enabled_architectures(config), enabled_networks(config)
    sections = {**config.get("baselines", {}), **config.get("architectures", {})}
    problems = []
    for key, names, allowed, what in (
        ("ensemble.members", config["ensemble"]["members"], ensemble_candidates(config),
         "enabled architecture, hybrid or the enabled photometric baseline"),
        ("hybrid.backbones", config["hybrid"]["backbones"], archs, "enabled architecture"),
        ("shap.models", config["shap"]["models"], networks, "enabled architecture or neural baseline"),
        ("metrics.transfer_models", config["metrics"]["transfer_models"], networks,
         "enabled architecture or neural baseline"),
        ("shap.shuffled_models", config["shap"]["shuffled_models"], config["shap"]["models"], "explained network"),
        ("shap.method_per_model", list(config["shap"]["method_per_model"]), config["shap"]["models"],
         "explained network"),
        ("scale_study.models", config.get("scale_study", {}).get("models", []),
         networks + [b for b in enabled_baselines(config) if b == PHOTOMETRY_BASELINE],
         "enabled network or the enabled photometric baseline"),
        ("scale_study.datasets", config.get("scale_study", {}).get("datasets", []), list(config["datasets"]),
         "entry of `datasets`"),
    ):
        for name in names:
            if name in allowed:
                continue
            section = sections.get(name)
            why = (f"'{name}' is disabled (enabled: false)" if section is not None and not section.get("enabled", True)
                   else f"'{name}' is not an {what}")
            close = difflib.get_close_matches(name, allowed, n=1)
            problems.append(f"config key '{key}': {why}" + (f" (did you mean '{close[0]}'?)" if close else "")
                            + f"; enabled: {', '.join(allowed) or '(none)'}")
    return problems


def _query_problems(config: dict) -> list[str]:
    from deepred.contracts.processed import query_problem, source_columns  # pandas: only when a config is checked

    problems = []
    for name, ts in config["test_sets"].items():
        if not ts.get("query"):
            continue
        structure = query_structure_problem(ts["query"])  # before anything evaluates it, whatever the source
        if structure:
            problems.append(f"config key 'test_sets.{name}.query' ({ts['query']!r}): {structure}")
            continue
        ds = config["datasets"].get(ts["dataset"])
        columns = None if ds is None else source_columns(ds["source"])
        if columns is None:  # a source with user columns: its names are checked on the catalogue (test_set_rows)
            continue
        problem = query_problem(ts["query"], {**columns, ds["label_column"]: "float64"})
        if problem:
            problems.append(f"config key 'test_sets.{name}.query' ({ts['query']!r}): {problem} in the catalogue of "
                            f"'{ts['dataset']}' ({ds['source']['kind']} source)")
    return problems


def _split_problems(config: dict) -> list[str]:
    """A simulated dataset's splits must each hold systems, and the validation split enough rows to calibrate
    PDFs (every object is at least one row; real sources are counted when they are normalized)."""
    from deepred.contracts.processed import MIN_CALIBRATION_ROWS  # pandas: only when a config is checked

    problems = []
    for name, ds in config["datasets"].items():
        n = ds["source"].get("n_systems") if ds["source"]["kind"] == "simulate" else None
        if n is None:
            continue
        for split, frac in ds["splits"].items():
            need = MIN_CALIBRATION_ROWS if split == "val" else 1
            if int(n * frac) < need:
                problems.append(f"config key 'datasets.{name}.splits.{split}': {frac:g} of {n} systems is about "
                                f"{int(n * frac)}; the {split} split needs at least {need}"
                                + (" (the PDF calibration's minimum)" if split == "val" else "")
                                + "; raise source.n_systems or the fraction")
    return problems


def _label_problems(config: dict) -> list[str]:
    """A dataset's label_column must be a column its source writes (where the source's columns are known)."""
    from deepred.contracts.processed import source_columns  # pandas: only when a config is checked

    problems = []
    for name, ds in config["datasets"].items():
        columns = source_columns(ds["source"])
        if columns is not None and ds["label_column"] not in columns:
            redshifts = sorted(c for c, t in columns.items() if c.startswith("z_") and t.startswith("float"))
            close = difflib.get_close_matches(ds["label_column"], list(columns), n=1)
            problems.append(f"config key 'datasets.{name}.label_column': '{ds['label_column']}' is not a column of "
                            f"the {ds['source']['kind']} source" + (f" (did you mean '{close[0]}'?)" if close else "")
                            + f"; its redshift columns: {', '.join(redshifts)}")
    return problems


def _weights_problems(config: dict) -> list[str]:
    """Every local weights file must exist and be a whole safetensors file, checked before Snakemake may delete
    a trained model to retrain it from these weights."""
    problems = []
    for a, c in config.get("architectures", {}).items():
        if not (c.get("enabled", True) and c.get("weights")):
            continue
        path = Path(c["weights"])
        if not path.is_file():
            problems.append(f"config key 'architectures.{a}.weights': file {path} does not exist")
        elif problem := safetensors_problem(path):
            problems.append(f"config key 'architectures.{a}.weights': {path}: {problem}")
    return problems


def _photometry_problems(config: dict) -> list[str]:
    """The photometric baseline's apertures must fit every dataset's cutout (deepred.baselines.photometry)."""
    section = config.get("baselines", {}).get("photometry", {})
    if not section.get("enabled", True):
        return []
    radius = max(section["aperture_radii_px"])
    return [f"config key 'baselines.photometry.aperture_radii_px': {radius:g} px does not fit the {ds['cutout']} px "
            f"cutouts of '{name}' (at most {(ds['cutout'] - 1) / 2:g})"
            for name, ds in config["datasets"].items() if radius > (ds["cutout"] - 1) / 2]


def _hybrid_problems(config: dict) -> list[str]:
    """A residual hybrid corrects a point prediction: its backbone needs a point head."""
    hybrid = config["hybrid"]
    if hybrid["fusion"] != "residual" or not hybrid["backbones"]:
        return []
    problems = []  # without the photometric baseline there are no residual hybrids (model_names.hybrid_backbones)
    for arch in hybrid["backbones"]:
        head = config["architectures"].get(arch, {}).get("head", "point")
        if head != "point":
            problems.append(f"config key 'hybrid.fusion': residual hybrids correct a point prediction, but "
                            f"architectures.{arch}.head is '{head}'; use fusion: concat for it")
    return problems


def _check_semantics(config: dict) -> None:
    problems = (path_problems(config) + name_problems(config) + _model_list_problems(config)
                + _split_problems(config) + _label_problems(config) + _query_problems(config) + _weights_problems(config)
                + _photometry_problems(config) + _hybrid_problems(config))
    for name, ds in config["datasets"].items():
        total = sum(ds["splits"].values())
        if abs(total - 1.0) > 1e-6:
            problems.append(f"config key 'datasets.{name}.splits': fractions sum to {total:g}, must sum to 1")
        lo, hi = ds["label_range"]
        if not lo < hi:
            problems.append(f"config key 'datasets.{name}.label_range': [{lo}, {hi}] must be increasing")
    for name, ts in config["test_sets"].items():
        if ts["dataset"] not in config["datasets"]:
            problems.append(
                f"config key 'test_sets.{name}.dataset': unknown dataset '{ts['dataset']}'; "
                f"known: {', '.join(config['datasets'])}"
            )
    if config.get("ensemble", {}).get("cv_folds") == 1:  # checked at load, not after hours of training
        problems.append("config key 'ensemble.cv_folds': 1 fold is no cross-validation; use 0 (always the stack) "
                        "or >= 2")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    try:
        config = load_yaml(path)
    except ValueError as exc:  # duplicate keys and syntax errors, with the file and line
        raise ConfigError(str(exc)) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    return validate_config(config)


def dataset_config(config: dict, dataset: str) -> dict:
    try:
        return config["datasets"][dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset '{dataset}'; known: {', '.join(config['datasets'])}") from None
