"""What each rule's job reads of the config, declared once (as rail_base stages declare their config_options).

A `Stage` names the top-level config sections its job's code is given, and says for each why a change to it
reruns the job or not:
- a trigger: a rule param built from the config (and the job's wildcards) that holds what the numbers depend on;
- via_inputs: the section reaches the job through its input files (a dataset section reruns normalize, whose new
  catalogue reruns training by its inputs), or selects which inputs it has;
- run_only: the section changes no number (threads, devices, download retries, folders).

Both sides come from here: `job_config` gives a job only the sections its stage reads (a read of anything else
is a KeyError in the tests, not a silent dependency), and `rule_params` builds the rule's params from the same
stage (rules/*.smk: `params: **rule_params(config, "train")`). tests/workflow/test_stages.py checks that every section a
stage reads is accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from deepred.core.schema import load_schema
from deepred.fetch.layout import source_lock
from deepred.workflow.plan import archive_sources
from deepred.workflow.triggers import (
    metrics_settings,
    model_section,
    photometry_measurement,
    shap_figure_params,
    shap_settings,
    shap_table_params,
    test_set_params,
    training_recipe,
)

SECTIONS = tuple(load_schema()["properties"])  # every top-level section the config schema allows
ALL = SECTIONS


@dataclass(frozen=True)
class Trigger:
    """A rule param: the config sections it is built from, and its builder(config, wildcards)."""

    sections: tuple[str, ...]
    build: Callable[[dict, Any], Any]


@dataclass(frozen=True)
class Stage:
    """A rule's job: the sections it reads, its triggers, and the sections that reach it otherwise."""

    reads: tuple[str, ...]
    triggers: dict[str, Trigger] = field(default_factory=dict)
    via_inputs: tuple[str, ...] = ()
    run_only: tuple[str, ...] = ()


def _section(name: str) -> Trigger:
    return Trigger((name,), lambda config, wc: config[name])


SEED = _section("seed")
CALIBRATION = _section("calibration")
MODEL_SECTION = Trigger(("architectures", "baselines", "hybrid"),
                        lambda config, wc: model_section(config, wc["model"]))
TRAINING = Trigger(("training",), lambda config, wc: training_recipe(config))
TEST_SET = Trigger(("test_sets", "seed", "metrics"), lambda config, wc: test_set_params(config, wc["test_set"]))
SHAP_SETTINGS = Trigger(("shap",), lambda config, wc: shap_settings(config, wc["model"], wc["dataset"]))
# which models a table holds (its input files): model_names.table_models reads all four (hybrid: the hybrids' names)
MODELS = ("architectures", "baselines", "ensemble", "hybrid")


def _dataset(key: str) -> Trigger:
    return Trigger(("datasets",), lambda config, wc: config["datasets"][wc["dataset"]][key])


def _source_keys(keys: tuple[str, ...]) -> Trigger:
    def build(config, wc):
        return {k: v for k, v in config["datasets"][wc["dataset"]]["source"].items() if k in keys}

    return Trigger(("datasets",), build)


def _download_spec(config: dict, wc) -> dict:
    src = config["datasets"][wc["dataset"]]["source"]
    specs = src.get("files", []) + ([src["manifest"]] if src.get("manifest") else [])
    return next(f for f in specs if f["name"] == wc["file"])


def _archive_lock(config: dict, archive: str) -> str:
    dataset, source = archive_sources(config)[archive]
    return str(source_lock(source, dataset))


ARCHIVE_IDENTITY = ("zenodo", "url", "name", "size", "sha256", "md5")  # what identifies the file, not the extraction


def _ensemble(key: str) -> Trigger:
    return Trigger(("ensemble",), lambda config, wc: config["ensemble"][key])


STAGES: dict[str, Stage] = {
    # data
    "simulate": Stage(("datasets", "seed"), {"source": _dataset("source"), "bands": _dataset("bands"),
                                             "cutout": _dataset("cutout"), "seed": SEED}),
    "normalize": Stage(("datasets", "seed", "data_dir", "download"),
                       {"dataset_cfg": Trigger(("datasets",), lambda config, wc: config["datasets"][wc["dataset"]]),
                        "seed": SEED},
                       run_only=("data_dir", "download")),
    # downloads: the file's identity reruns them; retries, timeouts and offline (`download`) do not
    "download": Stage(("datasets", "download"), {
        "spec": Trigger(("datasets",), _download_spec),
        "lock": Trigger(("datasets",), lambda config, wc: str(source_lock(config["datasets"][wc["dataset"]]["source"],
                                                                          wc["dataset"])))}, run_only=("download",)),
    "download_archive": Stage(("datasets", "download"), {
        "archive": Trigger(("datasets",), lambda config, wc: {
            k: v for k, v in archive_sources(config)[wc["archive"]][1]["archive"].items() if k in ARCHIVE_IDENTITY}),
        "lock": Trigger(("datasets",), lambda config, wc: _archive_lock(config, wc["archive"]))},
        run_only=("download",)),
    "extract_archive": Stage(("datasets", "download"), {"source": _source_keys(("archive", "files", "subset", "lock"))},
                             run_only=("download",)),
    "download_manifest_files": Stage(("datasets", "download"), via_inputs=("datasets",), run_only=("download",)),
    "cutout_images": Stage(("datasets", "download", "data_dir"), {"source": _dataset("source")},
                           run_only=("download", "data_dir")),
    "cutouts": Stage(("datasets", "download", "data_dir"), {"dataset_cfg": Trigger(
        ("datasets",), lambda config, wc: config["datasets"][wc["dataset"]])}, run_only=("download", "data_dir")),
    # models
    "train": Stage(("datasets", "architectures", "baselines", "hybrid", "training", "seed", "calibration"),
                   {"section": MODEL_SECTION, "training": TRAINING, "seed": SEED, "calibration": CALIBRATION},
                   via_inputs=("datasets",)),
    "hogsvr": Stage(("datasets", "baselines", "seed", "calibration"),
                    {"section": Trigger(("baselines",), lambda config, wc: config["baselines"]["hogsvr"]),
                     "seed": SEED, "calibration": CALIBRATION}, via_inputs=("datasets",)),
    "photometry_features": Stage(("baselines",), {"measurement": Trigger(
        ("baselines",), lambda config, wc: photometry_measurement(config))}),
    "photometry": Stage(("datasets", "baselines", "seed", "calibration"),
                        {"section": Trigger(("baselines",), lambda config, wc: config["baselines"]["photometry"]),
                         "seed": SEED, "calibration": CALIBRATION}, via_inputs=("datasets",)),
    "ensemble": Stage(("ensemble", "seed", "calibration"),
                      {**{k: _ensemble(k) for k in ("members", "positive", "convex", "cv_folds")},
                       "seed": SEED, "calibration": CALIBRATION}),
    "transfer_predict": Stage(("seed",), {"seed": SEED}),
    # results
    "metrics_test_set": Stage(("test_sets", "metrics", "seed", "datasets", *MODELS), {"depends_on": TEST_SET},
                              via_inputs=("datasets", *MODELS)),
    "figures_test_set": Stage(("test_sets", "metrics", "seed", "datasets", *MODELS), {"depends_on": TEST_SET},
                              via_inputs=("datasets", *MODELS)),
    # which benchmark files count: the config's datasets, test sets and enabled models (deepred.results.runtime)
    "runtime_table": Stage(("datasets", "test_sets", "architectures", "baselines", "hybrid", "data_dir", "results_dir"),
                           via_inputs=("datasets", "test_sets", "architectures", "baselines", "hybrid"),
                           run_only=("data_dir", "results_dir")),
    "nmad_table": Stage(("test_sets",), {"test_sets": Trigger(("test_sets",), lambda config, wc: {
        ts: spec for ts, spec in config["test_sets"].items() if spec["table"] == wc["table"]})}),
    "hybrid_controls": Stage(("test_sets", "metrics", "seed", "datasets", *MODELS),
                             {"depends_on": Trigger(("test_sets", "metrics", "seed"), lambda config, wc: {
                                 "test_sets": config["test_sets"], "seed": config["seed"],
                                 "metrics": metrics_settings(config)})},
                             via_inputs=("datasets", *MODELS)),
    "tables": Stage(("test_sets", "metrics"), {
        "test_sets": _section("test_sets"),
        "paper_R": Trigger(("metrics",), lambda config, wc: config["metrics"]["paper_R"])}),
    "transfer_table": Stage(("datasets", "metrics", *MODELS), via_inputs=("datasets", "metrics", *MODELS)),
    "pdfs_qp": Stage(("test_sets", "datasets"), {"test_set": Trigger(("test_sets",), lambda config, wc:
                                                                     config["test_sets"][wc["test_set"]])},
                     via_inputs=("datasets",)),
    "archive": Stage(ALL, via_inputs=ALL),  # the archive's record of the config; its inputs are the study's outputs
    # SHAP
    "shap_explain": Stage(("shap", "seed", "training"), {"settings": SHAP_SETTINGS, "seed": SEED},
                          run_only=("training",)),  # the training config's memory format and device: speed only
    "shap_shuffled": Stage(("datasets", "architectures", "baselines", "hybrid", "training", "shap", "seed"),
                           {"section": MODEL_SECTION, "training": TRAINING, "settings": SHAP_SETTINGS, "seed": SEED},
                           via_inputs=("datasets",)),
    "shap_table": Stage(("test_sets", "shap", "metrics", "seed"), {"depends_on": Trigger(
        ("test_sets", "shap", "metrics", "seed"), lambda config, wc: shap_table_params(config))}),
    "shap_figures": Stage(("test_sets", "shap", "metrics", "seed"), {"depends_on": Trigger(
        ("test_sets", "shap", "metrics", "seed"), lambda config, wc: shap_figure_params(config, wc["test_set"]))}),
    # the scale study
    # a point's size is its wildcard; its seed also reruns its points, which are the table's inputs
    "scale_point": Stage(("datasets", "architectures", "baselines", "hybrid", "training", "seed", "scale_study"),
                         {"section": MODEL_SECTION, "training": TRAINING, "seed": SEED},
                         via_inputs=("datasets", "scale_study")),
    "scale_study": Stage(("metrics", "seed", "scale_study"), {"metrics": Trigger(
        ("metrics",), lambda config, wc: metrics_settings(config))}, via_inputs=("seed", "scale_study")),
}


def job_config(config: dict, rule: str) -> dict:
    """The config a job of `rule` is given: the sections its stage reads, and nothing else."""
    return {k: config[k] for k in STAGES[rule].reads if k in config}


def rule_params(config: dict, rule: str) -> dict[str, Callable]:
    """The rule's params (Snakemake input functions of the wildcards), in declaration order."""
    return {name: (lambda wc, t=trigger: t.build(config, wc)) for name, trigger in STAGES[rule].triggers.items()}


def unaccounted(stage: Stage) -> set[str]:
    """Sections a stage reads that no trigger, input or run-only entry accounts for (empty when complete)."""
    covered = {s for t in stage.triggers.values() for s in t.sections}
    return set(stage.reads) - covered - set(stage.via_inputs) - set(stage.run_only)
