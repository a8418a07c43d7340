"""Snakemake script: fit HOG+SVR on one dataset and write its val/test predictions."""

from deepred.logs import setup_logging, snakemake_log

setup_logging(snakemake_log(snakemake))  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.hogsvr import run_hogsvr  # noqa: E402

run_hogsvr(
    snakemake.wildcards.dataset,  # noqa: F821
    snakemake.config,  # noqa: F821
    Path(snakemake.input.catalog).parent,  # noqa: F821
    Path(snakemake.output.model).parent,  # noqa: F821
    snakemake.output.predictions,  # noqa: F821
)
