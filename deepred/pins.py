"""Lock files of verified downloads: `config/pins/<name>.lock.yaml`, meant to be committed.

A lock maps a file name to what was verified about it, one file per line (JSON syntax, which is YAML too):

    {"files": {
      "dataset.zip": {"url": "...", "size": 123, "sha256": "...", "md5": "...", "source": "zenodo record 7860294 ..."}
    }}

- An entry present: every later run (offline mode and other users too) checks the file's size and SHA-256
  against it (`Lock.verify_or_record`); a mismatch raises deepred.download.ChecksumError naming the file, the
  lock and both sums.
- No entry: the published checksum, when the archive publishes one (Zenodo: `md5:...`), is checked first; then
  the SHA-256 is recorded ("trust on first download") and the log says so. From then on the lock is the pin.

Several download jobs (threads of one process, or Snakemake jobs in separate processes) may record into one
lock at the same time: writers serialize on a threading.Lock and an fcntl.flock on a sidecar file
(`.<lock>.flock`), re-read the lock under it and write it atomically (deepred.io), so no entry is lost.
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

from deepred.checksums import ChecksumError, DownloadError, hash_file, stamped_sums, write_stamp

log = logging.getLogger("deepred.pins")

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
        from deepred.io import write_text

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


def lock_specs(raw_dir: str | Path, src: dict, specs: dict) -> dict:
    """name -> FileSpec with the pins of a source's lock filled in for files the config leaves unpinned
    (members extracted from `source.archive` under their `<archive>!<folder>/<name>` key, other files under
    their name). Readers verify the bytes against these, so pickled metadata is checked before unpickling."""
    from deepred.archive_zip import member_key
    from deepred.dataset_fetch import archive_name, source_lock
    from deepred.download import FileSpec

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


# ------------------------------------------------------------------------------------------ `deepred pins`
def _real_datasets(config: dict, only: list[str] | None) -> list[str]:
    real = [d for d, ds in config["datasets"].items() if ds["source"]["kind"] != "simulate"]
    unknown = [d for d in only or [] if d not in config["datasets"]]
    if unknown:
        raise DownloadError(f"unknown dataset(s) {', '.join(unknown)}; the config has {', '.join(config['datasets'])}")
    return [d for d in real if not only or d in only]


def _planned(config: dict, dataset: str) -> list[tuple[str, Path, dict | None]]:
    """(lock key, local path, pin given in the config) of every file a dataset's source verifies."""
    from deepred.archive_zip import member_key
    from deepred.dataset_fetch import archive_name, archive_path

    src = config["datasets"][dataset]["source"]
    raw = Path(config["data_dir"]) / "raw" / dataset
    out = []
    arch = src.get("archive")
    if arch:
        name = archive_name(arch)
        pin = {k: arch[k] for k in ("size", "sha256", "md5") if arch.get(k) is not None} or None
        out.append((name, archive_path(raw, arch), pin))
        folder = str(arch.get("folder") or src.get("subset") or "")
        for f in src.get("files", []):
            out.append((member_key(name, folder, f["name"]), raw / f["name"], None))
        return out
    for f in list(src.get("files", [])) + ([src["manifest"]] if src.get("manifest") else []):
        pin = {k: f[k] for k in ("size", "sha256", "md5") if f.get(k) is not None}
        out.append((f["name"], raw / f["name"], pin if (pin.get("sha256") or pin.get("md5")) else None))
    return out


def verify_locks(config: dict, datasets: list[str] | None = None, *, rehash: bool = False, out=None) -> int:
    """Check every present file of the real datasets against its lock entry (or config pin); no network.
    Prints one line per file; returns the number of mismatches."""
    import sys

    from deepred.dataset_fetch import source_lock
    from deepred.download import FileSpec, verify_file

    out = out or sys.stdout
    bad = 0
    for d in _real_datasets(config, datasets):
        lock = Lock(source_lock(config["datasets"][d]["source"], d))
        for key, path, pin in _planned(config, d):
            entry = lock.get(key)
            if not path.is_file():
                state = "missing" + ("" if entry or pin else " (and not pinned yet)")
            elif entry is None and pin is None:
                state = f"not pinned (no entry in {lock.path}; recorded at first download)"
            else:
                try:
                    if entry is not None:
                        lock.verify(key, path, use_stamp=not rehash)
                    else:
                        verify_file(path, FileSpec(name=key, **pin), use_stamp=not rehash)
                    state = "ok"
                except DownloadError as exc:
                    bad += 1
                    state = f"MISMATCH: {exc}"
            print(f"{d}: {key}: {state}", file=out)
    return bad


def update_locks(config: dict, datasets: list[str] | None = None, out=None) -> int:
    """Refresh the locks from the archives: read each Zenodo record's published size/md5 (network) and pin
    them (a changed record replaces the entry and forgets its members, which are then extracted and locked
    again); record the SHA-256 of files already present that have no entry yet. Returns the number of
    files whose published checksum their local copy does not match."""
    import sys

    from deepred.dataset_fetch import ZENODO_API, archive_name, source_lock, zenodo_file, zenodo_record
    from deepred.download import DownloadSettings

    out = out or sys.stdout
    settings = DownloadSettings.from_config(config)
    api = (config.get("download") or {}).get("zenodo_api") or ZENODO_API
    records: dict[int, dict] = {}
    bad = 0
    for d in _real_datasets(config, datasets):
        src = config["datasets"][d]["source"]
        lock = Lock(source_lock(src, d))
        arch = src.get("archive")
        changed = False
        if arch and arch.get("zenodo"):
            name, rec = archive_name(arch), int(arch["zenodo"]["record"])
            if rec not in records:
                records[rec] = zenodo_record(rec, settings, api)
            pub = zenodo_file(records[rec], name, f"{api.rstrip('/')}/records/{rec}")
            entry = lock.get(name)
            same = entry is not None and entry.get("size") == pub["size"] and (entry.get("md5") or None) == pub["md5"]
            if not same:
                if entry is not None:
                    for k in lock.names():
                        if k.startswith(f"{name}!"):
                            lock.forget(k)
                    changed = True
                    print(f"{d}: {name}: the record changed (size/md5 {entry.get('size')}/{entry.get('md5')} -> "
                          f"{pub['size']}/{pub['md5']}); its entry and members' are replaced: delete the old "
                          f"copy under data/raw/ and download again", file=out)
                lock.record(name, {"url": pub["url"], "size": pub["size"], "md5": pub["md5"],
                                   "source": f"zenodo record {rec} (published md5), {api.rstrip('/')}/records/{rec}"})
            else:
                print(f"{d}: {name}: unchanged in record {rec}", file=out)
        for key, path, pin in _planned(config, d):
            # members are locked when extracted (from a verified archive), never from files found in place
            if changed or "!" in key or not path.is_file() or pin is not None:
                continue
            entry = lock.get(key)
            if entry is not None and entry.get("sha256"):
                continue
            try:
                lock.verify_or_record(key, path)
                print(f"{d}: {key}: recorded {lock.get(key)['sha256']}", file=out)
            except DownloadError as exc:
                bad += 1
                print(f"{d}: {key}: MISMATCH: {exc}", file=out)
    return bad


def cli(args) -> int:
    """`deepred pins update|verify` (deepred/cli.py)."""
    import sys

    from deepred.config import ConfigError, load_config

    logging.getLogger("deepred").setLevel(logging.INFO)
    try:
        config = load_config(args.configfile)
        if args.action == "verify":
            bad = verify_locks(config, args.dataset, rehash=args.rehash)
        else:
            bad = update_locks(config, args.dataset)
    except (DownloadError, ConfigError) as exc:
        print(f"deepred: error: {exc}", file=sys.stderr)
        return 1
    if bad:
        print(f"deepred: {bad} file(s) do not match their pins", file=sys.stderr)
    return 1 if bad else 0


def add_parser(sub) -> None:
    """The `pins` subcommand of the deepred CLI."""
    import argparse

    p = sub.add_parser(
        "pins", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="manage the lock files of verified downloads (config/pins/*.lock.yaml)",
        description="Lock files pin every real-data file by size and SHA-256 (commit them).\n"
                    "  verify: check the files present under data/raw against their locks (no network)\n"
                    "  update: read the archives' published checksums (Zenodo REST API) into the locks and\n"
                    "          record the SHA-256 of present files that have no entry yet",
        epilog="examples:\n  deepred pins update --configfile config/paper.yaml\n"
               "  deepred pins verify --configfile config/paper.yaml --dataset des_deep --rehash",
    )
    p.add_argument("action", choices=("update", "verify"))
    p.add_argument("--configfile", default="config.yaml", help="the pipeline config (default: config.yaml)")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable; default: every real one)")
    p.add_argument("--rehash", action="store_true", help="verify: hash every file again (ignore the verified stamps)")
    p.set_defaults(func=cli)
