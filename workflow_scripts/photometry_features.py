"""Snakemake script: the photometric features of one processed dataset (deepred.features.table), read by the
photometric baseline and the hybrids."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.features.table import write_features  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)
write_features(Path(snakemake.input.catalog).parent, config["baselines"]["photometry"],  # noqa: F821
               snakemake.output.features, config)  # noqa: F821
