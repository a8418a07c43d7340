"""Snakemake script: one test set's SHAP figures (example grids per model, accuracy vs S/N)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from deepred.results.shap_figures import shap_figures  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

shap_figures(
    config,
    snakemake.wildcards.test_set,  # noqa: F821
    snakemake.params.shap_dirs,  # noqa: F821
    snakemake.params.processed,  # noqa: F821
    snakemake.params.example_pngs,  # noqa: F821
    snakemake.output.snr,  # noqa: F821
)
