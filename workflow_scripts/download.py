"""Snakemake script: fetch and verify one pinned file (rule download), or every file a manifest lists
(rule download_manifest_files)."""

from deepred.logs import setup_logging, snakemake_log

setup_logging(snakemake_log(snakemake))  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.download import DownloadSettings, FileSpec, fetch, fetch_manifest  # noqa: E402

settings = DownloadSettings.from_config({"download": snakemake.params.settings})  # noqa: F821
if snakemake.rule == "download":  # noqa: F821
    fetch(FileSpec.from_config(snakemake.params.spec), snakemake.output[0], settings)  # noqa: F821
else:
    fetch_manifest(Path(snakemake.input.manifest), Path(snakemake.output[0]), settings)  # noqa: F821
