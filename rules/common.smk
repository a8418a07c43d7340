# Config handling (validation first), the plan of what this config builds, wildcard constraints and the input
# functions that need Snakemake. Paths, target lists and rerun triggers live in deepred/workflow/ (torch-free).
import copy

from snakemake.logging import logger

from deepred.contracts.config import ConfigError, validate_config
from deepred.contracts.model_json import OOF_FILE
from deepred.contracts.processed import damaged_shards
from deepred.core.model_names import PHOTOMETRY_BASELINE
from deepred.fetch.layout import ARCHIVE_DONE, ARCHIVES_DIR, FETCH_STAMP, MANIFEST_DONE
from deepred.workflow.stages import rule_params
from deepred.workflow.plan import Plan, archive_date, choices
from deepred.workflow.paths import SHAP_FILES, SHAP_OCCLUSION_FILE
from deepred.workflow.scheduler import coalesce_reevaluation

# A --configfile given on the command line replaces config.yaml instead of being deep-merged into it
# (a merge would keep config.yaml's datasets and mix source keys); --config KEY=VALUE still applies.
if workflow.overwrite_configfiles:
    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))

if workflow.is_main_process:
    # one pending re-evaluation timer, not one more per scheduling pass (deepred/workflow/scheduler.py)
    coalesce_reevaluation()

try:
    validate_config(config)
    if workflow.is_main_process:
        # every network must build before Snakemake may delete an old model to retrain it (cached per config);
        # job steps skip it: their main process has checked the same config
        from deepred.models.preflight import check_networks
        from deepred.simulate.preflight import check_bands

        check_bands(config, cache_dir=".snakemake/deepred")
        check_networks(config, cache_dir=".snakemake/deepred")
    PLAN = Plan(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

if config["hybrid"]["backbones"] and not PLAN.hybrids and workflow.is_main_process:
    logger.warning(
        "hybrid.backbones is set but no hybrid is trained: residual hybrids correct the photometric baseline, "
        "which is disabled (enable baselines.photometry or set hybrid.fusion: concat)"
    )

P = PLAN.paths  # every file pattern: deepred/workflow/paths.py
DATASETS = PLAN.datasets
TEST_SETS = PLAN.test_sets
NEURAL_MODELS = PLAN.networks  # enabled backbones + enabled neural baselines
ENSEMBLE_MEMBERS = PLAN.ensemble_members
SHAP_MODELS = PLAN.shap_models
SHAP_SHUFFLED = PLAN.shap_shuffled
PDF_MODELS = PLAN.pdf_models
TRANSFER_MODELS = PLAN.transfer_models
ARCHIVES = PLAN.archives

SHAP_JOBS = [(m, d) for m in SHAP_MODELS for d in PLAN.shap_datasets]


wildcard_constraints:
    dataset="|".join(DATASETS),
    test_set="|".join(TEST_SETS),


def shards_of(wildcard="dataset"):
    """Input function: the dataset's shard folder, once every shard it records has its recorded size
    (a damaged shard stops the DAG, dry runs included, naming the file and the rebuild command).
    """

    def shards(wildcards):
        dataset = wildcards[wildcard]
        damaged = damaged_shards(P.processed(dataset, ""))
        if damaged:
            raise WorkflowError("\n".join(damaged))
        return P.processed(dataset, "shards")

    return shards


def raw_inputs(wildcards):
    """Raw files the normalize rule reads for one dataset, by its source kind."""
    try:
        return PLAN.raw_inputs(wildcards.dataset)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None


def test_set_dataset(wildcards):
    return PLAN.test_set_dataset(wildcards.test_set)


def shap_job_outputs(shuffled=False):
    """An explain job's files (deepred.workflow.paths.SHAP_FILES) and its occlusion control, by output name."""
    names = ("per_image", "attributions", "regions", "meta")
    files = dict(zip(names, SHAP_FILES))
    files["occlusion"] = SHAP_OCCLUSION_FILE
    return {k: P.shap_file(f, shuffled=shuffled) for k, f in files.items()}
