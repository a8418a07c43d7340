"""Snakemake script: one model's test-set PDFs as a qp ensemble (rule pdfs_qp), or the test set's truth table for
RAIL's evaluators (rule pdfs_truth); deepred.qp_io."""

from deepred.logs import setup_logging, snakemake_log

log = setup_logging(snakemake_log(snakemake))  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.qp_io import write_test_set_pdfs, write_test_set_truth  # noqa: E402

inp, out, wc = snakemake.input, snakemake.output[0], snakemake.wildcards  # noqa: F821
processed_dir = Path(inp.catalog).parent
if "predictions" in inp.keys():
    n = write_test_set_pdfs(snakemake.config, wc.test_set, wc.model, inp.predictions, processed_dir, out)  # noqa: F821
    log.info("%s on test set %s: %d PDFs -> %s", wc.model, wc.test_set, n, out)
else:
    n = write_test_set_truth(snakemake.config, wc.test_set, processed_dir, out)  # noqa: F821
    log.info("test set %s: truth of %d objects -> %s", wc.test_set, n, out)
