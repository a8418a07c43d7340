"""Snakemake script (rule pdfs_qp): one test set's PDFs of every PDF model as qp ensembles, and its truth table
for RAIL's evaluators; deepred.pdfs.qp_io."""

from deepred.core.logs import start_job

log = start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.pdfs.qp_io import write_test_set_files  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

inp, out, params, wc = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards  # noqa: F821
models = {m: (pred, pdfs) for m, pred, pdfs in zip(params.models, inp.predictions, out.pdfs)}
counts = write_test_set_files(config, wc.test_set, models, Path(inp.catalog).parent, out.truth)  # noqa: F821
for model, n in counts.items():
    log.info("%s on test set %s: %d PDFs", model, wc.test_set, n)
log.info("test set %s: truth table -> %s", wc.test_set, out.truth)
