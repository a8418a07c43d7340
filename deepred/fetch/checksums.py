"""Checksums of files at rest: what a file is pinned to (FileSpec), one-pass SHA-256/MD5 hashing, the small
stamps that spare re-hashing unchanged files, and the verification every reader runs before it reads a file.

The transfer that produces the files is deepred.fetch.download; the lock files that hold pins not written in the
config are deepred.fetch.pins.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

CHUNK = 4 << 20  # bytes per read: large enough for > 100 MB/s, small enough for steady progress lines


class DownloadError(ValueError):
    """A file could not be fetched or verified; the message names the file and what to do."""


class ChecksumError(DownloadError):
    """The bytes on disk do not match the published checksum (the partial file has been deleted)."""


@dataclass(frozen=True)
class FileSpec:
    name: str  # path under data/raw/{dataset}/
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    @classmethod
    def from_config(cls, d: dict) -> "FileSpec":
        return cls(
            name=str(d["name"]),
            url=d.get("url"),
            size=None if d.get("size") is None else int(d["size"]),
            sha256=(d.get("sha256") or None) and str(d["sha256"]).lower(),
            md5=(d.get("md5") or None) and str(d["md5"]).lower(),
        )

    @property
    def pinned(self) -> bool:
        return bool(self.sha256 or self.md5)


class Hasher:
    """SHA-256 (always: lock files record it, deepred.fetch.pins) and MD5 (when the spec pins it, or asked) in one pass."""

    def __init__(self, spec: FileSpec | None = None, md5: bool = False):
        self.h = {"sha256": hashlib.sha256()}
        if md5 or (spec is not None and spec.md5):
            self.h["md5"] = hashlib.md5(usedforsecurity=False)

    def update(self, data) -> None:
        for h in self.h.values():
            h.update(data)

    def digests(self) -> dict[str, str]:
        return {k: h.hexdigest() for k, h in self.h.items()}


def hash_into(hasher: Hasher, path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            hasher.update(block)
            n += len(block)
    return n


def hash_file(path: str | Path, md5: bool = False) -> tuple[int, dict[str, str]]:
    """(size, {"sha256": ..., "md5": ...}) of a file, streamed CHUNK bytes at a time (md5 only when asked)."""
    hasher = Hasher(md5=md5)
    size = hash_into(hasher, Path(path))
    return size, hasher.digests()


def stamped_sums(path: str | Path) -> dict[str, str] | None:
    """The sums of a still-valid verification stamp (same size and mtime as the file), else None."""
    path = Path(path)
    try:
        st = path.stat()
        rec = json.loads(_stamp(path).read_text())
        if rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns and isinstance(rec["sums"], dict):
            return dict(rec["sums"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def write_stamp(path: str | Path, sums: dict[str, str]) -> None:
    """Record the sums of a file just verified (keyed by its size and mtime); a read-only folder is tolerated."""
    path = Path(path)
    st = path.stat()
    try:
        _stamp(path).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sums": sums}))
    except OSError:
        pass


def mismatch(spec: FileSpec, size: int, digests: dict[str, str]) -> str | None:
    """None when size and every pinned sum match, else a message with expected and actual values."""
    if spec.size is not None and size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    for algo in ("sha256", "md5"):
        want = getattr(spec, algo)
        if want and digests.get(algo) != want:
            return f"{algo} {digests.get(algo)}, expected {want}"
    return None


def checksum_bytes(data: bytes, spec: FileSpec, origin: str) -> None:
    """Verify bytes already in memory (used for pickles: hash exactly the bytes that will be unpickled)."""
    if not spec.pinned:
        raise DownloadError(f"{origin}: no sha256/md5 pinned in the config; refusing to trust it")
    hasher = Hasher(spec)
    hasher.update(data)
    problem = mismatch(spec, len(data), hasher.digests())
    if problem:
        raise ChecksumError(f"{origin}: checksum mismatch: {problem}")


def _stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified.json")


def verify_file(path: str | Path, spec: FileSpec, *, use_stamp: bool = True) -> dict[str, str]:
    """Check a placed file against its spec; raise DownloadError/ChecksumError naming the file.

    A successful check leaves a small stamp (size, mtime, sums) beside the file so that readers need not
    re-hash tens of GB on every run; the stamp is ignored when size or mtime changed, or with use_stamp=False.
    """
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"{path}: missing")
    if not spec.pinned:
        raise DownloadError(
            f"{path}: no sha256/md5 pinned for '{spec.name}' in the config or in its source's lock "
            f"(config/pins/); download it through the pipeline (snakemake ... download_all, which records it in "
            f"the lock), or pin it in the config (python -m deepred.fetch.download pin {path.parent}) after checking it"
        )
    st = path.stat()
    stamp = _stamp(path)
    if use_stamp and stamp.exists():
        try:
            rec = json.loads(stamp.read_text())
            if rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns and mismatch(spec, st.st_size, rec["sums"]) is None:
                return rec["sums"]
        except (ValueError, KeyError, TypeError):
            pass
    hasher = Hasher(spec)
    size = hash_into(hasher, path)
    sums = hasher.digests()
    problem = mismatch(spec, size, sums)
    if problem:
        raise ChecksumError(f"{path}: checksum mismatch: {problem} (the file does not match the published one)")
    try:
        stamp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sums": sums}))
    except OSError:  # a read-only data folder still verifies, it just re-hashes next time
        pass
    return sums
