# Shared helpers: config validation (first thing), wildcard constraints, path helpers.
import copy
import re
import sys
from pathlib import Path

# the deepred package of this checkout, even without install
sys.path.insert(0, workflow.basedir)

from deepred.catalog import (
    ENSEMBLE_METHODS,
    FEATURE_BASELINES,
    OCCLUSION_VARIANTS,
    PHOTOMETRY_BASELINE,
    RUN_ONLY_TRAINING_KEYS,
    enabled_networks,
    ensemble_members,
    explained_models,
    pdf_models,
)
from deepred.config import ConfigError, validate_config
from deepred.data.contract import damaged_shards

# A --configfile given on the command line replaces config.yaml instead of being deep-merged into it
# (a merge would keep config.yaml's datasets and mix source keys); --config KEY=VALUE still applies.
if workflow.overwrite_configfiles:
    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))

try:
    validate_config(config)
    if workflow.is_main_process:
        # every network must build before Snakemake may delete an old model to retrain it (cached per config);
        # job steps skip it: their main process has checked the same config
        from deepred.models.preflight import check_networks

        check_networks(config, cache_dir=".snakemake/deepred")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

DATA = config["data_dir"]
RESULTS = config["results_dir"]
DATASETS = list(config["datasets"])
SIMULATED = [
    d for d in DATASETS if config["datasets"][d]["source"]["kind"] == "simulate"
]
TEST_SETS = list(config["test_sets"])
# Networks trained by rules/train.smk: enabled backbones + enabled neural baselines (deepred.catalog).
NEURAL_MODELS = enabled_networks(config)
ENSEMBLE_MEMBERS = ensemble_members(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    test_set="|".join(TEST_SETS),


def test_set_params(wildcards):
    """The test set's definition (its query included) and the options its metrics and figures read: the
    `params` rerun trigger, so editing a test set's query reruns that test set's jobs and nothing else.
    """
    return {
        "test_set": config["test_sets"][wildcards.test_set],
        "seed": config["seed"],
        "metrics": {
            k: v for k, v in config["metrics"].items() if k not in METRICS_RUN_ONLY
        },
    }


# metrics keys that select jobs or name files, and change no number of a per-test-set file
METRICS_RUN_ONLY = ("transfer_models", "paper_R", "archive_date")


def model_config_section(wildcards):
    """The config section of the model a training job fits (the train and scale_point rules): their `params` rerun
    trigger, so editing one model's section reruns only that model's jobs."""
    return {**config["baselines"], **config["architectures"]}[wildcards.model]


# What trained weights depend on in `training` (run-only keys, deepred.catalog.RUN_ONLY_TRAINING_KEYS, rerun nothing).
TRAINING_RECIPE = {
    k: v for k, v in config["training"].items() if k not in RUN_ONLY_TRAINING_KEYS
}


def processed(dataset, name="catalog.parquet"):
    return f"{DATA}/processed/{dataset}/{name}"


def shards_of(wildcard="dataset"):
    """Input function: the dataset's shard folder, once every shard it records has its recorded size
    (a damaged shard stops the DAG, dry runs included, naming the file and the rebuild command).
    """

    def shards(wildcards):
        dataset = wildcards[wildcard]
        damaged = damaged_shards(processed(dataset, ""))
        if damaged:
            raise WorkflowError("\n".join(damaged))
        return processed(dataset, "shards")

    return shards


def raw_inputs(wildcards):
    """Raw files the normalize rule reads for one dataset, by its source kind."""
    kind = config["datasets"][wildcards.dataset]["source"]["kind"]
    if kind == "simulate":
        return expand(
            "{data}/raw/{dataset}/{name}",
            data=DATA,
            dataset=wildcards.dataset,
            name=["images.npy", "masks.npy", "truth.parquet", "meta.json"],
        )
    # real surveys: the pinned files (rules/download.smk)
    if kind in ("deepgravilens", "kids", "sdss"):
        return real_raw_files(wildcards.dataset)
    # catalogue-driven cutouts (deepred/cutouts; rules cutout_images and cutouts in rules/download.smk)
    if kind == "cutouts":
        return cutout_files(wildcards.dataset)
    raise WorkflowError(
        f"dataset '{wildcards.dataset}': no raw inputs known for source kind '{kind}'"
    )


# Real survey sources (rules/download.smk): their pinned files.
REAL = [d for d in DATASETS if config["datasets"][d]["source"]["kind"] != "simulate"]
# stamps: every file a manifest lists is verified; a dataset's archive members are extracted and verified
from deepred.dataset_fetch import (
    ARCHIVE_DONE,
    ARCHIVES_DIR,
    archive_id,
    archive_name,
    source_lock,
)
from deepred.download import MANIFEST_DONE

# Archives (source.archive, e.g. DeepGraviLens' dataset.zip): downloaded once into data/raw/_archives/{id}/,
# however many datasets extract from them; the lock is the first such dataset's (config/paper.yaml: one lock).
ARCHIVE_DATASETS = [d for d in REAL if config["datasets"][d]["source"].get("archive")]
ARCHIVES = {}
for _d in ARCHIVE_DATASETS:
    _src = config["datasets"][_d]["source"]
    ARCHIVES.setdefault(
        archive_id(_src["archive"]),
        {
            "archive": _src["archive"],
            "file": archive_name(_src["archive"]),
            "lock": str(source_lock(_src, _d)),
        },
    )


def archive_file(dataset):
    arch = config["datasets"][dataset]["source"]["archive"]
    return f"{DATA}/raw/{ARCHIVES_DIR}/{archive_id(arch)}/{archive_name(arch)}"


def real_raw_files(dataset):
    """The files listed in a real dataset's source (+ its manifest and the stamp of its listed files);
    for a source with an archive, the stamp of its extracted members."""
    src = config["datasets"][dataset]["source"]
    if src.get("archive"):
        return [f"{DATA}/raw/{dataset}/{ARCHIVE_DONE}"]
    names = [f["name"] for f in src.get("files", [])]
    if src.get("manifest"):
        names += [src["manifest"]["name"], MANIFEST_DONE]
    if src["kind"] == "cutouts":  # + the stamp of the survey images its targets need
        names.append(CUTOUT_STAMP)
    return [f"{DATA}/raw/{dataset}/{n}" for n in names]


def pinned_file_names():
    names = {
        f["name"]
        for d in REAL
        if not config["datasets"][d]["source"].get(
            "archive"
        )  # extracted, not downloaded
        for f in config["datasets"][d]["source"].get("files", [])
    }
    names |= {
        config["datasets"][d]["source"]["manifest"]["name"]
        for d in REAL
        if config["datasets"][d]["source"].get("manifest")
    }
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def download_spec(wildcards):
    src = config["datasets"][wildcards.dataset]["source"]
    specs = src.get("files", []) + ([src["manifest"]] if src.get("manifest") else [])
    return next(f for f in specs if f["name"] == wildcards.file)


def all_targets():
    targets = [processed(d) for d in DATASETS]
    for name in FEATURE_BASELINES:  # HOG+SVR and photometry (rules/baselines.smk)
        if config["baselines"][name]["enabled"]:
            targets += expand(
                f"{RESULTS}/predictions/{name}/{{dataset}}.parquet", dataset=DATASETS
            )
    # networks and ensembles (rules/train.smk)
    targets += expand(
        f"{RESULTS}/predictions/{{model}}/{{dataset}}.parquet",
        model=NEURAL_MODELS,
        dataset=DATASETS,
    )
    if ENSEMBLE_MEMBERS:
        targets += expand(
            f"{RESULTS}/predictions/ensemble_{{method}}/{{dataset}}.parquet",
            method=ENSEMBLE_METHODS,
            dataset=DATASETS,
        )
    targets += shap_targets()  # SHAP localization table and figures (rules/shap.smk)
    targets += pdf_targets()  # test-set PDFs as qp ensembles (rules/pdfs.smk)
    # tables and figures (rules/metrics.smk)
    targets += metrics_targets(config, bool(TRANSFER_MODELS))
    return targets


# SHAP localization (rules/shap.smk): the networks explained and the paths of their outputs.
try:
    SHAP_MODELS = explained_models(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
SHAP_DATASETS = sorted({ts["dataset"] for ts in config["test_sets"].values()})
SHAP_FILES = ["per_image.parquet", "attributions.npy", "regions.npy", "explain.json"]


def shap_dir(model, dataset):
    return f"{RESULTS}/shap/{model}/{dataset}"


# networks that also get a shuffled-label control (rule shap_shuffled)
SHAP_SHUFFLED = list(config["shap"]["shuffled_models"])
# keys that select jobs or are read by the table and figures only: no rerun of an explain job
SHAP_RUN_ONLY_KEYS = (
    "models",
    "threads",
    "hq_snr",
    "n_examples",
    "reliance_threshold",
    "shuffled_models",
    "method",
    "method_per_model",
)

# knobs read by one family of attribution methods only
SHAP_METHOD_KEYS = {
    "gradients": ("nsamples", "batch_size", "patch_px"),
    "occlusion": (
        "occlusion_map_window",
        "occlusion_map_stride_px",
        "occlusion_map_draws",
        "occlusion_map_fill",
    ),
}


def shap_settings(wildcards):
    """What one explain job's numbers depend on (the rerun trigger): the shap settings, with this model's method
    and this dataset's sample size resolved, so that an override reruns only the jobs it concerns.
    """
    cfg = config["shap"]
    settings = {
        k: v
        for k, v in cfg.items()
        if k not in SHAP_RUN_ONLY_KEYS + ("n_explain", "n_explain_per_dataset")
    }
    settings["method"] = cfg["method_per_model"].get(wildcards.model, cfg["method"])
    other = "gradients" if settings["method"] == "occlusion" else "occlusion"
    for key in SHAP_METHOD_KEYS[other]:
        settings.pop(key, None)  # the other method's knobs do not rerun this job
    settings["n_explain"] = cfg["n_explain_per_dataset"].get(
        wildcards.dataset, cfg["n_explain"]
    )
    settings["occlusion_variants"] = list(OCCLUSION_VARIANTS)  # a new control reruns
    return settings


def shap_targets():
    """The table and every test set's figures (empty when no model is explained)."""
    if not SHAP_MODELS:
        return []
    return [f"{RESULTS}/tables/shap_localization.csv"] + [
        f"{RESULTS}/figures/shap/{ts}/accuracy_vs_snr.png" for ts in TEST_SETS
    ]


def shap_outputs():
    """Every SHAP table and figure file (for the results archive)."""
    if not SHAP_MODELS:
        return []
    return shap_targets() + [
        f"{RESULTS}/figures/shap/{ts}/examples_{m}.png"
        for ts in TEST_SETS
        for m in SHAP_MODELS
    ]


# Test-set PDFs as qp ensembles (rules/pdfs.smk): every model whose predictions carry PDFs (deepred.catalog).
PDF_MODELS = pdf_models(config)


def test_set_dataset(wildcards):
    return config["test_sets"][wildcards.test_set]["dataset"]


def pdf_targets():
    """Every model's ensemble per test set, and each test set's truth table (none without PDF models)."""
    if not PDF_MODELS:
        return []
    return expand(
        f"{RESULTS}/pdfs/{{model}}/{{ts}}.hdf5", model=PDF_MODELS, ts=TEST_SETS
    ) + expand(f"{RESULTS}/pdfs/truth/{{ts}}.hdf5", ts=TEST_SETS)


# Catalogue-driven cutouts (source kind `cutouts`, deepred/cutouts): images fetched into data/raw/{dataset}/images/
# (stamp images.fetched.json, a local rule: the network), then cut into data/raw/{dataset}/cutouts/.
from deepred.cutouts.source import FETCH_STAMP as CUTOUT_STAMP

CUTOUT_DATASETS = [
    d for d in DATASETS if config["datasets"][d]["source"]["kind"] == "cutouts"
]


def cutout_files(dataset):
    """The cut folder's files (normalize's inputs for a `cutouts` source)."""
    return [
        f"{DATA}/raw/{dataset}/cutouts/{n}"
        for n in ("truth.parquet", "rejects.parquet", "meta.json")
    ]


def cutout_source_files(wildcards):
    """The pinned files of a cutouts source (target table, tile list)."""
    src = config["datasets"][wildcards.dataset]["source"]
    return [f"{DATA}/raw/{wildcards.dataset}/{f['name']}" for f in src.get("files", [])]


# The results archive (rules/metrics.smk): what it checksums without archiving.
from deepred.model_json import (
    HOGSVR,
    HOGSVR_MODEL,
    MODEL_JSON,
    NEURAL,
    PHOTOMETRY,
    PHOTOMETRY_MODEL,
    WEIGHTS_FILE,
)


def archive_checksummed():
    """What the archived results came from, checksummed in its manifest but not archived: every table
    model's model.json (and weights), every normalized catalogue and its stats."""
    weights = {m: [WEIGHTS_FILE[NEURAL]] for m in NEURAL_MODELS}
    weights[HOGSVR_MODEL] = [WEIGHTS_FILE[HOGSVR]]
    weights[PHOTOMETRY_MODEL] = [WEIGHTS_FILE[PHOTOMETRY]]
    files = []
    for m in TABLE_MODELS:
        for d in DATASETS:
            files += [
                f"{RESULTS}/models/{m}/{d}/{f}"
                for f in [MODEL_JSON] + weights.get(m, [])
            ]
    return files + [
        processed(d, f) for d in DATASETS for f in ("catalog.parquet", "stats.json")
    ]


# The scale study (rules/scale_study.smk; only config/scale_study.yaml sets `scale_study`): one point per
# (dataset, model, training systems), each in its own folder.
SCALE = config.get("scale_study") or {}
SCALE_POINTS = [
    (ds, model, int(n))
    for ds in SCALE.get("datasets", [])
    for model in SCALE.get("models", [])
    for n in sorted(SCALE.get("train_systems", []))
]
SCALE_DIR = f"{RESULTS}/scale_study/{{dataset}}/{{model}}/n{{n}}"
SCALE_FILE = f"{SCALE_DIR}/{{name}}"


def scale_point_files(name):
    """One file of every scale-study point, in SCALE_POINTS order (the table rule's params.points)."""
    return [
        SCALE_FILE.format(dataset=ds, model=m, n=n, name=name)
        for ds, m, n in SCALE_POINTS
    ]
