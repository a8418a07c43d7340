"""Snakemake script: results/tables/shap_localization.csv from every explain job's per-image scores."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from deepred.results.shap_table import write_localization_table  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

write_localization_table(
    config,
    snakemake.params.per_image,  # noqa: F821
    snakemake.params.processed,  # noqa: F821
    snakemake.output.table,  # noqa: F821
    snakemake.output.provenance,  # noqa: F821
)
