"""A real dataset's files, fetched and verified: from an archive (a Zenodo record's zip, downloaded once and
its members extracted) or one download per file, each pinned in the config or in the source's lock
(config/pins/<dataset>.lock.yaml; SHA-256 recorded at first download where the archive publishes none).

The transfer itself (stream, resume, retry, check, rename) is deepred.fetch.download.fetch; the lock is
deepred.fetch.pins.Lock; the zip members are deepred.fetch.archive_zip.
"""

from __future__ import annotations

import logging
from pathlib import Path

from deepred.core.io import write_json
from deepred.fetch.archive_zip import extract_members
from deepred.fetch.download import (
    ChecksumError,
    DownloadError,
    DownloadSettings,
    FileSpec,
    fetch,
    fetch_manifest,
    get_json,
)
from deepred.fetch.layout import ARCHIVE_DONE, MANIFEST_DONE, archive_name, archive_path, source_lock
from deepred.fetch.pins import Lock

log = logging.getLogger("deepred.fetch.download")

ZENODO_API = "https://zenodo.org/api"  # Zenodo's REST API (developers.zenodo.org); download.zenodo_api overrides it


def zenodo_record(record: int, settings: DownloadSettings, api: str = ZENODO_API) -> dict:
    """The record's JSON from Zenodo's REST API: GET {api}/records/{record} (e.g.
    https://zenodo.org/api/records/7860294)."""
    url = f"{api.rstrip('/')}/records/{int(record)}"
    meta = get_json(url, settings)
    if not isinstance(meta, dict):
        raise DownloadError(f"{url}: expected a record object, got {type(meta).__name__}")
    return meta


def zenodo_file(meta: dict, key: str, origin: str) -> dict:
    """{url, size, md5} of one file of a Zenodo record JSON.

    Field names as Zenodo's REST API returns a record (InvenioRDM-based Zenodo, since 2023): `files` is a list of
    {key, size, checksum: "md5:<hex>", links: {self: ".../api/records/<id>/files/<key>/content"}}. Also read:
    the files endpoint's {"entries": [...]} with links.content, and the legacy filename/filesize/links.download."""
    files = meta.get("files")
    if isinstance(files, dict):
        files = files.get("entries")
        if isinstance(files, dict):  # InvenioRDM record JSON: files.entries is a key -> entry map
            files = [{"key": k, **v} for k, v in files.items()]
    if not isinstance(files, list):
        raise DownloadError(f"{origin}: the record lists no files (is it restricted, or the wrong record id?)")
    for f in files:
        if (f.get("key") or f.get("filename")) != key:
            continue
        links = f.get("links") or {}
        url = links.get("self") or links.get("content") or links.get("download")
        if not url:
            raise DownloadError(f"{origin}: file '{key}' has no download link (links.self)")
        checksum = str(f.get("checksum") or "")
        algo, _, value = checksum.partition(":")
        md5 = value.lower() if algo.lower() == "md5" and len(value) == 32 else None
        size = f.get("size", f.get("filesize"))
        return {"url": url, "size": None if size is None else int(size), "md5": md5}
    keys = ", ".join(str(f.get("key") or f.get("filename")) for f in files)
    raise DownloadError(f"{origin}: no file '{key}' in the record (it holds: {keys})")


def fetch_locked(spec: FileSpec, dest: str | Path, settings: DownloadSettings, lock, *,
                 published: dict | None = None, source: str | None = None) -> Path:
    """Fetch a file whose pin lives in a lock (deepred.fetch.pins.Lock): verify against the lock's entry, or, with
    none yet, download it (checking `published` sums / the spec's md5 when there are any) and record its
    SHA-256 in the lock. With an entry present and the file in place, nothing touches the network."""
    dest = Path(dest)
    entry = lock.get(spec.name)
    if entry is not None and entry.get("sha256"):
        if spec.sha256 and spec.sha256 != str(entry["sha256"]).lower():
            raise ChecksumError(f"{spec.name}: the config pins sha256 {spec.sha256}, {lock.path} pins {entry['sha256']}")
        pinned = FileSpec(name=spec.name, url=spec.url or entry.get("url"), size=entry.get("size"), sha256=entry["sha256"])
        try:
            return fetch(pinned, dest, settings)
        except ChecksumError as exc:
            raise ChecksumError(f"{exc}; '{spec.name}' is pinned by {lock.path}") from None
    published = {k: v for k, v in {"size": spec.size, "md5": spec.md5, **(published or {})}.items() if v is not None}
    if entry is not None:  # pending entry (pins update): its published sums
        published = {**{k: entry[k] for k in ("size", "md5") if entry.get(k) is not None}, **published}
    url = spec.url or (entry or {}).get("url")
    stream = FileSpec(name=spec.name, url=url, size=published.get("size"), md5=published.get("md5"), sha256=spec.sha256)
    fetch(stream, dest, settings, allow_unpinned=True)
    lock.verify_or_record(spec.name, dest, url=url, published=published, source=source)
    return dest


def fetch_archive(arch: dict, dest: str | Path, settings: DownloadSettings, lock, api: str = ZENODO_API) -> Path:
    """Download (or find in place) an archive named by `source.archive`, verified and locked.

    Locked: verified against the lock, no request at all when it is in place. Not locked yet: the Zenodo record's
    JSON gives the URL, size and published md5 (a plain `url` archive may pin size/md5/sha256 in the config);
    the download is checked against them while streaming and its SHA-256 recorded in the lock."""
    dest = Path(dest)
    name = archive_name(arch)
    entry = lock.get(name)
    if entry is not None and entry.get("sha256"):
        return fetch_locked(FileSpec(name=name, url=entry.get("url") or arch.get("url")), dest, settings, lock)
    if settings.offline and not (entry or arch.get("sha256") or arch.get("md5")):
        raise DownloadError(
            f"{dest}: {lock.path} has no entry for '{name}' and offline mode is on: run the download where the "
            "network is reachable (snakemake ... download_all, or `deepred pins update`) and bring the lock along"
        )
    published: dict = {k: arch[k] for k in ("size", "md5") if arch.get(k) is not None}
    url, source = arch.get("url"), None
    if arch.get("zenodo") and entry is None and not settings.offline:
        rec = int(arch["zenodo"]["record"])
        meta_url = f"{api.rstrip('/')}/records/{rec}"
        pub = zenodo_file(zenodo_record(rec, settings, api), name, meta_url)
        url = pub["url"]
        published.update({k: pub[k] for k in ("size", "md5") if pub[k] is not None})
        source = f"zenodo record {rec} ({'published md5' if pub['md5'] else 'no published checksum'}), {meta_url}"
        if not pub["md5"]:
            log.warning("%s: the record publishes no md5 for '%s'; its SHA-256 will be recorded at first download", meta_url, name)
    spec = FileSpec(name=name, url=url, sha256=(arch.get("sha256") or None) and str(arch["sha256"]).lower())
    return fetch_locked(spec, dest, settings, lock, published=published, source=source)


def extract_dataset(config: dict, dataset: str, raw_root: str | Path, settings: DownloadSettings | None = None) -> dict:
    """Extract the members a dataset's `source.files` names from its (downloaded) archive into raw_root;
    write the ARCHIVE_DONE stamp; return the extraction report."""

    src = config["datasets"][dataset]["source"]
    arch = src["archive"]
    raw_root = Path(raw_root)
    zip_path = archive_path(raw_root, arch)
    name = archive_name(arch)
    lock = Lock(source_lock(src, dataset))
    if not zip_path.is_file():
        raise DownloadError(f"{zip_path}: missing (the download of '{name}' has not run; snakemake ... download_all)")
    # Verified against the lock (its stamp: no re-hash). An archive placed by hand that no lock pins yet is checked
    # against the published md5 first (one record request), or refused offline: never trusted as found.
    settings = settings or DownloadSettings.from_config(config)
    api = (config.get("download") or {}).get("zenodo_api") or ZENODO_API
    fetch_archive(arch, zip_path, settings, lock, api)
    zip_entry = lock.get(name)
    folder = str(arch.get("folder") or src.get("subset") or "")
    names = [f["name"] for f in src.get("files", [])]
    report = extract_members(
        zip_path, folder, names, raw_root, lock=lock, archive_name=name,
        max_member_bytes=int(float(arch.get("max_member_gb", 64)) * (1 << 30)),
        max_ratio=float(arch.get("max_ratio", 1000.0)),
    )
    write_json(raw_root / ARCHIVE_DONE, {"archive": name, "sha256": zip_entry["sha256"], "folder": folder,
                                         "lock": str(lock.path), "members": report})
    return report


def source_files(config: dict, dataset: str) -> list[FileSpec]:
    """Every file a real dataset's source lists (empty for simulated datasets); the manifest last."""
    src = config["datasets"][dataset]["source"]
    specs = [FileSpec.from_config(f) for f in src.get("files", [])]
    if src.get("manifest"):
        specs.append(FileSpec.from_config(src["manifest"]))
    return specs


def file_spec(config: dict, dataset: str, name: str) -> FileSpec:
    for spec in source_files(config, dataset):
        if spec.name == name:
            return spec
    raise DownloadError(f"dataset '{dataset}': no file '{name}' in its source.files")


def fetch_dataset(config: dict, dataset: str, raw_root: str | Path, settings: DownloadSettings | None = None) -> list[Path]:
    """Every file of a real dataset, verified: from its archive (downloaded once, members extracted), or one
    download per file (pinned in the config, else in the source's lock, recorded at first download)."""

    settings = settings or DownloadSettings.from_config(config)
    src = config["datasets"][dataset]["source"]
    raw_root = Path(raw_root)
    if src.get("archive"):
        api = (config.get("download") or {}).get("zenodo_api") or ZENODO_API
        fetch_archive(src["archive"], archive_path(raw_root, src["archive"]), settings, Lock(source_lock(src, dataset)), api)
        report = extract_dataset(config, dataset, raw_root, settings)
        return [raw_root / n for n in report]
    lock = None
    paths = []
    for spec in source_files(config, dataset):
        if spec.pinned:
            paths.append(fetch(spec, raw_root / spec.name, settings))
        else:
            lock = lock or Lock(source_lock(src, dataset))
            paths.append(fetch_locked(spec, raw_root / spec.name, settings, lock))
    man = src.get("manifest")
    if man:
        paths += fetch_manifest(Path(raw_root) / man["name"], Path(raw_root) / MANIFEST_DONE, settings)
    return paths
