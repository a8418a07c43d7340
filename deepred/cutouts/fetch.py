"""Concurrent, polite, resumable, cached downloads of survey images, verified against a lock file.

Survey frames, tiles and service cutouts have no published checksum, so deepred.fetch.download.fetch (which
refuses an unpinned file by design) cannot fetch them the first time. This module streams them itself and
hands every file to the lock (deepred.fetch.pins.Lock, config/pins/<dataset>.lock.yaml by default):
`verify_or_record` checks size + SHA-256 against the entry, or records the SHA-256 at first download. A
file already in the cache is verified, never fetched again.

- polite: at most `max_connections` transfers at once (a thread pool), and `delay_s` between the starts
  of two requests to the same host;
- resumable: bytes stream into `<file>.part`, continued with an HTTP Range request after an interruption
  (also across runs), renamed into place only when complete;
- retried: network errors, timeouts and HTTP 5xx/408/429 answers are retried with exponential backoff
  (`download.retries`, `download.backoff_s`); a 429 or 503 with `Retry-After` waits what the server asks
  (capped at `max_retry_after_s`);
- checked: each file is parsed by its provider (`Provider.check`) *before* its checksum is recorded, so a
  truncated .bz2 or an HTML error page is deleted and reported, never pinned;
- a 404 (or another 4xx) is not retried: the image does not exist, which the caller turns into rejects;
- an error answer the provider recognises as "no data here" (`permanent(status, body)`, e.g. the Legacy Surveys
  viewer's HTTP 500 for a position off its footprint) is not retried either: a reject, asked again next run.

Each URL is requested once per run (`Fetcher.fetch_all` de-duplicates by cache key).
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deepred.cutouts.base import CalibrationError
from deepred.fetch.download import USER_AGENT, DownloadError, DownloadSettings

log = logging.getLogger("deepred.cutouts.fetch")

CHUNK = 1 << 20


class Permanent(DownloadError):
    """The server says the file does not exist (404/410/400...): not retried."""


class _Transient(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


@dataclass
class Outcome:
    key: str
    path: Path | None  # the verified file, or None
    problem: str | None = None  # why there is no file (a reject reason for its targets)
    downloaded: bool = False
    fatal: bool = False  # a transient failure that outlived the retries: the run must stop (rerun resumes)
    uncalibrated: bool = False  # the file's calibration cannot be established: the dataset's fetch stops


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _HostPacer:
    """At most one request start per `delay_s` per host (shared by the pool's threads)."""

    def __init__(self, delay_s: float):
        self.delay_s = float(delay_s)
        self.next: dict[str, float] = {}
        self.lock = threading.Lock()

    def wait(self, url: str) -> None:
        if self.delay_s <= 0:
            return
        host = urllib.parse.urlsplit(url).netloc
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next.get(host, now))
            self.next[host] = start + self.delay_s
        if start > now:
            time.sleep(start - now)


class Fetcher:
    def __init__(self, cache_dir: str | Path, lock, settings: DownloadSettings, *, max_connections: int = 4,
                 delay_s: float = 0.0, max_retry_after_s: float = 600.0,
                 check: Callable[[Path, object], object] | None = None,
                 after: Callable[[str, Path, dict, object], None] | None = None,
                 permanent: Callable[[int, bytes], str | None] | None = None):
        self.cache = Path(cache_dir)
        self.lock = lock
        self.settings = settings
        self.max_connections = max(1, int(max_connections))
        self.pacer = _HostPacer(delay_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.check = check
        self.after = after  # after(key, path, lock entry, what check returned or None): e.g. keep a decoded copy
        self.permanent = permanent  # permanent(status, body) -> a reject reason when an error answer means "no data"

    # ----------------------------------------------------------------------------------------------- API
    def fetch_all(self, requests: dict[str, object]) -> dict[str, Outcome]:
        """key -> Outcome for every distinct request (key -> an object with .url)."""
        out: dict[str, Outcome] = {}
        if not requests:
            return out
        with ThreadPoolExecutor(max_workers=self.max_connections, thread_name_prefix="fetch") as pool:
            for key, outcome in zip(requests, pool.map(lambda kv: self.fetch_one(*kv), requests.items())):
                out[key] = outcome
        return out

    def fetch_one(self, key: str, request) -> Outcome:
        dest = self.cache / key
        url = request.url
        try:
            if dest.is_file():
                self._verify(key, dest, url, request, fresh=False)
                return Outcome(key, dest)
            if self.settings.offline:
                return Outcome(key, None, f"{dest}: not in the cache and offline mode is on (fetch it on a login node)",
                               fatal=True)
            self._download(url, dest)
            self._verify(key, dest, url, request, fresh=True)
            return Outcome(key, dest, downloaded=True)
        except _Uncalibrated as exc:
            return Outcome(key, None, str(exc), fatal=True, uncalibrated=True)
        except Permanent as exc:
            return Outcome(key, None, str(exc))
        except _BadFile as exc:
            return Outcome(key, None, str(exc))
        except DownloadError as exc:
            return Outcome(key, None, str(exc), fatal=True)

    # ------------------------------------------------------------------------------------------ internals
    def _verify(self, key: str, dest: Path, url: str, request, fresh: bool) -> None:
        entry = self.lock.get(key)
        checked = None
        if entry is None or fresh:
            # Parse before trusting: a truncated/corrupt file is deleted, never recorded in the lock.
            if self.check is not None:
                try:
                    checked = self.check(dest, request)
                except CalibrationError as exc:  # kept: the next run checks it again without downloading
                    raise _Uncalibrated(f"{exc} (file kept, not locked)") from exc
                except ValueError as exc:
                    dest.unlink(missing_ok=True)
                    raise _BadFile(f"{exc} (deleted; the next run downloads it again)") from exc
        if entry is not None and entry.get("sha256") and not fresh:
            # pinned already: check against the entries read once (verify_or_record re-reads the lock file on
            # every call, which costs O(entries) per image)
            entry = self.lock.verify(key, dest)
        else:
            entry = self.lock.verify_or_record(key, dest, url=url)
        if self.after is not None:
            self.after(key, dest, entry, checked)

    def _download(self, url: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        attempt = 0
        while True:
            try:
                self._transfer(url, part)
                break
            except _Transient as exc:
                attempt += 1
                if attempt > self.settings.retries:
                    raise DownloadError(
                        f"{url}: failed after {self.settings.retries} retries ({exc}); {part.name} is kept and "
                        "the next run resumes it"
                    ) from None
                wait = min(self.settings.backoff_s * 2 ** (attempt - 1), 300.0)
                if exc.retry_after is not None:
                    wait = min(max(wait, exc.retry_after), self.max_retry_after_s)
                log.warning("%s: %s; retry %d/%d in %.1f s", url, exc, attempt, self.settings.retries, wait)
                time.sleep(wait)
        part.replace(dest)

    def _transfer(self, url: str, part: Path) -> None:
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        self.pacer.wait(url)
        try:
            resp = urllib.request.urlopen(req, timeout=self.settings.timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                return  # the partial file is already complete
            if (reason := self._no_data(exc)) is not None:
                raise Permanent(f"{url}: {reason}") from None
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Transient(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers.get("Retry-After"))) from None
            raise Permanent(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        with resp:
            cr = resp.headers.get("Content-Range", "")
            if have and resp.status == 206 and cr.startswith(f"bytes {have}-"):
                mode = "ab"
            else:
                mode, have = "wb", 0
            length = resp.headers.get("Content-Length")
            end = have + int(length) if length is not None else None
            try:
                with open(part, mode) as fh:
                    while block := resp.read(CHUNK):
                        fh.write(block)
                        have += len(block)
            except (socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                raise _Transient(f"transfer interrupted at byte {have}: {exc}") from None
            if end is not None and have < end:
                raise _Transient(f"connection closed at byte {have} of {end}")

    def _no_data(self, exc: urllib.error.HTTPError) -> str | None:
        """The provider's reject reason for this error answer, when it says "no data here" (not transient)."""
        if self.permanent is None:
            return None
        try:
            body = exc.read(1 << 16) or b""
        except (OSError, http.client.HTTPException):
            body = b""
        return self.permanent(exc.code, body)


class _Uncalibrated(DownloadError):
    """Downloaded and readable, but its flux calibration cannot be established (deepred.cutouts.base)."""


class _BadFile(DownloadError):
    """Downloaded but unusable (truncated, corrupt, not the format): its targets are rejected."""
