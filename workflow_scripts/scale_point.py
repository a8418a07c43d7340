"""Snakemake script: one point of the scale study, a model trained on a nested subset of a dataset's training
systems, and its test-split predictions (deepred.results.scale_study.fit_point)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.results.scale_study import fit_point  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

wc = snakemake.wildcards  # noqa: F821
fit_point(wc.model, wc.dataset, int(wc.n), config, Path(snakemake.input.catalog).parent,  # noqa: F821
          Path(snakemake.output.meta).parent, snakemake.output.predictions, threads=snakemake.threads)  # noqa: F821
