"""Snakemake script: stack the per-test-set metrics into the study's tables."""

from deepred.logs import setup_logging, snakemake_log

setup_logging(snakemake_log(snakemake))  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.io import write_json  # noqa: E402
from deepred.provenance import provenance  # noqa: E402
from deepred.tables import build_tables  # noqa: E402

config = snakemake.config  # noqa: F821
out = snakemake.output  # noqa: F821
first = Path(out[0])
metrics_dir = Path(snakemake.input[0]).parent.parent  # noqa: F821
written = build_tables(config, metrics_dir, first.parent)
expected = {Path(p).resolve() for k, p in out.items() if k != "provenance"}
assert {p.resolve() for p in written.values()} == expected, (written, expected)
write_json(out.provenance, provenance(config, list(snakemake.input)))  # noqa: F821
