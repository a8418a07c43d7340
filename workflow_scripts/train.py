"""Snakemake script: train one network (backbone, neural baseline, hybrid or control) on one dataset, then calibrate
its PDFs on the validation split and write its val/test predictions (deepred.predict.splits.calibrate_and_predict:
one pass over those rows, in this process)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.predict.splits import calibrate_and_predict  # noqa: E402
from deepred.training.train import train_model  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

processed_dir = Path(snakemake.input.catalog).parent  # noqa: F821
model_dir = Path(snakemake.output.weights).parent  # noqa: F821
# a residual hybrid's photometric baseline (PLAN.features_inputs), else None
photometry_model = dict(snakemake.input.items()).get("photometry_model")  # noqa: F821
photometry_dir = Path(photometry_model).parent if photometry_model else None
train_model(
    snakemake.wildcards.model,  # noqa: F821
    snakemake.wildcards.dataset,  # noqa: F821
    config,
    processed_dir,
    model_dir,
    threads=snakemake.threads,  # noqa: F821
    photometry_dir=photometry_dir,
)
calibrate_and_predict(model_dir, processed_dir, config, snakemake.output.predictions,  # noqa: F821
                      device=config["training"]["device"])
