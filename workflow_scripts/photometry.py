"""Snakemake script: fit the photometric baseline on one dataset, calibrate its PDFs on the validation split, then
write its val/test predictions like any model's."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.baselines.photometry import train_photometry  # noqa: E402
from deepred.predict.splits import calibrate_and_predict  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

processed_dir = Path(snakemake.input.catalog).parent  # noqa: F821
model_dir = Path(snakemake.output.model).parent  # noqa: F821
train_photometry(snakemake.wildcards.dataset, config, processed_dir, model_dir)  # noqa: F821
calibrate_and_predict(model_dir, processed_dir, config, snakemake.output.predictions)  # noqa: F821
