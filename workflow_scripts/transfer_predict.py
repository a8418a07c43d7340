"""Snakemake script: apply a network trained on one dataset to another dataset's test split."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from deepred.results.transfer import transfer_predict  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

torch.set_num_threads(snakemake.threads)  # noqa: F821
torch.manual_seed(config["seed"])  # noqa: F821
transfer_predict(
    Path(snakemake.input.meta).parent,  # noqa: F821
    Path(snakemake.input.catalog).parent,  # noqa: F821
    snakemake.output[0],  # noqa: F821
)
