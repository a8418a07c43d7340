"""Snakemake script: results/archive/deepred-results-<date>.tar.gz with a verified manifest."""

from deepred.core.logs import start_job

log = start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.results.archive import build_archive, verify_archive  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

inp = snakemake.input  # noqa: F821
# Archived: every input but the models and catalogues the results came from, which are only checksummed.
checksummed = set(inp.checksummed)
files = [Path(p) for p in inp if p not in checksummed]
build_archive(snakemake.output[0], files, snakemake.params.root, config,  # noqa: F821
              inputs=sorted(Path(p) for p in checksummed))
m = verify_archive(snakemake.output[0])  # noqa: F821
log.info("archive %s: %d files, %d inputs checksummed", snakemake.output[0], len(m["files"]), len(m["inputs"]))  # noqa: F821
