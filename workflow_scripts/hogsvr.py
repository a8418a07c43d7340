"""Snakemake script: fit HOG+SVR on one dataset, calibrate its PDFs on the validation split, then write its
val/test predictions like any model's."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.baselines.hogsvr import train_hogsvr  # noqa: E402
from deepred.predict.splits import calibrate_and_predict  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

processed_dir = Path(snakemake.input.catalog).parent  # noqa: F821
model_dir = Path(snakemake.output.model).parent  # noqa: F821
train_hogsvr(snakemake.wildcards.dataset, config, processed_dir, model_dir)  # noqa: F821
calibrate_and_predict(model_dir, processed_dir, config, snakemake.output.predictions)  # noqa: F821
