"""Snakemake script: fetch and verify one file (rule download: pinned in the config, or in the source's lock,
recorded at first download), every file a manifest lists (rule download_manifest_files), an archive (rule
download_archive: Zenodo record JSON, published md5, SHA-256 into the lock), or a dataset's members of it
(rule extract_archive)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.fetch.dataset import ZENODO_API, extract_dataset, fetch_archive, fetch_locked  # noqa: E402
from deepred.fetch.download import DownloadSettings, FileSpec, fetch, fetch_manifest  # noqa: E402
from deepred.fetch.pins import Lock  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

smk = snakemake  # noqa: F821
config = job_config(smk.config, smk.rule)  # only the sections the rule reads
settings = DownloadSettings.from_config(config)  # not a param: editing retries/offline must not refetch
if smk.rule == "download":
    spec = FileSpec.from_config(smk.params.spec)
    if spec.pinned:
        fetch(spec, smk.output[0], settings)
    else:
        fetch_locked(spec, smk.output[0], settings, Lock(smk.params.lock))
elif smk.rule == "download_archive":
    api = (config.get("download") or {}).get("zenodo_api") or ZENODO_API
    fetch_archive(smk.params.archive, Path(smk.output[0]), settings, Lock(smk.params.lock), api)
elif smk.rule == "extract_archive":
    dataset = smk.wildcards.dataset
    extract_dataset(config, dataset, Path(smk.output[0]).parent, settings)
else:
    fetch_manifest(Path(smk.input.manifest), Path(smk.output[0]), settings)
