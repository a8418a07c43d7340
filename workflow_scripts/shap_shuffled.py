"""Snakemake script: the shuffled-label control of one network on one dataset (train on permuted labels, then
explain it like the real network)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.explain.shuffled import shuffled_control  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

shuffled_control(
    snakemake.wildcards.model,  # noqa: F821
    snakemake.wildcards.dataset,  # noqa: F821
    config,
    Path(snakemake.input.catalog).parent,  # noqa: F821
    Path(snakemake.output.per_image).parent,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
