"""Lock files of verified downloads: `config/pins/<name>.lock.yaml`, meant to be committed.

A lock maps a file name to what was verified about it, one file per line (JSON syntax, which is YAML too):

    {"files": {
      "dataset.zip": {"url": "...", "size": 123, "sha256": "...", "md5": "...", "source": "zenodo record 7860294 ..."}
    }}

- An entry present: every later run (offline mode and other users too) checks the file's size and SHA-256
  against it (`Lock.verify_or_record`); a mismatch raises deepred.fetch.download.ChecksumError naming the file, the
  lock and both sums.
- No entry: the published checksum, when the archive publishes one (Zenodo: `md5:...`), is checked first; then
  the SHA-256 is recorded ("trust on first download") and the log says so. From then on the lock is the pin.

Several download jobs (threads of one process, or Snakemake jobs in separate processes) may record into one
lock at the same time: writers serialize on a threading.Lock and an fcntl.flock on a sidecar file
(`.<lock>.flock`), re-read the lock under it and write it atomically (deepred.core.io), so no entry is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
from pathlib import Path
from typing import Iterator

import yaml

from deepred.core.io import write_text
from deepred.fetch.checksums import ChecksumError, DownloadError, hash_file, stamped_sums, write_stamp

log = logging.getLogger("deepred.fetch.pins")

HEADER = (
    "# DeepRed lock file: files verified at download (size, SHA-256; md5 as the archive published it).\n"
    "# Commit it: later runs, offline mode and other users verify against it. Managed by `deepred pins`.\n"
)

# libyaml when present, for a lock edited by hand into block YAML (the written form is read as JSON)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    key = str(path.resolve())
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


class Lock:
    """A YAML lock file (config/pins/<dataset>.lock.yaml) of verified files: name -> {url, size, sha256, md5?, source}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._seen: tuple | None = None  # (mtime_ns, size, inode) of the lock file last parsed
        self._pending: dict[str, dict] = {}  # entries recorded inside batch(), written when it ends
        self._batch = 0
        self._mem = threading.RLock()
        self.entries: dict[str, dict] = self._read()

    # ------------------------------------------------------------------------------------------ reading
    def _read(self) -> dict[str, dict]:
        """The lock's entries; not parsed again while the file is unchanged (atomic writes change the inode)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen = None
            return {}
        seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        if seen == self._seen and getattr(self, "entries", None) is not None:
            return self.entries
        text = self.path.read_text()
        try:  # as written by _save: comment lines, then JSON (a YAML flow mapping), fast to read at any size
            doc = json.loads("".join(line for line in text.splitlines(True) if not line.lstrip().startswith("#")))
        except ValueError:
            try:  # edited by hand into block YAML
                doc = yaml.load(text, Loader=_Loader) or {}
            except yaml.YAMLError as exc:
                raise DownloadError(f"{self.path}: not a readable lock file ({exc})") from exc
        files = doc.get("files") if isinstance(doc, dict) else None
        if files is None:
            self._seen = seen
            return {}
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise DownloadError(f"{self.path}: 'files' must map file names to entries")
        self._seen = seen
        return {str(k): dict(v) for k, v in files.items()}

    def reload(self) -> "Lock":
        self.entries = self._read()
        return self

    def get(self, name: str) -> dict | None:
        with self._mem:
            entry = self._pending.get(name)
        if entry is None:
            entry = self.entries.get(name)
        return dict(entry) if entry is not None else None

    def names(self) -> list[str]:
        with self._mem:
            return sorted(set(self.entries) | set(self._pending))

    # ------------------------------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across threads and processes; the entries are re-read inside."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        side = self.path.with_name(f".{self.path.name}.flock")
        with _thread_lock(self.path):
            with open(side, "a") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    self.entries = self._read()
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _save(self) -> None:
        """One line per file, in JSON syntax (valid YAML): quick to write and read at thousands of entries, and
        a commit's diff shows exactly the files that changed."""
        lines = [f"  {json.dumps(k)}: {json.dumps(self.entries[k])}" for k in sorted(self.entries)]
        body = '{"files": {\n' + ",\n".join(lines) + ("\n" if lines else "") + "}}\n"
        write_text(self.path, HEADER + body)
        st = self.path.stat()  # still under the flock: no other writer has replaced it since
        self._seen = (st.st_mtime_ns, st.st_size, st.st_ino)

    @contextlib.contextmanager
    def batch(self) -> Iterator["Lock"]:
        """Record many files with one write: inside the block new entries are kept in memory (visible to this
        Lock's get/verify) and merged into the file, under the file lock, when the block ends (also when it
        ends with an error: what was verified stays recorded). For thousands of small files (cutouts)."""
        with self._mem:
            self._batch += 1
        try:
            yield self
        finally:
            with self._mem:
                self._batch -= 1
                last = self._batch == 0
            if last:
                self.flush()

    def flush(self) -> None:
        """Write the entries recorded inside batch(); one that another job recorded meanwhile with other bytes
        raises ChecksumError (the others are written)."""
        with self._mem:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        conflicts = []
        with self._locked():
            for name, e in pending.items():
                cur = self.entries.get(name)
                if cur is not None and cur.get("sha256") and cur["sha256"] != e["sha256"]:
                    conflicts.append(f"{name}: sha256 {e['sha256']}, but {self.path} pins {cur['sha256']}")
                elif cur is None or not cur.get("sha256"):
                    self.entries[name] = e
            self._save()
        if conflicts:
            raise ChecksumError(f"{self.path}: recorded meanwhile with other bytes: " + "; ".join(conflicts))

    def record(self, name: str, entry: dict) -> None:
        """Set (or replace) one entry and save, under the lock."""
        with self._locked():
            self.entries[name] = _clean(entry)
            self._save()

    def forget(self, name: str) -> bool:
        with self._locked():
            if name not in self.entries:
                return False
            del self.entries[name]
            self._save()
            return True

    # ------------------------------------------------------------------------------------------ checking
    def verify(self, name: str, file: str | Path, *, use_stamp: bool = True) -> dict:
        """Check `file` against the entry for `name` (DownloadError when there is none)."""
        entry = self.get(name)
        if entry is None:
            raise DownloadError(f"{file}: no entry '{name}' in {self.path}")
        _check_entry(name, Path(file), entry, self.path, use_stamp=use_stamp)
        return entry

    def verify_or_record(self, name: str, file: str | Path, *, url: str | None = None,
                         published: dict | None = None, source: str | None = None) -> dict:
        """Verify `file` against the lock's entry for `name`, or, when there is none, check the published sums
        (`published`, e.g. {"md5": ..., "size": ...}) and record its SHA-256; return the entry."""
        file = Path(file)
        if not file.is_file():
            raise DownloadError(f"{file}: missing")
        self.reload()
        entry = self.get(name)
        if entry is not None and entry.get("sha256"):
            _check_entry(name, file, entry, self.path)
            return entry
        # Hash outside the lock (large files); the entry is re-read under it before anything is written.
        published = dict(published or {})
        if entry is not None:  # an entry pending its first download (pins update): url/size/md5 only
            published = {**{k: entry[k] for k in ("md5", "size") if entry.get(k) is not None}, **published}
            url = url or entry.get("url")
            source = source or entry.get("source")
        want_md5 = bool(published.get("md5"))
        size, sums = _sums(file, want_md5)
        if published.get("size") is not None and int(published["size"]) != size:
            raise ChecksumError(f"{file}: size {size} bytes, but the archive publishes {published['size']} for '{name}'")
        if want_md5 and sums["md5"] != str(published["md5"]).lower():
            raise ChecksumError(
                f"{file}: md5 {sums['md5']}, but the archive publishes {str(published['md5']).lower()} for '{name}' "
                "(the download does not match the published file)"
            )
        new = _clean({"url": url, "size": size, "sha256": sums["sha256"],
                      "md5": sums.get("md5") if want_md5 else None,
                      "source": source or ("published md5, sha256 recorded at first download" if want_md5
                                           else "sha256 recorded at first download")})
        with self._mem:
            if self._batch:  # inside batch(): written when the block ends
                current = self._pending.get(name)
                if current is not None:
                    _check_entry(name, file, current, self.path)
                    return dict(current)
                self._pending[name] = new
                log.info("recorded sha256 of %s in %s at first download", name, self.path)
                return dict(new)
        with self._locked():
            current = self.entries.get(name)
            if current is not None and current.get("sha256"):  # recorded meanwhile by another job
                _check_entry(name, file, current, self.path)
                return dict(current)
            self.entries[name] = new
            self._save()
        log.info("recorded sha256 of %s in %s at first download", name, self.path)
        return dict(new)


def _clean(entry: dict) -> dict:
    order = ("url", "size", "sha256", "md5", "source")
    out = {k: entry[k] for k in order if entry.get(k) is not None}
    out.update({k: v for k, v in entry.items() if k not in order and v is not None})
    if "size" in out:
        out["size"] = int(out["size"])
    return out


def _sums(file: Path, md5: bool) -> tuple[int, dict[str, str]]:
    """Size and sums, from a valid verification stamp (written right after a download or extraction hashed
    the same bytes) or by hashing the file; a fresh hash refreshes the stamp."""
    sums = stamped_sums(file)
    if sums and "sha256" in sums and (not md5 or "md5" in sums):
        return file.stat().st_size, sums
    size, sums = hash_file(file, md5=md5)
    write_stamp(file, sums)
    return size, sums


def _check_entry(name: str, file: Path, entry: dict, lock_path: Path, use_stamp: bool = True) -> None:
    size = file.stat().st_size
    if entry.get("size") is not None and int(entry["size"]) != size:
        raise ChecksumError(
            f"{file}: size {size} bytes, but {lock_path} pins {entry['size']} for '{name}' "
            f"(sha256 pinned {entry.get('sha256')})"
        )
    md5_only = not entry.get("sha256")
    if md5_only and not entry.get("md5"):
        raise DownloadError(f"{lock_path}: entry '{name}' pins no sha256 or md5")
    _, sums = _sums(file, md5_only) if use_stamp else hash_file(file, md5=md5_only)
    if md5_only:
        if sums["md5"] != str(entry["md5"]).lower():
            raise ChecksumError(f"{file}: md5 {sums['md5']}, but {lock_path} pins {entry['md5']} for '{name}'")
        return
    if sums["sha256"] != str(entry["sha256"]).lower():
        raise ChecksumError(
            f"{file}: sha256 {sums['sha256']}, but {lock_path} pins {entry['sha256']} for '{name}': the file "
            "is not the one recorded (a changed archive, or a corrupt copy); delete it to fetch it again, or "
            f"`deepred pins update` if the archive really changed"
        )
