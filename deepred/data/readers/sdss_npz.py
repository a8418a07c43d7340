"""The Pasquet et al. (2019) SDSS file as distributed: one `sdss.npz` holding two NPY members.

What is known of it (sources; the project cannot download the file itself, so each is re-checked at run time):

- members `cube` and `labels`: `cube` float32 (659857, 64, 64, 5), u,g,r,i,z channels last; `labels` a NumPy
  record array, one row per cube row, 64 fields (biprateep/encapZulate-1 docs/data.md, the Dey et al. 2021
  download page pointing at https://deepdip.iap.fr/#item/60ef1e05be2b8ebb048d951d). Checked: the member names,
  4-D channels-last floating cube, a record array of the cube's length.
- label fields `z`, `EBV`, `dered_petro_r`, `specObjID` (biprateep/encapZulate-1
  src/encapzulate/scripts/make_binned_data.py: `np.load("sdss.npz")`, `labels['dered_petro_r']`, `labels['z']`,
  `labels["specObjID"]`); `ra`, `dec`, `primtarget` (a third-party script that loads the same file);
  `z`, `EBV` and `dered_petro_r` again in umesh-timalsina/deepforge-redshift deepforge_redshift/data_loaders.py,
  which cuts `z <= 0.4` and `dered_petro_r <= 17.8`. Checked: every field the reader uses must be there, else a
  DataError lists the fields the file does have. No pickled fields, it seems: a recent (tf.keras 2.6+) script reads
  `labels['z']` with np.load's default allow_pickle=False; a pickled member is refused here.
- `objID`: NOT confirmed. The SQL said to be the authors' (umesh-timalsina/redshift
  redshift/preprocessing/spec_query.sql) selects `objID` and `specObjID`; the reader takes objID if the labels
  have it, else specObjID, else the row index, and says which (log and RawSource.meta["id_from"]).
- compression: NOT confirmed. np.savez stores members uncompressed (ZIP_STORED); such a member is memory-mapped
  at its data offset, nothing loaded. A deflated member (np.savez_compressed) cannot be memory-mapped: it is
  streamed, decompressed front to back one chunk of selected rows at a time (memory: one chunk), which is slower.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepred.contracts.processed import DataError
from deepred.contracts.raw import read_rows

CUBE_MEMBER, LABELS_MEMBER = "cube", "labels"
PASQUET_SELECTION = {"z_max": 0.4, "mag_column": "dered_petro_r", "mag_max": 17.8}  # z < 0.4, r <= 17.8
DEFAULT_ID, ID_FALLBACKS = "objID", ("specObjID",)
SKIP_BYTES = 1 << 20  # a deflated member is skipped forward this much at a time


@dataclass(frozen=True)
class NpyMember:
    """One NPY member of an npz: its header, and where its data start when it is stored uncompressed."""

    path: Path
    name: str  # the member's name inside the zip ("cube.npy")
    shape: tuple
    dtype: np.dtype
    fortran: bool
    offset: int | None  # absolute offset of the array data in the file; None for a compressed member

    @property
    def where(self) -> str:
        return f"{self.path} (member {self.name})"

    @property
    def stored(self) -> bool:
        return self.offset is not None


def open_member(path: str | Path, key: str) -> NpyMember:
    """The member `key` (np.savez's `key.npy`) of the npz at `path`, its NPY header read; nothing else read."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            info = _member_info(zf, key, path)
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as fh:
                    return NpyMember(path, info.filename, *_npy_header(fh, f"{path} (member {info.filename})"), None)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not an .npz (zip) file ({exc})") from exc
    with open(path, "rb") as fh:
        start = _data_start(fh, info, path)
        fh.seek(start)
        shape, dtype, fortran = _npy_header(fh, f"{path} (member {info.filename})")
        offset = fh.tell()
    member = NpyMember(path, info.filename, shape, dtype, fortran, offset)
    if offset - start + _nbytes(member) > info.file_size:
        raise DataError(f"{member.where}: truncated ({info.file_size} bytes hold less than its shape {shape})")
    return member


def _member_info(zf: zipfile.ZipFile, key: str, path: Path) -> zipfile.ZipInfo:
    names = zf.namelist()
    name = f"{key}.npy" if f"{key}.npy" in names else key
    if name not in names:
        held = ", ".join(n.removesuffix(".npy") for n in names) or "nothing"
        raise DataError(f"{path}: no member '{key}' (the npz holds: {held}); expected members cube and labels")
    info = zf.getinfo(name)
    if info.flag_bits & 0x1:
        raise DataError(f"{path}: member {name} is encrypted; decrypt the file first")
    return info


def _data_start(fh, info: zipfile.ZipInfo, path: Path) -> int:
    """Offset of a stored member's bytes: after its local header (30 bytes, then name and extra field)."""
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise DataError(f"{path}: damaged zip (no local header for member {info.filename})")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _npy_header(fh, where: str) -> tuple[tuple, np.dtype, bool]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"NPY format version {version}; this reader knows 1.0 and 2.0")
        shape, fortran, dtype = readers[version](fh)
    except ValueError as exc:
        raise DataError(f"{where}: not a plain NPY array ({exc})") from exc
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects (a pickle); refused")
    return tuple(shape), dtype, bool(fortran)


def _nbytes(m: NpyMember) -> int:
    return int(np.prod(m.shape, dtype=np.int64)) * m.dtype.itemsize


def member_memmap(m: NpyMember) -> np.memmap:
    """A stored member memory-mapped read-only (no byte read until used)."""
    if not m.stored:
        raise DataError(f"{m.where}: compressed, cannot be memory-mapped")
    order = "F" if m.fortran else "C"
    return np.memmap(m.path, dtype=m.dtype, mode="r", offset=m.offset, shape=m.shape, order=order)


def member_array(m: NpyMember) -> np.ndarray:
    """The whole member: memory-mapped when stored, else decompressed into memory (for the small labels)."""
    if m.stored:
        return member_memmap(m)
    with zipfile.ZipFile(m.path) as zf, zf.open(m.name) as fh:
        try:
            return np.lib.format.read_array(fh, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{m.where}: unreadable ({exc})") from exc


def iter_rows(m: NpyMember, rows: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """Rows `rows` (ascending) of a member, `chunk` at a time: (n, *shape[1:]) arrays in m.dtype.

    Stored: plain file reads per run of consecutive rows (read_rows). Compressed: one pass over the
    decompressed stream, skipping rows not asked for; peak memory one chunk either way."""
    if m.stored:
        mm = member_memmap(m)
        for s in range(0, len(rows), chunk):
            yield _join([read_rows(mm, int(r[0]), int(r[-1]) + 1) for r in _runs(rows[s : s + chunk])])
        return
    row_bytes = _nbytes(m) // max(m.shape[0], 1)
    with zipfile.ZipFile(m.path) as zf, zf.open(m.name) as fh:
        _npy_header(fh, m.where)
        pos = 0
        for s in range(0, len(rows), chunk):
            parts = []
            for run in _runs(rows[s : s + chunk]):
                _skip(fh, (int(run[0]) - pos) * row_bytes, m)
                parts.append(_take(fh, len(run), row_bytes, m))
                pos = int(run[-1]) + 1
            yield _join(parts)


def _runs(idx: np.ndarray) -> list[np.ndarray]:
    return np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1) if len(idx) else []


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _skip(fh, nbytes: int, m: NpyMember) -> None:
    while nbytes > 0:
        got = len(fh.read(min(nbytes, SKIP_BYTES)))
        if got == 0:
            raise DataError(f"{m.where}: truncated (the compressed stream ends early)")
        nbytes -= got


def _take(fh, n: int, row_bytes: int, m: NpyMember) -> np.ndarray:
    buf = fh.read(n * row_bytes)
    if len(buf) != n * row_bytes:
        raise DataError(f"{m.where}: truncated (the compressed stream ends early)")
    return np.frombuffer(buf, dtype=m.dtype).reshape(n, *m.shape[1:])


def require_fields(labels: np.ndarray, fields: list[str], where: str, why: str) -> None:
    names = labels.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise DataError(f"{where}: field(s) {', '.join(missing)} missing ({why}); the labels have "
                        f"{', '.join(names) or 'no fields'}")


def selected_rows(labels: np.ndarray, selection: dict | None, z_column: str, where: str) -> np.ndarray:
    """Cube rows kept: z < z_max and mag_column <= mag_max (NaN fails both); every row if selection is None."""
    if selection is None:
        return np.arange(len(labels))
    sel = {**PASQUET_SELECTION, **selection}
    require_fields(labels, [z_column, sel["mag_column"]], where, "needed by source.selection; "
                   "name other fields with z_column / selection.mag_column, or set selection: null")
    z = np.asarray(labels[z_column], dtype=np.float64)
    mag = np.asarray(labels[sel["mag_column"]], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.flatnonzero((z < sel["z_max"]) & (mag <= sel["mag_max"]))


def object_ids(labels: np.ndarray, rows: np.ndarray, id_column: str, where: str) -> tuple[np.ndarray, str]:
    """Ids of the selected rows and where they come from: id_column; for the default objID, when the labels
    lack it, specObjID, else the cube row index ("row<N>")."""
    names = labels.dtype.names or ()
    for field in (id_column, *(ID_FALLBACKS if id_column == DEFAULT_ID else ())):
        if field in names:
            return np.asarray(labels[field])[rows].astype(str), field
    if id_column != DEFAULT_ID:
        require_fields(labels, [id_column], where, "source.id_column")
    return np.char.add("row", rows.astype(str)), "row index"
