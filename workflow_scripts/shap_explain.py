"""Snakemake script: SHAP attributions + localization scores of one trained network on its dataset."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.explain.attributions import explain_model  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

explain_model(
    Path(snakemake.input.meta).parent,  # noqa: F821
    Path(snakemake.input.catalog).parent,  # noqa: F821
    config,
    Path(snakemake.output.per_image).parent,  # noqa: F821
    model=snakemake.wildcards.model,  # noqa: F821
    dataset=snakemake.wildcards.dataset,  # noqa: F821
)
