"""The catalogue of model names: which models exist, which ones a config enables, the training keys that
change no number, and the seed helpers. Every list of models in the package and the workflow comes from here.

Torch-free on purpose: rules/common.smk imports it at parse time in every Snakemake process (twice per
SLURM job), where importing torch and timm would cost seconds.

Where each name lives:
- architectures: the keys of config["architectures"] (the user names them; any timm backbone);
- neural baselines: the sections of `baselines` in the config schema (deepred/core/config.schema.yaml),
  except the feature-based ones (FEATURE_BASELINES). A new baseline needs a schema section anyway, and the
  schema is readable without torch; its network is registered once with @register_baseline in
  deepred/models/baselines.py (tests/baselines/test_baselines.py checks that every schema name has a builder);
- ensembles: ENSEMBLE_METHODS (the ensemble job writes one model per method);
- hybrids: `hybrid_<architecture>` for each architecture in hybrid.backbones (image embedding + photometric features,
  deepred/models/hybrid.py), and their controls `hybrid_<architecture>_<control>` (HYBRID_CONTROLS) when
  hybrid.controls is on. Hybrids are table rows of their own family; the controls only feed hybrid_controls.csv.
"""

from __future__ import annotations

from functools import lru_cache

from deepred.core.schema import load_schema

FEATURE_BASELINES = ("hogsvr", "photometry")  # baselines on measured features (deepred/baselines/hogsvr.py,
# deepred/baselines/photometry.py), not networks
PHOTOMETRY_BASELINE = FEATURE_BASELINES[1]  # colours, not images: a family of its own (model_family)
ENSEMBLE_METHODS = ("stacked", "mean")
PHOTOMETRY_FAMILY = "baseline_photometry"  # model_family of the photometric baseline
ENSEMBLES = tuple(f"ensemble_{m}" for m in ENSEMBLE_METHODS)
HYBRID_FAMILY = "deepred_hybrid"  # model_family of the hybrids: apart from the paper's image-only DeepRed rows
# The hybrid's controls (results/tables/hybrid_controls.csv): each object's image swapped for another object's of
# the same split (training and test), the photometry kept; the image branch zeroed (the head on photometry alone).
HYBRID_CONTROLS = ("shuffled", "noimage")

# The SHAP occlusion control's predictions (deepred/explain/controls.py), a column z_{variant} each: the sky-noise fills
# of the footprint, the same mask elsewhere, both grown, then the donor swaps of the grown pair. Here, torch-free,
# because the explain rule's rerun trigger lists them: a new control reruns the explain jobs.
OCCLUSION_VARIANTS = ("object", "elsewhere", "wide", "wide_elsewhere", "swap", "swap_elsewhere")

# Keys of `training` that change no number (threads, loaders, device, resume policy): not part of the
# train rule's params (no rerun) nor of the resume fingerprint.
RUN_ONLY_TRAINING_KEYS = ("threads", "num_workers", "device", "resume", "on_corrupt_checkpoint")
# Keys of a model's own section that override `training` for that model (null: the training value).
MODEL_TRAINING_KEYS = ("epochs", "lr", "batch_size", "weight_decay", "patience")


@lru_cache(maxsize=1)
def neural_baselines() -> tuple[str, ...]:
    """The neural baselines the schema declares, in its order: ('photoz', 'netz', 'a1', 'a3')."""
    sections = load_schema()["properties"]["baselines"]["properties"]
    return tuple(name for name in sections if name not in FEATURE_BASELINES)


def enabled_architectures(config: dict) -> list[str]:
    return [a for a, c in config.get("architectures", {}).items() if c.get("enabled", True)]


def enabled_baselines(config: dict) -> list[str]:
    """Every enabled baseline, neural and feature-based, in the config's order."""
    return [b for b, c in config.get("baselines", {}).items() if c.get("enabled", True)]


def image_baselines(config: dict) -> list[str]:
    """The enabled baselines that read images (every one but photometry): the paper's R compares with these."""
    return [b for b in enabled_baselines(config) if b != PHOTOMETRY_BASELINE]


def enabled_neural_baselines(config: dict) -> list[str]:
    return [b for b in enabled_baselines(config) if b in neural_baselines()]


def hybrid_backbones(config: dict) -> list[str]:
    """hybrid.backbones that are enabled architectures; none when the hybrids are residual (the default) and the
    photometric baseline they correct is disabled."""
    archs = enabled_architectures(config)
    hybrid = config.get("hybrid") or {}
    if hybrid.get("fusion", "residual") == "residual" and not photometry_enabled(config):
        return []
    return [a for a in hybrid.get("backbones", []) if a in archs]


def photometry_enabled(config: dict) -> bool:
    return bool((config.get("baselines") or {}).get(PHOTOMETRY_BASELINE, {}).get("enabled", True))


def hybrid_models(config: dict) -> list[str]:
    """The hybrids the config trains: one per backbone in hybrid.backbones."""
    return [f"hybrid_{a}" for a in hybrid_backbones(config)]


def hybrid_control_models(config: dict) -> list[str]:
    """The control networks of every hybrid (none when hybrid.controls is off)."""
    if not (config.get("hybrid") or {}).get("controls", False) or not photometry_enabled(config):  # their reference
        return []
    return [f"hybrid_{a}_{c}" for a in hybrid_backbones(config) for c in HYBRID_CONTROLS]


def parse_hybrid(name: str, config: dict) -> tuple[str, str | None] | None:
    """(architecture, control or None) of a hybrid or control name of this config, else None."""
    for arch in (config.get("hybrid") or {}).get("backbones", []):
        if name == f"hybrid_{arch}":
            return arch, None
        for control in HYBRID_CONTROLS:
            if name == f"hybrid_{arch}_{control}":
                return arch, control
    return None


def enabled_networks(config: dict) -> list[str]:
    """The networks the train rule trains: enabled architectures, enabled neural baselines, hybrids and controls."""
    return (enabled_architectures(config) + enabled_neural_baselines(config) + hybrid_models(config)
            + hybrid_control_models(config))


def ensemble_candidates(config: dict) -> list[str]:
    """What ensemble.members may name: enabled architectures, hybrids and the enabled photometric baseline."""
    photometry = [PHOTOMETRY_BASELINE] if photometry_enabled(config) else []
    return enabled_architectures(config) + hybrid_models(config) + photometry


def ensemble_members(config: dict) -> list[str]:
    """ensemble.members that the config fits (null, before validation: every enabled architecture)."""
    members = config.get("ensemble", {}).get("members")
    if members is None:
        return enabled_architectures(config)
    allowed = ensemble_candidates(config)
    return [m for m in members if m in allowed]


def deepred_models(config: dict) -> list[str]:
    """DeepRed's own models: the enabled architectures and, when some are ensemble members, the ensembles."""
    return enabled_architectures(config) + (list(ENSEMBLES) if ensemble_members(config) else [])


def table_models(config: dict) -> list[str]:
    """Every model of the study's tables, in their row order: DeepRed's, the hybrids, then the enabled baselines."""
    return deepred_models(config) + hybrid_models(config) + enabled_baselines(config)


def gives_pdfs(config: dict, model: str) -> bool:
    """Whether a table model's prediction files carry PDFs: every model's when the config calibrates PDFs (a
    `calibration` section: deepred.pdfs.calibration gives point estimators and ensembles a PDF too), else only a network's
    with a PDF head (`head: pdf`). Known from the config alone, so rules/pdfs.smk can list its files at parse time;
    a model whose validation split was too small to calibrate has no PDFs, and its qp job says so."""
    if "calibration" in config:
        return True
    section = config.get("architectures", {}).get(model) or config.get("baselines", {}).get(model) or {}
    return section.get("head") == "pdf"


def pdf_models(config: dict) -> list[str]:
    """The table models with PDFs (gives_pdfs), in table order: rules/pdfs.smk writes their qp ensembles."""
    return [m for m in table_models(config) if gives_pdfs(config, m)]


def model_family(config: dict, model: str) -> str:
    if model in config.get("architectures", {}):
        return "deepred_backbone"
    if model in ENSEMBLES:  # an ensemble with a hybrid or photometry member reads photometry too
        image_only = set(ensemble_members(config)) <= set(enabled_architectures(config))
        return "deepred_ensemble" if image_only else HYBRID_FAMILY
    if parse_hybrid(model, config):
        return HYBRID_FAMILY
    if model == PHOTOMETRY_BASELINE:  # improvement.csv compares with it apart from the image baselines
        return PHOTOMETRY_FAMILY
    if model in FEATURE_BASELINES:
        return "baseline_features"
    return "baseline_neural"


def explained_models(config: dict) -> list[str]:
    """shap.models of a validated config (deepred.contracts.config checks that each is an enabled network)."""
    return list(config["shap"]["models"])


def transfer_models(config: dict) -> list[str]:
    """metrics.transfer_models of a validated config (deepred.contracts.config checks that each is an enabled network)."""
    return list(config["metrics"]["transfer_models"])
