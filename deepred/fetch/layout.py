"""Where fetched files go and the stamps that say they are complete: the naming facts of real-data downloads.

Torch-free and import-free, so that the rules (through deepred.workflow), the fetchers, the lock files and the
cutout source all name the same files from one place.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST_DONE = ".manifest.verified"  # stamp beside a manifest once every file it lists is fetched and verified
ARCHIVE_DONE = ".archive.extracted.json"  # stamp in data/raw/{dataset}/ once its members are extracted and verified
ARCHIVES_DIR = "_archives"  # data/raw/_archives/{archive id}/{file}: archives shared by datasets (never a dataset name)
FETCH_STAMP = "images.fetched.json"  # stamp in data/raw/{dataset}/ once a cutouts source's survey images are fetched


def source_lock(src: dict, dataset: str) -> Path:
    """The lock file of a source: `source.lock`, else config/pins/<dataset>.lock.yaml (relative to the working
    directory, the repository root for Snakemake)."""
    return Path(src.get("lock") or f"config/pins/{dataset}.lock.yaml")


def archive_name(arch: dict) -> str:
    if arch.get("zenodo"):
        return str(arch["zenodo"]["file"])
    return str(arch.get("name") or arch["url"].split("?")[0].rstrip("/").rsplit("/", 1)[-1])


def archive_id(arch: dict) -> str:
    """The folder of an archive under data/raw/_archives/: zenodo-<record>, or url-<hash of the url>."""
    if arch.get("zenodo"):
        return f"zenodo-{int(arch['zenodo']['record'])}"
    return "url-" + hashlib.sha256(str(arch["url"]).encode()).hexdigest()[:12]


def archive_path(raw_root: str | Path, arch: dict) -> Path:
    """Where an archive is stored, given a dataset's raw folder (data/raw/{dataset})."""
    return Path(raw_root).parent / ARCHIVES_DIR / archive_id(arch) / archive_name(arch)
