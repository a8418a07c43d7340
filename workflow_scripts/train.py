"""Snakemake script: train one network (backbone or neural baseline) on one dataset, then calibrate its PDFs on
the validation split (deepred.predict.splits.calibrate_model)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.predict.splits import calibrate_model  # noqa: E402
from deepred.training.train import train_model  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

processed_dir = Path(snakemake.input.catalog).parent  # noqa: F821
model_dir = Path(snakemake.output.weights).parent  # noqa: F821
train_model(
    snakemake.wildcards.model,  # noqa: F821
    snakemake.wildcards.dataset,  # noqa: F821
    config,
    processed_dir,
    model_dir,
    threads=snakemake.threads,  # noqa: F821
)
calibrate_model(model_dir, processed_dir, config, device=config["training"]["device"])
