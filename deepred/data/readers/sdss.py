"""SDSS in the Pasquet et al. (2019) form: one image cube (N, 64, 64, 5) u,g,r,i,z, channels last, plus a
label table (CSV, Parquet or FITS) with one row per cube row: spectroscopic redshift and E(B-V). Or the file as
the authors distribute it, `cube: sdss.npz` (members cube and labels, a record array), read with the paper's
selection (deepred.data.readers.sdss_npz says what is known of that file, and where from).

The cube is read a chunk at a time with plain file reads (never a whole-cube array, never a growing
memory map), so normalizing 600k galaxies needs the memory of a few shards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError
from deepred.contracts.raw import RawChunk, RawSource, read_rows
from deepred.data.readers import sdss_npz as npz
from deepred.fetch.source_files import read_table, require_columns, source_specs, spec_for, verified

log = logging.getLogger("deepred.readers.sdss")

SDSS_BANDS = ["u", "g", "r", "i", "z"]


def read_sdss(raw_dir: str | Path, src: dict, dataset: str = "sdss") -> RawSource:
    raw_dir = Path(raw_dir)
    specs = source_specs(raw_dir, src)
    cube_path = verified(raw_dir, spec_for(specs, src["cube"], "cube", dataset))
    if cube_path.suffix == ".npz":
        return _read_npz(cube_path, src, dataset)
    label_path = verified(raw_dir, spec_for(specs, src["labels"], "label table", dataset))
    bands = list(src.get("bands", SDSS_BANDS))
    cube = _open_cube(cube_path, bands)
    shape = cube.shape
    truth = _galaxies(read_table(label_path), label_path, src, shape[0], cube_path)

    def chunks(rows: int) -> Iterator[RawChunk]:
        for start in range(0, shape[0], rows):
            stop = min(start + rows, shape[0])
            block = read_rows(cube, start, stop)  # (n, H, W, bands)
            yield RawChunk(
                truth=truth.iloc[start:stop].reset_index(drop=True),
                images=np.ascontiguousarray(block.transpose(0, 3, 1, 2), dtype=np.float32),
                masks=None,
                origin=str(cube_path),
            )

    log.info("%s: %d galaxies, cube %s", dataset, shape[0], shape)
    return RawSource(
        bands=bands,
        pixel_scale=float(src.get("pixel_scale", 0.396)),
        survey=str(src.get("survey", "SDSS")),
        n_objects=int(shape[0]),
        chunks=chunks,
        inputs=[cube_path, label_path],
        meta={"kind": "sdss", "cube": src["cube"], "labels": src["labels"], "cube_shape": list(shape)},
    )


def _read_npz(path: Path, src: dict, dataset: str) -> RawSource:
    """`cube: <file>.npz` without `labels`: the authors' sdss.npz, selected from its own label columns."""
    bands = list(src.get("bands", SDSS_BANDS))
    cube = npz.open_member(path, npz.CUBE_MEMBER)
    _check_layout(cube.shape, cube.dtype, cube.fortran, cube.where, bands)
    lab = npz.open_member(path, npz.LABELS_MEMBER)
    labels = npz.member_array(lab)
    if labels.dtype.names is None or labels.ndim != 1 or len(labels) != cube.shape[0]:
        raise DataError(f"{lab.where}: {labels.dtype} array of shape {labels.shape}, expected a record array "
                        f"of {cube.shape[0]} rows (one per cube row) with fields such as z, EBV, dered_petro_r")
    selection = src.get("selection", {})
    rows = npz.selected_rows(labels, selection, src.get("z_column", "z"), lab.where)
    truth, id_from = _npz_truth(labels, rows, src, lab.where, cube.where)

    def chunks(n: int) -> Iterator[RawChunk]:
        for start, block in zip(range(0, len(rows), n), npz.iter_rows(cube, rows, n)):
            yield RawChunk(
                truth=truth.iloc[start : start + len(block)].reset_index(drop=True),
                images=np.ascontiguousarray(block.transpose(0, 3, 1, 2), dtype=np.float32),
                masks=None,
                origin=str(path),
            )

    access = "memory-mapped" if cube.stored else "streamed (deflated member: slower, one pass per read)"
    log.info("%s: %d of %d galaxies selected from %s (cube %s, %s; object_id from %s)", dataset, len(rows),
             cube.shape[0], path, cube.shape, access, id_from)
    meta = {"kind": "sdss", "cube": src["cube"], "layout": "npz", "cube_shape": list(cube.shape),
            "cube_access": access, "n_rows": int(cube.shape[0]), "n_selected": len(rows), "id_from": id_from,
            "selection": None if selection is None else {**npz.PASQUET_SELECTION, **selection}}
    return RawSource(bands=bands, pixel_scale=float(src.get("pixel_scale", 0.396)), survey=str(src.get("survey", "SDSS")),
                     n_objects=len(rows), chunks=chunks, inputs=[path], meta=meta)


def _npz_truth(labels: np.ndarray, rows: np.ndarray, src: dict, where: str, cube_where: str):
    """The truth table of the selected rows (through _galaxies' checks) and the field the ids come from."""
    z_col, ebv_col = src.get("z_column", "z"), src.get("ebv_column", "EBV")
    npz.require_fields(labels, [z_col, ebv_col], where, "source.z_column / source.ebv_column")
    ids, id_from = npz.object_ids(labels, rows, src.get("id_column", npz.DEFAULT_ID), where)
    frame = pd.DataFrame({id_from: ids, z_col: np.asarray(labels[z_col])[rows], ebv_col: np.asarray(labels[ebv_col])[rows]})
    cols = {"id_column": id_from, "z_column": z_col, "ebv_column": ebv_col}
    return _galaxies(frame, Path(where), cols, len(rows), Path(cube_where)), id_from


def _open_cube(cube_path: Path, bands: list[str]) -> np.ndarray:
    """The cube memory-mapped, checked: 4-D (N, H, H, bands) channels last, floating point, C order."""
    try:
        cube = np.load(cube_path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{cube_path}: not a plain NPY array ({exc})") from exc
    _check_layout(cube.shape, cube.dtype, cube.flags.f_contiguous and not cube.flags.c_contiguous, cube_path, bands)
    return cube


def _check_layout(shape: tuple, dtype: np.dtype, fortran: bool, where, bands: list[str]) -> None:
    """4-D (N, H, H, bands) channels last, floating point, C order; a DataError naming `where` otherwise."""
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != len(bands):
        hint = " (channels first? the Pasquet form is channels last)" if len(shape) == 4 and shape[1] == len(bands) else ""
        raise DataError(f"{where}: cube has shape {shape}, expected (N, H, H, {len(bands)}) for bands {bands}{hint}")
    if dtype.kind != "f":
        raise DataError(f"{where}: cube dtype {dtype}, expected floating point")
    if fortran:
        raise DataError(f"{where}: Fortran-ordered cube; re-save it in C order")


def _galaxies(labels: pd.DataFrame, label_path: Path, src: dict, n_images: int, cube_path: Path) -> pd.DataFrame:
    """The truth table from the label table: one row per cube row, ids unique, E(B-V) finite and >= 0."""
    id_col, z_col, ebv_col = src.get("id_column", "objID"), src.get("z_column", "z"), src.get("ebv_column", "EBV")
    require_columns(labels, [id_col, z_col, ebv_col], label_path)
    if len(labels) != n_images:
        raise DataError(f"{label_path}: {len(labels)} label rows for {n_images} images in {cube_path}")
    ids = labels[id_col].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"{label_path}: duplicate {id_col} {dup.iloc[0]!r} ({len(dup)} duplicates)")
    z = pd.to_numeric(labels[z_col], errors="coerce").to_numpy(float)
    truth = pd.DataFrame(
        {
            "object_id": ids.to_numpy(),
            "system_id": ids.to_numpy(),  # one galaxy, one image: no copies to keep together
            "obj_class": "galaxy",
            "z_lens": z,  # the galaxy's redshift (label_column z_lens, as for simulated SDSS)
            "z_spec": z,
            "ebv": pd.to_numeric(labels[ebv_col], errors="coerce").to_numpy(float),
        }
    )
    bad_ebv = ~np.isfinite(truth["ebv"].to_numpy()) | (truth["ebv"].to_numpy() < 0)
    if bad_ebv.any():
        i = int(np.flatnonzero(bad_ebv)[0])
        raise DataError(f"{label_path}: object {ids.iloc[i]}: E(B-V) {labels[ebv_col].iloc[i]!r} is not a finite value >= 0")
    return truth
