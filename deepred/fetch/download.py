"""Verified downloads of real survey files: stream, resume, retry, check, then rename into place.

A file is described by a spec from the config (`name`, `url`, `size`, `sha256` and/or `md5`; Zenodo
publishes MD5). `fetch()`:

1. returns at once when the destination exists and matches its checksum;
2. otherwise streams the URL into `<dest>.part`, asking the server for `Range: bytes=<have>-` when a
   partial file is left from an interrupted transfer (a server that ignores Range restarts it);
3. retries network failures and 5xx/429 answers with exponential backoff;
4. checks size and checksum; a mismatch deletes the partial file and raises ChecksumError with both
   sums; a match is fsynced and renamed onto the destination (never a half file under the real name).

Offline mode (`download.offline: true` or DEEPRED_OFFLINE=1) never touches the network: files placed
by hand under data/raw/{dataset}/ (fetched on a login node) are verified and used.

Usage on a login node:  python -m deepred.fetch.download --configfile config/paper.yaml [--dataset kids] [--offline]
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deepred.core.io import write_json
from deepred.fetch.checksums import (  # the errors and FileSpec are part of this module's interface too
    CHUNK,
    ChecksumError,
    DownloadError,
    FileSpec,
    Hasher,
    hash_into,
    mismatch,
    verify_file,
    write_stamp,
)

log = logging.getLogger("deepred.fetch.download")

USER_AGENT = "deepred-download/0.1 (+https://github.com/; research pipeline)"


@dataclass
class DownloadSettings:
    offline: bool = False
    retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 60.0
    progress_min_mb: float = 50.0  # files at least this large get progress lines

    @classmethod
    def from_config(cls, config: dict) -> "DownloadSettings":
        d = dict(config.get("download") or {})
        s = cls(**{k: d[k] for k in ("offline", "retries", "backoff_s", "timeout_s", "progress_min_mb") if k in d})
        if os.environ.get("DEEPRED_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
            s.offline = True
        return s


class _Retryable(Exception):
    pass


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # our partial file is already complete (or larger): re-check it
            return None
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc


def _content_range_start(resp) -> int | None:
    cr = resp.headers.get("Content-Range", "")
    try:
        return int(cr.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


class _Progress:
    def __init__(self, name: str, total: int | None, start: int, enabled: bool):
        self.name, self.total, self.enabled = name, total, enabled
        self.t0 = self.last = time.monotonic()
        self.start = start

    def update(self, have: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 5.0):
            return
        self.last = now
        rate = (have - self.start) / max(now - self.t0, 1e-9) / 1e6
        pct = f"{100.0 * have / self.total:5.1f}% of {self.total / 1e6:.1f} MB" if self.total else f"{have / 1e6:.1f} MB"
        log.info("%s: %s, %.1f MB/s", self.name, pct, rate)


def fetch(spec: FileSpec, dest: str | Path, settings: DownloadSettings | None = None, *,
          allow_unpinned: bool = False) -> Path:
    """Make `dest` a verified copy of `spec` (see module docstring); return it.

    allow_unpinned (used only by fetch_locked, which records the SHA-256 in a lock right after): fetch a file
    whose spec pins no checksum; a file already present is then returned unchecked for the lock to verify."""
    settings = settings or DownloadSettings()
    dest = Path(dest)
    if dest.exists():
        if allow_unpinned and not spec.pinned:
            return dest
        verify_file(dest, spec)
        log.info("%s: present and verified", dest)
        return dest
    if settings.offline:
        raise DownloadError(
            f"{dest}: missing and offline mode is on; fetch it where the network is reachable "
            f"(python -m deepred.fetch.download --configfile <config> on a login node) or place it there by hand"
        )
    if not spec.url:
        raise DownloadError(f"{dest}: missing and the config gives no url for '{spec.name}'")
    if not spec.pinned and not allow_unpinned:
        raise DownloadError(f"{dest}: the config pins no sha256/md5 for '{spec.name}'; refusing an unverifiable download")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    state = _Stream(spec)
    attempt = 0
    while True:
        try:
            _transfer(spec, part, settings, state)
            break
        except _Retryable as exc:
            attempt += 1
            if attempt > settings.retries:
                raise DownloadError(
                    f"{spec.url}: failed after {settings.retries} retries ({exc}); the partial file {part} "
                    "is kept and the next run resumes it"
                ) from None
            wait = min(settings.backoff_s * 2 ** (attempt - 1), 300.0)
            log.warning("%s: %s; retry %d/%d in %.1f s", spec.name, exc, attempt, settings.retries, wait)
            time.sleep(wait)
    hasher, size = state.finish(part)
    problem = mismatch(spec, size, hasher.digests())
    if problem:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{dest}: downloaded from {spec.url}: checksum mismatch: {problem}; partial file deleted")
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    write_stamp(dest, hasher.digests())
    log.info("%s: downloaded and verified (%d bytes)", dest, size)
    return dest


class _Stream:
    """The checksum of `.part`, kept up to date while bytes are written (no second read of a large file).

    A partial file left by an earlier run is hashed once before appending to it."""

    def __init__(self, spec: FileSpec):
        self.spec = spec
        self.hasher: Hasher | None = None
        self.n = 0

    def start(self, part: Path, have: int) -> None:
        if have == 0:
            self.hasher, self.n = Hasher(self.spec), 0
        elif self.hasher is None or self.n != have:
            self.hasher = Hasher(self.spec)
            self.n = hash_into(self.hasher, part)

    def update(self, block) -> None:
        self.hasher.update(block)
        self.n += len(block)

    def finish(self, part: Path) -> tuple[Hasher, int]:
        size = part.stat().st_size
        if self.hasher is None or self.n != size:
            self.start(part, size)
        return self.hasher, self.n


def _hash_worker(blocks: "queue.Queue", state: _Stream) -> None:
    while (block := blocks.get()) is not None:
        state.update(block)


def _transfer(spec: FileSpec, part: Path, settings: DownloadSettings, state: _Stream) -> None:
    """Append to `part` until the server's body ends; raise _Retryable on transient failures."""
    have = part.stat().st_size if part.exists() else 0
    if spec.size is not None and have > spec.size:
        part.unlink()
        have = 0
    if spec.size is not None and have == spec.size:
        return  # complete from an earlier attempt: the caller verifies it
    resp = _open(spec.url, have, settings.timeout_s)
    if resp is None:
        return
    with resp:
        if have and resp.status == 206 and _content_range_start(resp) == have:
            mode = "ab"
            log.info("%s: resuming at byte %d", spec.name, have)
        else:
            if have:
                log.info("%s: server ignored the Range request; restarting", spec.name)
            mode, have = "wb", 0
        length = resp.headers.get("Content-Length")
        expected_end = have + int(length) if length is not None else spec.size
        progress = _Progress(
            spec.name, spec.size or expected_end, have, (spec.size or expected_end or 0) >= settings.progress_min_mb * 1e6
        )
        state.start(part, have)
        # Hashing runs in a second thread, overlapped with receive and write (all three release the GIL).
        blocks: queue.Queue = queue.Queue(maxsize=8)
        hasher = threading.Thread(target=_hash_worker, args=(blocks, state), daemon=True)
        hasher.start()
        try:
            with open(part, mode) as fh:
                while block := resp.read(CHUNK):
                    fh.write(block)
                    blocks.put(block)
                    have += len(block)
                    progress.update(have)
        except (socket.timeout, ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _Retryable(f"transfer interrupted at byte {have}: {exc}") from exc
        finally:
            blocks.put(None)
            hasher.join()
        progress.update(have, final=True)
        if expected_end is not None and have < expected_end:
            raise _Retryable(f"connection closed at byte {have} of {expected_end}")


def get_json(url: str, settings: DownloadSettings):
    """A small JSON document (e.g. a Zenodo record), with the same retries as a download."""
    attempt = 0
    while True:
        try:
            resp = _open(url, 0, settings.timeout_s)
            if resp is None:
                raise DownloadError(f"{url}: HTTP 416")
            with resp:
                body = resp.read()
            break
        except _Retryable as exc:
            attempt += 1
            if attempt > settings.retries:
                raise DownloadError(f"{url}: failed after {settings.retries} retries ({exc})") from None
            wait = min(settings.backoff_s * 2 ** (attempt - 1), 300.0)
            log.warning("%s: %s; retry %d/%d in %.1f s", url, exc, attempt, settings.retries, wait)
            time.sleep(wait)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise DownloadError(f"{url}: the answer is not JSON ({exc})") from exc


def read_manifest(path: str | Path) -> list[FileSpec]:
    """A manifest CSV: columns name, url, size, sha256 (and/or md5); one row per file."""
    import csv

    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "name" not in rows[0] or not ({"sha256", "md5"} & set(rows[0])):
        raise DownloadError(f"{path}: a manifest needs columns name, url, size and sha256 (or md5)")
    out = []
    for i, r in enumerate(rows, start=2):
        name = r.get("name") or ""
        if not name or ".." in Path(name).parts or Path(name).is_absolute():
            raise DownloadError(f"{path}: line {i}: bad file name {name!r}")
        out.append(FileSpec.from_config({k: (v or None) for k, v in r.items() if k}))
    return out


def fetch_manifest(manifest: str | Path, done: str | Path, settings: DownloadSettings | None = None) -> list[Path]:
    """Fetch every file a (verified) manifest lists into the manifest's folder, then write the `done` stamp."""

    manifest = Path(manifest)
    specs = read_manifest(manifest)
    paths = [fetch(s, manifest.parent / s.name, settings) for s in specs]
    write_json(done, {"manifest": manifest.name, "files": [s.name for s in specs]})
    return paths


def pin_folder(folder: str | Path) -> list[dict]:
    """File specs (name, size, sha256) for every file under `folder`, for pasting into source.files."""
    folder = Path(folder)
    out = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".part")):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while block := fh.read(CHUNK):
                h.update(block)
        out.append({"name": f.relative_to(folder).as_posix(), "size": f.stat().st_size, "sha256": h.hexdigest()})
    return out
