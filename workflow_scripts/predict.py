"""Snakemake script: predictions of one trained network for the val and test rows of one dataset."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from deepred.predict.splits import predict_model  # noqa: E402

torch.set_num_threads(snakemake.threads)  # noqa: F821
predict_model(
    Path(snakemake.input.meta).parent,  # noqa: F821
    Path(snakemake.input.catalog).parent,  # noqa: F821
    snakemake.output.predictions,  # noqa: F821
)
