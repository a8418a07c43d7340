"""Safe, streaming extraction of the members a dataset needs from a downloaded (verified) zip archive.

Used for DeepGraviLens' `dataset.zip` (Zenodo record 7860294): the authors' README (GitHub
nicolopinci/deepgravilens, "Data sets and pretrained models") says to put "the content of dataset.zip" into
a `dataset/` folder, and their loader (networks/data_utils.py) reads
`../dataset/{directory}/{class}_{ims|lcs|mds}_{T}.npy`, so members sit at `<subset>/<file>`; a zip that wraps
them in one extra top-level folder (`dataset/<subset>/<file>`) is tolerated too.

Before anything is written the whole central directory is checked, and the archive is refused (ArchiveError,
naming the member) when any member
- has an absolute path (`/x`, `C:...`, `\\x`), a `..` component or a backslash (path traversal);
- is a symlink or another non-regular file (Unix mode in `external_attr >> 16`: S_IFLNK, devices, FIFOs);
- is encrypted, or appears twice under one name;
- declares more than `max_member_bytes` uncompressed, or a compression ratio above `max_ratio` (zip bombs);
and extraction stops before it starts when the needed members do not fit on the disk.

Each needed member is streamed (CHUNK bytes at a time: memory does not grow with the member size) into a
temporary file beside its destination (deepred.core.io.atomic_path), while its CRC-32, SHA-256 and byte count are
computed; the count and CRC must equal the central directory's `file_size` and `CRC` (more bytes than declared
stop the copy at once), and only then is the file renamed into place. Destinations are always
`dest_dir/<configured name>` (never a path taken from the archive) and checked to stay inside dest_dir.

With a lock (deepred.fetch.pins.Lock) every member's SHA-256 is recorded under `<archive>!<member>` (or checked
against the entry already there), so readers verify the extracted bytes, pickles included, against the lock
before using them. A member already in place whose bytes match its lock entry is not extracted again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from deepred.core.io import atomic_path
from deepred.fetch.checksums import CHUNK, DownloadError, write_stamp

log = logging.getLogger("deepred.fetch.archive_zip")

DEFAULT_MAX_MEMBER_BYTES = 64 << 30  # 64 GiB: well above any DeepGraviLens member, far below a zip bomb
DEFAULT_MAX_RATIO = 1000.0  # uncompressed / compressed; float images compress a few times at most


class ArchiveError(DownloadError):
    """The archive is unsafe or corrupt; the message names the archive and the member."""


@dataclass(frozen=True)
class Member:
    name: str  # destination name under dest_dir (from the config)
    info: zipfile.ZipInfo  # the archive member it comes from

    @property
    def member(self) -> str:
        return self.info.filename


def lock_key(archive_name: str, member: str) -> str:
    """The lock entry name of an extracted member: `dataset.zip!des_deep_data/GROUP_1_ims_14.npy`
    (any optional top-level folder of the zip left out, so the key does not depend on it)."""
    return f"{archive_name}!{member}"


def member_key(archive_name: str, folder: str, name: str) -> str:
    """The lock key of configured file `name` extracted from `<folder>/<name>` of an archive."""
    return lock_key(archive_name, "/".join(p for p in (folder.strip("/"), name) if p))


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if not name:
        return "an empty name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if "\\" in name:
        return "a backslash in its path"
    if ".." in PurePosixPath(name).parts:
        return "a '..' component (path traversal)"
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # Unix attributes present
        if stat.S_ISLNK(mode):
            return "a symbolic link"
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and stat.S_IFMT(mode):
            return "a special file (device, FIFO or socket)"
    if info.flag_bits & 0x1:
        return "encryption"
    return None


def check_archive(zf: zipfile.ZipFile, origin: str, *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                  max_ratio: float = DEFAULT_MAX_RATIO) -> list[zipfile.ZipInfo]:
    """Every member's entry, after the safety checks of the module docstring (ArchiveError on the first problem)."""
    infos = zf.infolist()
    seen: set[str] = set()
    for info in infos:
        problem = _unsafe(info)
        if problem:
            raise ArchiveError(f"{origin}: member {info.filename!r} has {problem}; refusing the archive (nothing extracted)")
        if info.filename in seen:
            raise ArchiveError(f"{origin}: member {info.filename!r} appears twice; refusing the archive (nothing extracted)")
        seen.add(info.filename)
        if info.is_dir():
            continue
        if info.file_size > max_member_bytes:
            raise ArchiveError(
                f"{origin}: member {info.filename!r} would expand to {info.file_size} bytes, above the bound of "
                f"{max_member_bytes} (archive.max_member_gb); refusing the archive (nothing extracted)"
            )
        if info.file_size > (1 << 20) and info.file_size > max_ratio * max(info.compress_size, 1):
            raise ArchiveError(
                f"{origin}: member {info.filename!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"({info.compress_size} -> {info.file_size} bytes), above the bound of {max_ratio:.0f}x (a zip bomb?); "
                "refusing the archive (nothing extracted)"
            )
    return infos


def find_members(infos: list[zipfile.ZipInfo], folder: str, names: list[str], origin: str) -> list[Member]:
    """The members `<folder>/<name>` for each configured name, under the zip's root or under one optional
    top-level folder (the same one for all)."""
    files = {i.filename: i for i in infos if not i.is_dir()}
    folder = folder.strip("/")

    def path(prefix: str, name: str) -> str:
        return "/".join(p for p in (prefix, folder, name) if p)

    prefixes = [""] + sorted({n.split("/", 1)[0] for n in files if "/" in n})
    for prefix in prefixes:
        if all(path(prefix, n) in files for n in names):
            return [Member(n, files[path(prefix, n)]) for n in names]
    # Name what is missing under the most plausible root (the one that holds most of them).
    best = max(prefixes, key=lambda p: sum(path(p, n) in files for n in names))
    missing = [path(best, n) for n in names if path(best, n) not in files]
    listing = ", ".join(sorted({n.rsplit("/", 1)[0] + "/" for n in files if "/" in n})[:8]) or "no folders"
    raise ArchiveError(
        f"{origin}: member(s) {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} not in the archive "
        f"(its folders: {listing})"
    )


def _dest(dest_dir: Path, name: str) -> Path:
    root = dest_dir.resolve()
    dest = (root / name).resolve()
    if root not in dest.parents:
        raise ArchiveError(f"{name!r}: destination {dest} is outside {root}")
    return dest


def _copy_member(zf: zipfile.ZipFile, m: Member, dest: Path, origin: str) -> dict:
    """Stream one member into dest (atomic); CRC-32, size and SHA-256 checked/computed on the way."""
    info = m.info
    crc, n, sha = 0, 0, hashlib.sha256()
    where = f"{origin}: member {info.filename!r}"
    with atomic_path(dest) as tmp:
        try:
            with zf.open(info) as src, open(tmp, "wb") as out:
                while block := src.read(CHUNK):
                    n += len(block)
                    if n > info.file_size:
                        raise ArchiveError(f"{where}: more than the {info.file_size} bytes the directory declares; refused")
                    crc = zlib.crc32(block, crc)
                    sha.update(block)
                    out.write(block)
        except zipfile.BadZipFile as exc:  # zipfile's own CRC / header checks
            raise ArchiveError(f"{where}: corrupt ({exc}); nothing of it was kept") from exc
        except (zlib.error, EOFError) as exc:
            raise ArchiveError(f"{where}: corrupt compressed data ({exc}); nothing of it was kept") from exc
        if n != info.file_size:
            raise ArchiveError(f"{where}: {n} bytes, the directory declares {info.file_size}; nothing of it was kept")
        if crc != info.CRC:
            raise ArchiveError(f"{where}: CRC-32 {crc:08x}, the directory declares {info.CRC:08x}; nothing of it was kept")
    sums = {"sha256": sha.hexdigest()}
    write_stamp(dest, sums)  # the lock check below reads these sums instead of hashing the file again
    return {"size": n, "crc32": f"{crc:08x}", "sha256": sums["sha256"]}


def extract_members(archive: str | Path, folder: str, names: list[str], dest_dir: str | Path, *, lock=None,
                    archive_name: str | None = None, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                    max_ratio: float = DEFAULT_MAX_RATIO) -> dict[str, dict]:
    """Extract `<folder>/<name>` for every name into dest_dir/<name>; return name -> {member, size, sha256,
    extracted}. `archive` must already be verified (deepred.fetch.download / deepred.fetch.pins)."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    archive_name = archive_name or archive.name
    origin = str(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{origin}: not a readable zip archive ({exc})") from exc
    report: dict[str, dict] = {}
    with zf:
        infos = check_archive(zf, origin, max_member_bytes=max_member_bytes, max_ratio=max_ratio)
        members = find_members(infos, folder, names, origin)
        dest_dir.mkdir(parents=True, exist_ok=True)
        todo = []
        for m in members:
            dest = _dest(dest_dir, m.name)
            key = member_key(archive_name, folder, m.name)
            entry = lock.get(key) if lock is not None else None
            if dest.is_file() and entry is not None and dest.stat().st_size == m.info.file_size:
                try:
                    lock.verify(key, dest)
                    report[m.name] = {"member": m.member, "size": m.info.file_size, "sha256": entry["sha256"],
                                      "extracted": False}
                    log.info("%s: in place and verified against %s; not extracted again", dest, lock.path)
                    continue
                except DownloadError:
                    log.warning("%s: does not match its lock entry; extracting it again", dest)
            todo.append((m, dest, key))
        need = sum(m.info.file_size for m, _, _ in todo)
        free = shutil.disk_usage(dest_dir).free
        if need > free:
            raise ArchiveError(f"{origin}: the members need {need} bytes, but {dest_dir} has {free} free; nothing extracted")
        for m, dest, key in todo:
            rec = _copy_member(zf, m, dest, origin)
            if lock is not None:
                try:
                    lock.verify_or_record(key, dest, source=f"member of {archive_name} (CRC-32 {rec['crc32']} checked)")
                except DownloadError:
                    dest.unlink(missing_ok=True)
                    raise
            log.info("%s: extracted %s (%d bytes, CRC-32 and size checked)", dest, m.member, rec["size"])
            report[m.name] = {"member": m.member, "size": rec["size"], "sha256": rec["sha256"], "extracted": True}
    return report
