"""Helpers the real-format readers share: the pinned file specs of a source, verified paths, tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deepred.contracts.processed import DataError
from deepred.contracts.table_io import read_table  # noqa: F401 (the readers and deepred.cutouts import it from here)
from deepred.fetch.download import DownloadError, FileSpec, read_manifest, verify_file
from deepred.fetch.archive_zip import member_key
from deepred.fetch.layout import archive_name, source_lock
from deepred.fetch.pins import Lock


def source_specs(raw_dir: Path, src: dict) -> dict[str, FileSpec]:
    """name -> spec for the files a source lists, plus those of its manifest (when it has one)."""
    specs = {f["name"]: FileSpec.from_config(f) for f in src.get("files", [])}
    man = src.get("manifest")
    if man:
        specs[man["name"]] = FileSpec.from_config(man)
    try:  # files the config leaves unpinned: their pins from the source's lock file (deepred.fetch.pins)
        specs = lock_specs(raw_dir, src, specs)
    except DownloadError as exc:
        raise DataError(str(exc)) from exc
    if man:
        mspec = specs[man["name"]]
        mpath = verified(raw_dir, mspec)
        try:
            listed = read_manifest(mpath)
        except DownloadError as exc:
            raise DataError(str(exc)) from exc
        for s in listed:
            specs[s.name] = s
    return specs


def verified(raw_dir: Path, spec: FileSpec) -> Path:
    """The placed file of `spec`, checked against its pinned checksum; DataError naming it otherwise."""
    path = Path(raw_dir) / spec.name
    try:
        verify_file(path, spec)
    except DownloadError as exc:
        raise DataError(str(exc)) from exc
    return path


def spec_for(specs: dict[str, FileSpec], name: str, what: str, dataset: str) -> FileSpec:
    if name not in specs:
        raise DataError(
            f"dataset '{dataset}': {what} '{name}' is not among the source's pinned files "
            f"({', '.join(sorted(specs)) or 'none'})"
        )
    return specs[name]


def require_columns(df: pd.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: column(s) {', '.join(missing)} missing; the table has {', '.join(map(str, df.columns))}")


def lock_specs(raw_dir: str | Path, src: dict, specs: dict) -> dict:
    """name -> FileSpec with the pins of a source's lock filled in for files the config leaves unpinned
    (members extracted from `source.archive` under their `<archive>!<folder>/<name>` key, other files under
    their name). Readers verify the bytes against these, so pickled metadata is checked before unpickling."""
    unpinned = [n for n, s in specs.items() if not s.pinned]
    if not unpinned:
        return specs
    lock = Lock(source_lock(src, Path(raw_dir).name))
    arch = src.get("archive")
    folder = str((arch or {}).get("folder") or src.get("subset") or "")
    out = dict(specs)
    for n in unpinned:
        key = member_key(archive_name(arch), folder, n) if arch else n
        e = lock.get(key)
        if e is not None and e.get("sha256"):
            out[n] = FileSpec(name=n, url=specs[n].url, size=e.get("size"), sha256=str(e["sha256"]).lower())
    return out
