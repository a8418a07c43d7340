"""Readers of users' own cutouts for `deepred predict`; each input yields one `Item` per object, in input
order, so memory does not grow with their number.

- a folder of FITS cutouts (deepred.predict.inputs.folder): one file per band named `<id>_<band>.fits` (separator
  `_`, `-` or `.`; the header's FILTER/BAND keyword, when it names a band, must agree), or one file per
  object `<id>.fits` holding one 2-D image HDU per band (band from FILTER/BAND or EXTNAME) or one 3-D cube
  (bands, H, W) (deepred.predict.inputs.fits);
- an NPY cube (N, bands, H, W), band order from `band_order` (default: the model's), read a block at a
  time (deepred.predict.inputs.npy);
- a catalogue (CSV, Parquet or FITS table) with an id column and either a `file` column (one file per
  object) or `file_<band>` columns (one file per band), read in chunks (deepred.predict.inputs.catalog).

An object that cannot be used (not a FITS image, NaN pixels, a band missing) is an Item with a reason,
not an error; an input unusable as a whole is an InferenceError naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from deepred.contracts.table_io import FITS_SUFFIXES
from deepred.predict.inputs.bands import BAND_KEYWORDS, COMMON_BANDS, match_band, parse_band_map
from deepred.predict.inputs.catalog import (
    CATALOG_SUFFIXES,
    FILE_COLUMNS,
    ID_COLUMNS,
    catalog_count,
    fits_catalog_rows,
    iter_catalog,
)
from deepred.predict.inputs.fits import header_pixel_scale, read_band_fits, read_object_fits, strip_fits_suffix
from deepred.predict.inputs.folder import iter_fits_folder, scan_fits_folder
from deepred.predict.inputs.items import InferenceError, Item, Reject, item_from
from deepred.predict.inputs.npy import checked_ids, iter_npy, npy_count, read_ids

__all__ = [
    "BAND_KEYWORDS", "CATALOG_SUFFIXES", "COMMON_BANDS", "FILE_COLUMNS", "FITS_SUFFIXES", "ID_COLUMNS",
    "InferenceError", "Item", "Reject", "catalog_count", "checked_ids", "header_pixel_scale", "iter_catalog",
    "iter_fits_folder", "iter_npy", "match_band", "npy_count", "open_input", "parse_band_map", "read_band_fits",
    "read_ids", "read_object_fits", "scan_fits_folder",
]


def open_input(path: str | Path, bands: list[str], band_order: list[str] | None = None,
               band_map: dict | None = None, id_column: str | None = None, ids_file: str | Path | None = None,
               unused: set | None = None) -> tuple[Iterator[Item], int | None, str]:
    """(items, number of objects when cheap to know, kind) for a folder, NPY cube, catalogue or FITS file.

    `unused` collects the band files of the folder that the model does not use (for the log)."""
    path = Path(path)
    band_map = band_map or {}
    if not path.exists():
        raise InferenceError(f"{path}: input not found")
    if path.is_dir():
        groups = scan_fits_folder(path, bands, band_map)
        return iter_fits_folder(path, groups, bands, band_order, band_map, unused), len(groups), "fits folder"
    low = path.name.lower()
    if low.endswith(".npy"):
        n = npy_count(path)
        ids = checked_ids(Path(ids_file), n, path) if ids_file else None
        return iter_npy(path, bands, band_order, band_map, ids), n, "npy cube"
    if low.endswith(CATALOG_SUFFIXES):
        return iter_catalog(path, bands, band_order, band_map, id_column), catalog_count(path), "catalogue"
    oid = strip_fits_suffix(path.name)
    if oid is not None:
        n = fits_catalog_rows(path)
        if n is not None:
            return iter_catalog(path, bands, band_order, band_map, id_column), n, "catalogue"
        item = item_from(oid, str(path), lambda: read_object_fits(path, bands, band_order, band_map))
        return iter([item]), 1, "fits file"
    raise InferenceError(
        f"{path}: unknown input type; give a folder of FITS cutouts, an .npy cube, "
        f"or a catalogue (.csv, .parquet, FITS table)"
    )
