"""What one config asks the DAG to build: its datasets, models and test sets, every target list and the input
functions' file lists, computed once per Snakemake process from the validated config (`Plan(config)`).

The rules name files through `plan.paths` (deepred.workflow.paths) and ask the plan for lists; nothing here reads
a data file, imports torch or depends on Snakemake.
"""

from __future__ import annotations

import datetime as _dt
import re

from deepred.contracts.model_json import (
    HOGSVR,
    HOGSVR_MODEL,
    MODEL_JSON,
    NEURAL,
    OOF_FILE,
    PHOTOMETRY,
    PHOTOMETRY_MODEL,
    WEIGHTS_FILE,
)
from deepred.core.model_names import (
    ENSEMBLE_METHODS,
    FEATURE_BASELINES,
    enabled_networks,
    ensemble_members,
    explained_models,
    hybrid_backbones,
    hybrid_control_models,
    hybrid_models,
    parse_hybrid,
    pdf_models,
    table_models,
    transfer_models,
)
from deepred.fetch.layout import ARCHIVE_DONE, FETCH_STAMP, MANIFEST_DONE, archive_id, archive_name
from deepred.workflow.paths import CUT_FILES, FIGURE_KINDS, SIMULATED_FILES, Layout

NEVER = "(?!)"  # a wildcard constraint that matches nothing (a rule with no job in this config)


def archive_date(config: dict) -> str:
    """The results archive's date: metrics.archive_date when set (a release date you choose), else today (UTC)."""
    return config.get("metrics", {}).get("archive_date") or _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def compatibility(config: dict, train: str, evaluate: str) -> str | None:
    """None when a model trained on `train` can run on `evaluate`, else the reason it cannot."""
    a, b = config["datasets"][train], config["datasets"][evaluate]
    missing = [x for x in a["bands"] if x not in b["bands"]]
    if missing:
        return f"{evaluate} lacks band(s) {','.join(missing)}"
    if b["cutout"] < a["cutout"]:
        return f"{evaluate} cutouts ({b['cutout']} px) are smaller than {train}'s ({a['cutout']} px)"
    if a.get("scaling", "asinh") != b.get("scaling", "asinh"):
        return f"pixel scaling differs ({a.get('scaling')} vs {b.get('scaling')})"
    return None


def transfer_pairs(config: dict) -> list[tuple[str, str, str]]:
    """(model, train dataset, eval dataset) for every off-diagonal compatible pair."""
    ds = list(config["datasets"])
    return [(m, a, b) for m in transfer_models(config) for a in ds for b in ds
            if a != b and compatibility(config, a, b) is None]


def nmad_table_names(config: dict) -> list[str]:
    return list(dict.fromkeys(ts["table"] for ts in config["test_sets"].values()))


STUDY_TABLES = ("summary", "improvement", "binned_z", "binned_snr", "pdf_calibration")  # across every test set


def table_names(config: dict) -> list[str]:
    return [f"{t}_nmad" for t in nmad_table_names(config)] + list(STUDY_TABLES)


def table_test_sets(config: dict, table: str) -> list[str]:
    """The test sets whose rows make up `{table}_nmad` (e.g. kids: kids_general and kids_hpl)."""
    return [ts for ts, spec in config["test_sets"].items() if spec["table"] == table]


def archive_sources(config: dict) -> dict[str, tuple[str, dict]]:
    """Archives (source.archive, e.g. DeepGraviLens' dataset.zip), each downloaded once into
    data/raw/_archives/{id}/ however many datasets extract from it: archive id -> (dataset, source) of the first
    such dataset, whose lock is the archive's."""
    out: dict[str, tuple[str, dict]] = {}
    for name, ds in config["datasets"].items():
        if ds["source"]["kind"] != "simulate" and ds["source"].get("archive"):
            out.setdefault(archive_id(ds["source"]["archive"]), (name, ds["source"]))
    return out


def choices(names) -> str:
    """A wildcard constraint matching exactly `names` (none: nothing)."""
    return "|".join(re.escape(n) for n in names) or NEVER


class Plan:
    """The config's datasets, models and test sets, and the file lists the rules ask for."""

    def __init__(self, config: dict):
        self.config = config
        self.paths = Layout(config)
        sources = {d: ds["source"] for d, ds in config["datasets"].items()}
        self.sources = sources
        self.datasets = list(config["datasets"])
        self.test_sets = list(config["test_sets"])
        self.nmad_tables = nmad_table_names(config)
        self.real = [d for d in self.datasets if sources[d]["kind"] != "simulate"]
        self.cutout_datasets = [d for d in self.datasets if sources[d]["kind"] == "cutouts"]
        self.networks = enabled_networks(config)  # trained by rules/train.smk
        self.hybrids = hybrid_models(config)
        self.hybrid_controls = hybrid_control_models(config)
        self.ensemble_members = ensemble_members(config)
        self.table_models = table_models(config)
        self.pdf_models = pdf_models(config)
        self.shap_models = explained_models(config)  # raises ConfigError on an unknown model
        self.shap_datasets = sorted({ts["dataset"] for ts in config["test_sets"].values()})
        self.shap_shuffled = list(config["shap"]["shuffled_models"])
        self.transfer_models = transfer_models(config)
        self.transfer_pairs = transfer_pairs(config)
        # archive id -> its file name (rules/download.smk: one download per archive, however many datasets read it)
        self.archives = {a: archive_name(src["archive"]) for a, (_, src) in archive_sources(config).items()}
        scale = config.get("scale_study") or {}
        self.scale_models = list(scale.get("models", []))
        self.scale_points = [(ds, m, int(n)) for ds in scale.get("datasets", []) for m in self.scale_models
                             for n in sorted(scale.get("train_systems", []))]

    def test_set_dataset(self, test_set: str) -> str:
        return self.config["test_sets"][test_set]["dataset"]

    # -- raw data ---------------------------------------------------------------------------------------------
    def raw_inputs(self, dataset: str) -> list[str]:
        """The raw files the normalize rule reads for one dataset, by its source kind."""
        kind = self.sources[dataset]["kind"]
        if kind == "simulate":
            return [self.paths.raw(dataset, n) for n in SIMULATED_FILES]
        if kind in ("deepgravilens", "kids", "sdss"):
            return self.real_raw_files(dataset)
        if kind == "cutouts":
            return [self.paths.raw(dataset, f"cutouts/{n}") for n in CUT_FILES]
        raise ValueError(f"dataset '{dataset}': no raw inputs known for source kind '{kind}'")

    def real_raw_files(self, dataset: str) -> list[str]:
        """A real dataset's listed files (+ its manifest and the stamp of its listed files); for a source with an
        archive, the stamp of its extracted members."""
        src = self.sources[dataset]
        if src.get("archive"):
            return [self.paths.raw(dataset, ARCHIVE_DONE)]
        names = [f["name"] for f in src.get("files", [])]
        if src.get("manifest"):
            names += [src["manifest"]["name"], MANIFEST_DONE]
        if src["kind"] == "cutouts":  # + the stamp of the survey images its targets need
            names.append(FETCH_STAMP)
        return [self.paths.raw(dataset, n) for n in names]

    def archive_file(self, dataset: str) -> str:
        arch = self.sources[dataset]["archive"]
        return self.paths.archive_download(archive_id(arch), archive_name(arch))

    def pinned_file_names(self) -> str:
        """The download rule's `file` constraint: every file a real source lists (archives' members excepted)."""
        names = {f["name"] for d in self.real if not self.sources[d].get("archive")
                 for f in self.sources[d].get("files", [])}
        names |= {self.sources[d]["manifest"]["name"] for d in self.real if self.sources[d].get("manifest")}
        return choices(sorted(names))

    def cutout_source_files(self, dataset: str) -> list[str]:
        """The pinned files of a cutouts source (target table, tile list)."""
        return [self.paths.raw(dataset, f["name"]) for f in self.sources[dataset].get("files", [])]

    # -- targets ----------------------------------------------------------------------------------------------
    def all_targets(self) -> list[str]:
        """The default target: every dataset, model, ensemble, table, figure, PDF and SHAP output."""
        p, cfg = self.paths, self.config
        targets = [p.processed(d) for d in self.datasets]
        for name in FEATURE_BASELINES:  # HOG+SVR and photometry (rules/baselines.smk)
            if cfg["baselines"][name]["enabled"]:
                targets += [p.predictions(name, d) for d in self.datasets]
        targets += [p.predictions(m, d) for m in self.networks for d in self.datasets]
        if self.ensemble_members:
            targets += [p.predictions(f"ensemble_{e}", d) for e in ENSEMBLE_METHODS for d in self.datasets]
        return targets + self.shap_targets() + self.pdf_targets() + self.metrics_targets() + self.hybrid_targets()

    def hybrid_targets(self) -> list[str]:
        """The hybrid controls table (none without controls, which the photometric baseline's absence leaves out)."""
        return [self.paths.table("hybrid_controls")] if self.hybrid_controls else []

    def features_inputs(self, model: str, dataset: str) -> dict[str, str]:
        """What a hybrid's training job reads beyond the images: the features file and, for a residual hybrid, the
        photometric baseline it corrects (model.json, its trees, the training rows' out-of-fold predictions)."""
        if parse_hybrid(model, self.config) is None:
            return {}
        out = {"features": self.paths.features(dataset)}
        if self.config["hybrid"]["fusion"] == "residual":
            phot = FEATURE_BASELINES[1]
            out.update(photometry_model=self.paths.model_file(MODEL_JSON, phot, dataset),
                       photometry_trees=self.paths.model_file(WEIGHTS_FILE[PHOTOMETRY], phot, dataset),
                       photometry_oof=self.paths.model_file(OOF_FILE, phot, dataset))
        return out

    def hybrid_controls_inputs(self) -> dict[str, str]:
        """pred__{model}__{test set} for photometry, every hybrid, its controls and its image-only backbone, and
        cat__{test set} (deepred.results.hybrid_controls)."""
        models = [FEATURE_BASELINES[1], *self.hybrids, *self.hybrid_controls, *hybrid_backbones(self.config)]
        out = {f"pred__{m}__{ts}": self.paths.predictions(m, self.test_set_dataset(ts)) for m in models
               for ts in self.test_sets}
        out.update({f"cat__{ts}": self.paths.processed(self.test_set_dataset(ts)) for ts in self.test_sets})
        return out

    def shap_targets(self) -> list[str]:
        """The SHAP table and every test set's figures (none when no model is explained)."""
        if not self.shap_models:
            return []
        return [self.paths.table("shap_localization")] + [self.paths.shap_figure("accuracy_vs_snr", ts)
                                                           for ts in self.test_sets]

    def shap_outputs(self) -> list[str]:
        """Every SHAP table and figure file (for the results archive)."""
        if not self.shap_models:
            return []
        return self.shap_targets() + [self.paths.shap_figure(f"examples_{m}", ts)
                                      for ts in self.test_sets for m in self.shap_models]

    def pdf_targets(self) -> list[str]:
        """Every PDF model's qp ensemble per test set, and each test set's truth table (none without PDF models)."""
        if not self.pdf_models:
            return []
        return ([self.paths.pdfs(m, ts) for m in self.pdf_models for ts in self.test_sets]
                + [self.paths.pdfs("truth", ts) for ts in self.test_sets])

    def table_files(self) -> dict[str, str]:
        return {n: self.paths.table(n) for n in table_names(self.config)}

    def study_table_files(self) -> dict[str, str]:
        """The tables built from every test set (rule tables); each `{table}_nmad` has its own job."""
        return {n: self.paths.table(n) for n in STUDY_TABLES}

    def nmad_table_inputs(self, table: str) -> list[str]:
        """Only the table's own test sets' NMAD files: asking for kids_nmad.csv builds only the KiDS jobs."""
        return [self.paths.metrics("nmad", ts) for ts in table_test_sets(self.config, table)]

    def figure_files(self) -> list[str]:
        out = [self.paths.figure("improvement")]
        out += [self.paths.figure(f"{kind}/{ts}") for kind in FIGURE_KINDS for ts in self.test_sets]
        return out + ([self.paths.figure("transfer_nmad")] if self.transfer_models else [])

    def metrics_targets(self) -> list[str]:
        """Every table and figure of the metrics stage (the archive is built on request)."""
        out = list(self.table_files().values()) + self.figure_files()
        return out + ([self.paths.table("transfer_nmad")] if self.transfer_models else [])

    def metric_files(self, kind: str) -> list[str]:
        return [self.paths.metrics(kind, ts) for ts in self.test_sets]

    # -- input functions --------------------------------------------------------------------------------------
    def test_set_inputs(self, test_set: str) -> dict[str, str]:
        """Every table model's prediction file for the test set's dataset (pred_<model>) and its catalogue."""
        ds = self.test_set_dataset(test_set)
        out = {f"pred_{m}": self.paths.predictions(m, ds) for m in self.table_models}
        out["catalog"] = self.paths.processed(ds)
        return out

    def transfer_inputs(self) -> dict[str, str]:
        """In-domain prediction files (diag__model__dataset) and transfer files (off__model__train__eval)."""
        out = {f"diag__{m}__{d}": self.paths.predictions(m, d) for m in self.transfer_models for d in self.datasets}
        out.update({f"off__{m}__{a}__{b}": self.paths.transfer(m, a, b) for m, a, b in self.transfer_pairs})
        return out

    def pdf_predictions(self, test_set: str) -> list[str]:
        return [self.paths.predictions(m, self.test_set_dataset(test_set)) for m in self.pdf_models]

    def archived_predictions(self) -> list[str]:
        return sorted({self.paths.predictions(m, self.test_set_dataset(ts)) for m in self.table_models
                       for ts in self.test_sets})

    def archive_checksummed(self) -> list[str]:
        """What the archived results came from, checksummed in its manifest but not archived: every table model's
        model.json (and weights), every normalized catalogue and its stats."""
        weights = {m: [WEIGHTS_FILE[NEURAL]] for m in self.networks}
        weights[HOGSVR_MODEL] = [WEIGHTS_FILE[HOGSVR]]
        weights[PHOTOMETRY_MODEL] = [WEIGHTS_FILE[PHOTOMETRY]]
        files = [self.paths.model_file(f, m, d) for m in self.table_models for d in self.datasets
                 for f in [MODEL_JSON] + weights.get(m, [])]
        return files + [self.paths.processed(d, f) for d in self.datasets for f in ("catalog.parquet", "stats.json")]

    def scale_point_files(self, name: str) -> list[str]:
        """One file of every scale-study point, in scale_points order (the table rule's params.points)."""
        return [self.paths.scale_point(name, ds, m, n) for ds, m, n in self.scale_points]
