"""Snakemake script: results/archive/deepred-results-<date>.tar.gz with a verified manifest."""

from deepred.logs import setup_logging, snakemake_log

log = setup_logging(snakemake_log(snakemake))  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.archive import build_archive, verify_archive  # noqa: E402

config = snakemake.config  # noqa: F821
root = Path(config["results_dir"])
files = [Path(p) for p in snakemake.input]  # noqa: F821
files += [p.with_suffix(".pdf") for p in files if p.suffix == ".png" and p.with_suffix(".pdf").exists()]
# Checksummed, not archived: the weights and catalogues the predictions came from.
inputs = sorted(root.glob("models/*/*/model.*")) + sorted(Path(config["data_dir"]).glob("processed/*/catalog.parquet"))
inputs += sorted(Path(config["data_dir"]).glob("processed/*/stats.json"))
build_archive(snakemake.output[0], files, root, config, inputs=inputs)  # noqa: F821
m = verify_archive(snakemake.output[0])  # noqa: F821
log.info("archive %s: %d files, %d inputs checksummed", snakemake.output[0], len(m["files"]), len(m["inputs"]))  # noqa: F821
