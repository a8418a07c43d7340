"""Snakemake script: stack the per-test-set metrics into the study's tables."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from deepred.core.io import write_json  # noqa: E402
from deepred.core.provenance import provenance  # noqa: E402
from deepred.results.tables import METRIC_KINDS, build_tables  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

inp, out = snakemake.input, snakemake.output  # noqa: F821
# each input list is in test-set order (rules/metrics.smk expands it over params.test_sets)
files = {kind: dict(zip(snakemake.params.test_sets, inp[kind])) for kind in METRIC_KINDS}  # noqa: F821
build_tables(config, files, {name: path for name, path in out.items() if name != "provenance"})
write_json(out.provenance, provenance(config, list(inp)))
