"""Tables by file name: CSV, Parquet or a FITS table (first table HDU).

Shared by the survey readers (deepred.data.readers: whole label tables) and the catalogues of users'
cutouts (deepred.predict.inputs: read in chunks), so both agree on which names are which format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: Path) -> str | None:
    """'csv', 'parquet' or 'fits' from the file name; None for any other name."""
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    return None


def fits_table_hdu(hdul):
    """The first table HDU (binary or ASCII) of an open FITS file, or None."""
    from astropy.io import fits

    return next((h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)


def native_column(values, strip: bool = False) -> np.ndarray:
    """A FITS column as pandas wants it: bytes decoded and numbers in native byte order (big-endian
    columns upset pandas); with `strip`, strings as stripped str (ids and file names of a catalogue)."""
    a = np.asarray(values)
    if strip and a.dtype.kind in "SU":
        return np.char.strip(a.astype(str))
    if a.dtype.kind == "S":
        return np.char.decode(a, "ascii").astype(object)
    return a.astype(a.dtype.newbyteorder("="), copy=False)


def read_table(path: Path) -> pd.DataFrame:
    """A whole label/catalogue table: .csv, .parquet/.pq or FITS (first table HDU)."""
    kind = table_format(path)
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "fits":
            from astropy.table import Table

            t = Table.read(path)
            return pd.DataFrame({c: native_column(t[c]) for c in t.colnames if t[c].ndim == 1})
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable table ({exc})") from exc
    raise DataError(f"{path}: unknown table format (use .csv, .parquet or .fits)")
