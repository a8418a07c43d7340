"""Snakemake script: every metric with bootstrap intervals for every model on one test set."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.results.tables import write_test_set_metrics  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

inp, out = snakemake.input, snakemake.output  # noqa: F821
preds = {k[len("pred_"):]: v for k, v in inp.items() if k.startswith("pred_")}
write_test_set_metrics(
    config,
    snakemake.wildcards.test_set,  # noqa: F821
    preds,
    Path(inp.catalog).parent,
    out.metrics,
    out.nmad,
    out.binned,
    out.calibration,
)
