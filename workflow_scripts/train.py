"""Snakemake script: train one network (backbone or neural baseline) on one dataset."""

from deepred.logs import setup_logging, snakemake_log

setup_logging(snakemake_log(snakemake))  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.train import train_model  # noqa: E402

train_model(
    snakemake.wildcards.model,  # noqa: F821
    snakemake.wildcards.dataset,  # noqa: F821
    snakemake.config,  # noqa: F821
    Path(snakemake.input.catalog).parent,  # noqa: F821
    Path(snakemake.output.weights).parent,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
