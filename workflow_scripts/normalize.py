"""Snakemake script: normalize one dataset's raw source into the data contract."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.data.normalize import normalize  # noqa: E402
from deepred.data.sources import open_source  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

dataset = snakemake.wildcards.dataset  # noqa: F821
normalize(
    open_source(config, dataset),
    dataset,
    snakemake.params.dataset_cfg,  # noqa: F821
    Path(snakemake.output.catalog).parent,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    config=config,
)
