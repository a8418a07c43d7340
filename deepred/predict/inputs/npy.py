"""An NPY cube (N, bands, H, W) of cutouts, band order from --bands (default: the model's), read a block
of rows at a time; object ids from an ids file (one per row, unique) or the row numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from deepred.contracts.raw import read_rows
from deepred.predict.inputs.bands import match_band
from deepred.predict.inputs.catalog import ID_COLUMNS
from deepred.predict.inputs.items import InferenceError, Item


def npy_count(path: Path) -> int:
    return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])


def iter_npy(path: Path, bands: list[str], band_order: list[str] | None, band_map: dict,
             ids: Iterator[str] | None = None, chunk: int = 256) -> Iterator[Item]:
    """Rows of an NPY cube (N, bands, H, W), read `chunk` rows at a time with plain file I/O.

    The cube's shape and bands are checked now (InferenceError), the rows are read as the items are."""
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InferenceError(f"{path}: not a readable NPY array ({exc})") from exc
    if mm.ndim != 4:
        raise InferenceError(f"{path}: array of shape {mm.shape}; expected (N, bands, H, W)")
    order = band_order or bands
    if len(order) != mm.shape[1]:
        raise InferenceError(
            f"{path}: {mm.shape[1]} bands per cutout but the band order has {len(order)} ({', '.join(order)}); "
            "give the cube's band order with --bands"
        )
    idx = {}
    for k, name in enumerate(order):
        b = match_band(name, bands, band_map)
        if b is not None:
            idx[b] = k
    missing = [b for b in bands if b not in idx]
    if missing:
        raise InferenceError(f"{path}: band(s) {', '.join(missing)} missing (cube bands: {', '.join(order)})")
    return _npy_items(path, mm, [idx[b] for b in bands], ids, chunk)


def _npy_items(path: Path, mm: np.ndarray, take: list[int], ids: Iterator[str] | None, chunk: int) -> Iterator[Item]:
    for start in range(0, mm.shape[0], chunk):
        stop = min(start + chunk, mm.shape[0])
        block = read_rows(mm, start, stop)[:, take].astype(np.float32, copy=False)
        for i in range(stop - start):
            oid = next(ids) if ids is not None else str(start + i)
            yield Item(str(oid), f"{path}[{start + i}]", image=block[i])


def read_ids(path: Path) -> Iterator[str]:
    """One object id per line (a header line `object_id`/`id` is skipped; blank lines may only end the file: a
    blank line inside it would shift every later id onto the next row's cutout)."""
    with open(path) as fh:
        lines = [line.strip().split(",")[0].strip() for line in fh]
    while lines and not lines[-1]:
        lines.pop()
    for k, s in enumerate(lines):
        if k == 0 and s.lower() in ID_COLUMNS:
            continue
        if not s:
            raise InferenceError(f"{path}: line {k + 1} is blank; give one id per row of the cube, in order")
        yield s


def checked_ids(ids_file: Path, n: int, cube: Path) -> Iterator[str]:
    """The ids of an NPY cube's rows: exactly one per row and unique, or an InferenceError (a short, long or
    repeating list would put predictions under the wrong names)."""
    if not ids_file.is_file():
        raise InferenceError(f"{ids_file}: ids file not found")
    ids = list(read_ids(ids_file))
    if len(ids) != n:
        raise InferenceError(f"{ids_file}: {len(ids)} ids for the {n} cutouts of {cube}; give exactly one id per row")
    seen: set[str] = set()
    dupes = sorted({i for i in ids if i in seen or seen.add(i)})
    if dupes:
        raise InferenceError(f"{ids_file}: {len(dupes)} duplicate id(s), e.g. {', '.join(dupes[:5])}; ids must be unique")
    return iter(ids)
