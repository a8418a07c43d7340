"""A catalogue (CSV, Parquet or FITS table) of cutout files: an id column and either a `file` column (one
FITS file per object) or `file_<band>` columns (one per band); relative paths are taken from the
catalogue's folder. It is read `chunk` rows at a time, so memory does not grow with its length."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepred.contracts.table_io import PARQUET_SUFFIXES, fits_table_hdu, native_column, table_format
from deepred.predict.inputs.bands import match_band
from deepred.predict.inputs.fits import per_band_item, read_object_fits
from deepred.predict.inputs.items import InferenceError, Item, item_from

log = logging.getLogger("deepred.predict.inputs")

CATALOG_SUFFIXES = (".csv",) + PARQUET_SUFFIXES  # FITS tables are told from FITS images by their HDUs
ID_COLUMNS = ("object_id", "id", "objid", "obj_id", "name")
FILE_COLUMNS = ("file", "path", "filename")
_NO_TABLE = "no table HDU (a FITS catalogue needs a binary table)"


def fits_catalog_rows(path: Path) -> int | None:
    """Rows of a FITS file's first table when it holds a table and no image (a catalogue), else None."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=True) as hdul:
            table = fits_table_hdu(hdul)
            if table is None or any(h.is_image and h.header.get("NAXIS", 0) > 0 for h in hdul):
                return None
            return int(table.header.get("NAXIS2", 0))
    except (OSError, ValueError) as exc:
        raise InferenceError(f"{path}: not a readable FITS file ({exc})") from exc


def catalog_count(path: Path) -> int | None:
    """Rows of a CSV or Parquet catalogue without reading them; None for FITS."""
    kind = table_format(path)
    if kind == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if kind == "csv":
        with open(path, "rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    return None


def _catalog_columns(path: Path) -> list[str]:
    kind = table_format(path)
    try:
        if kind == "csv":
            return list(pd.read_csv(path, nrows=0).columns)
        if kind == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            table = fits_table_hdu(hdul)
            if table is None:
                raise InferenceError(f"{path}: {_NO_TABLE}")
            return list(table.columns.names)
    except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as exc:
        if isinstance(exc, InferenceError):
            raise
        raise InferenceError(f"{path}: unreadable catalogue ({exc})") from exc


def _catalog_chunks(path: Path, chunk: int) -> Iterator[pd.DataFrame]:
    kind = table_format(path)
    if kind == "csv":
        yield from pd.read_csv(path, chunksize=chunk, dtype=str, keep_default_na=False)
    elif kind == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            yield batch.to_pandas()
    else:
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            table = fits_table_hdu(hdul)
            if table is None:
                raise InferenceError(f"{path}: {_NO_TABLE}")
            for start in range(0, len(table.data), chunk):
                rows = table.data[start:start + chunk]
                yield pd.DataFrame({c: native_column(rows[c], strip=True) for c in table.columns.names})


def _catalog_layout(columns, bands, band_map, id_column, path) -> tuple[str, str | None, dict]:
    """(id column, per-object file column or None, {band: per-band file column}), checked against the bands."""
    cols = {c.lower(): c for c in columns}
    if id_column:
        if id_column not in columns:
            raise InferenceError(f"{path}: no id column '{id_column}'; columns: {', '.join(columns)}")
        idc = id_column
    else:
        idc = next((cols[c] for c in ID_COLUMNS if c in cols), None)
        if idc is None:
            raise InferenceError(f"{path}: no id column (one of {', '.join(ID_COLUMNS)}, or --id-column); "
                                 f"columns: {', '.join(columns)}")
    filec = next((cols[c] for c in FILE_COLUMNS if c in cols), None)
    per_band = {}
    for c in columns:
        m = re.match(r"^(?:file|path|filename)[_\-](.+)$", c, flags=re.I)
        if m:
            b = match_band(m.group(1), bands, band_map)
            if b is not None:
                per_band[b] = c
    if filec is None and not per_band:
        raise InferenceError(
            f"{path}: no cutout column: need 'file' (one FITS file per object) or 'file_<band>' columns "
            f"({', '.join('file_' + b for b in bands)}); columns: {', '.join(columns)}"
        )
    if filec is None:
        missing = [b for b in bands if b not in per_band]
        if missing:
            raise InferenceError(
                f"{path}: band(s) {', '.join(missing)} missing: no column "
                f"{', '.join('file_' + b for b in missing)} (have {', '.join(per_band.values())})"
            )
    return idc, filec, per_band


def iter_catalog(path: Path, bands: list[str], band_order: list[str] | None, band_map: dict,
                 id_column: str | None = None, chunk: int = 1024) -> Iterator[Item]:
    """Objects of a catalogue pointing at FITS cutouts, read `chunk` rows at a time.

    The columns are checked now (InferenceError naming the missing band column), the rows as items are read."""
    layout = _catalog_layout(_catalog_columns(path), bands, band_map, id_column, path)
    return _catalog_items(path, layout, bands, band_order, band_map, chunk)


def frame_items(rows: pd.DataFrame, where: Path, bands: list[str], band_order: list[str] | None, band_map: dict,
                id_column: str | None = None) -> Iterator[Item]:
    """Objects of catalogue rows already in memory (a RAIL input chunk, deepred.predict.rail), read as a catalogue file
    `where` would be: relative paths from its folder. The columns are checked now, the rows as items are read."""
    layout = _catalog_layout(list(rows.columns), bands, band_map, id_column, where)
    return (_row_item(where, rec, layout, bands, band_order, band_map) for rec in rows.to_dict("records"))


def _catalog_items(path, layout, bands, band_order, band_map, chunk) -> Iterator[Item]:
    n = 0
    for df in _catalog_chunks(path, chunk):
        n += len(df)
        for rec in df.to_dict("records"):
            yield _row_item(path, rec, layout, bands, band_order, band_map)
    if n == 0:
        log.warning("%s: the catalogue has no rows", path)


def _row_item(path: Path, rec: dict, layout, bands, band_order, band_map) -> Item:
    """The item of one catalogue row: its per-object file, or its per-band files."""
    base = path.parent
    idc, filec, per_band = layout
    oid = str(rec[idc])
    if filec is not None:
        p = _resolve(base, rec[filec])
        if p is None:
            return Item(oid, str(path), reason=f"empty '{filec}' entry in the catalogue")
        return item_from(oid, str(p), lambda: read_object_fits(p, bands, band_order, band_map))
    empty = [b for b in bands if _resolve(base, rec[per_band[b]]) is None]
    if empty:
        return Item(oid, str(path), reason=f"band(s) {', '.join(empty)} missing: empty "
                    f"{', '.join(per_band[b] for b in empty)} in the catalogue")
    files = {b: _resolve(base, rec[per_band[b]]) for b in bands}
    return per_band_item(oid, files, bands, band_map, path)


def _resolve(base: Path, value) -> Path | None:
    """The file a catalogue cell names (relative to the catalogue's folder), or None for an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    p = Path(str(value).strip()).expanduser()
    return p if p.is_absolute() else base / p
