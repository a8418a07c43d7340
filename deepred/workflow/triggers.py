"""Rerun triggers: what a job's numbers depend on, as the `params` its rule declares.

Snakemake reruns a job whose params changed, so each builder returns exactly the config a job's results read,
and leaves out the keys that only select jobs, set threads or are read by later steps. One builder per kind of
job; the rules call them (rules/*.smk), so two rules that fit the same thing cannot drift apart.
"""

from __future__ import annotations

from deepred.core.model_names import OCCLUSION_VARIANTS, RUN_ONLY_TRAINING_KEYS, parse_hybrid

# baselines.photometry keys that decide the measured features (deepred.features.photometry.PhotometryParams)
PHOTOMETRY_MEASUREMENT_KEYS = ("aperture_radii_px", "detect_thresh", "mask_neighbours")

# metrics keys that select jobs or name files, and change no number of a per-test-set file
METRICS_RUN_ONLY = ("transfer_models", "paper_R", "archive_date")
# shap keys that select jobs or are read by the table and figures only: no rerun of an explain job
SHAP_RUN_ONLY_KEYS = ("models", "threads", "hq_snr", "n_examples", "reliance_threshold", "shuffled_models", "method",
                      "method_per_model")
# knobs read by one family of attribution methods only
SHAP_METHOD_KEYS = {
    "gradients": ("nsamples", "batch_size", "patch_px"),
    "occlusion": ("occlusion_map_window", "occlusion_map_stride_px", "occlusion_map_draws", "occlusion_map_fill"),
}
# what the SHAP table and figures read of `shap`
SHAP_TABLE_KEYS = ("hq_snr", "pointing_tolerance", "reliance_threshold")
SHAP_FIGURE_KEYS = ("hq_snr", "snr_bins", "n_examples")


def metrics_settings(config: dict) -> dict:
    """The metrics options that change a number (bootstrap, binning), without the run-only keys."""
    return {k: v for k, v in config["metrics"].items() if k not in METRICS_RUN_ONLY}


def test_set_params(config: dict, test_set: str) -> dict:
    """A test set's definition (its query included) and the options its metrics and figures read: editing a test
    set's query reruns that test set's jobs and nothing else."""
    return {"test_set": config["test_sets"][test_set], "seed": config["seed"], "metrics": metrics_settings(config)}


def model_section(config: dict, model: str) -> dict:
    """The config section of the model a training job fits: editing one model's section reruns only its jobs (a
    hybrid's: its architecture's section and the hybrid head's settings, with its control)."""
    hybrid = parse_hybrid(model, config)
    if hybrid:
        arch, control = hybrid
        head = {k: v for k, v in config["hybrid"].items() if k not in ("backbones", "controls")}
        return {"architecture": config["architectures"][arch], "hybrid": head, "control": control}
    return {**config["baselines"], **config["architectures"]}[model]


def photometry_measurement(config: dict) -> dict:
    """What the photometric features depend on: baselines.photometry's measurement keys (not the trees' grid)."""
    return {k: config["baselines"]["photometry"][k] for k in PHOTOMETRY_MEASUREMENT_KEYS}


def training_recipe(config: dict) -> dict:
    """What trained weights depend on in `training` (run-only keys, RUN_ONLY_TRAINING_KEYS, rerun nothing)."""
    return {k: v for k, v in config["training"].items() if k not in RUN_ONLY_TRAINING_KEYS}


def shap_settings(config: dict, model: str, dataset: str) -> dict:
    """What one explain job's numbers depend on: the shap settings, with this model's method and this dataset's
    sample size resolved, so that an override reruns only the jobs it concerns."""
    cfg = config["shap"]
    settings = {k: v for k, v in cfg.items() if k not in SHAP_RUN_ONLY_KEYS + ("n_explain", "n_explain_per_dataset")}
    settings["method"] = cfg["method_per_model"].get(model, cfg["method"])
    other = "gradients" if settings["method"] == "occlusion" else "occlusion"
    for key in SHAP_METHOD_KEYS[other]:
        settings.pop(key, None)  # the other method's knobs do not rerun this job
    settings["n_explain"] = cfg["n_explain_per_dataset"].get(dataset, cfg["n_explain"])
    settings["occlusion_variants"] = list(OCCLUSION_VARIANTS)  # a new control reruns
    return settings


def shap_table_params(config: dict) -> dict:
    """The SHAP table's trigger: the test sets' queries, the scoring options and the bootstrap."""
    return {
        "test_sets": config["test_sets"],
        "shap": {k: config["shap"][k] for k in SHAP_TABLE_KEYS},
        "bootstrap": [config["metrics"][k] for k in ("bootstrap_resamples", "ci_level")],
        "seed": config["seed"],
    }


def shap_figure_params(config: dict, test_set: str) -> dict:
    """The SHAP figures' trigger: the test set's query, the figure options, and the bootstrap of the accuracy
    intervals (resamples and seed: the figures read them, so they rerun the figures)."""
    return {"test_set": config["test_sets"][test_set], "shap": {k: config["shap"][k] for k in SHAP_FIGURE_KEYS},
            "bootstrap": [config["metrics"]["bootstrap_resamples"]], "seed": config["seed"]}
