"""A folder of FITS cutouts: `<id>_<band>.fits` per band (separator `_`, `-` or `.`), `<id>.fits` per
object, or a subfolder per object holding its band files under any names (bands from the headers)."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Iterator

from deepred.contracts.table_io import FITS_SUFFIXES
from deepred.predict.inputs.bands import band_suffix, header_band, match_band
from deepred.predict.inputs.fits import per_band_item, read_object_fits, strip_fits_suffix
from deepred.predict.inputs.items import InferenceError, Item, item_from

log = logging.getLogger("deepred.predict.inputs")

_DIR = "/"  # token marking a per-object subfolder in scan_fits_folder's entries (never a file-name token)


def scan_fits_folder(folder: Path, bands: list[str], band_map: dict) -> list[tuple[str, list]]:
    """[(object id, [(id, band, token, file name), ...]), ...] sorted by id: only names, no pixels."""
    entries = []
    others = 0
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir() and not e.name.startswith("."):
                entries.append((e.name, "", _DIR, e.name))  # one object per subfolder, bands from headers
                continue
            stem = strip_fits_suffix(e.name) if e.is_file() else None
            if stem is None:
                others += not e.name.startswith(".")
                continue
            oid, band, token = band_suffix(stem, bands, band_map)
            entries.append((oid, band or "", token or "", e.name))
    if others:
        log.info("%s: %d entries that are not FITS files (%s) ignored", folder, others, "/".join(FITS_SUFFIXES))
    if not entries:
        raise InferenceError(f"{folder}: no FITS files ({', '.join(FITS_SUFFIXES)})")
    entries.sort()
    return [(oid, list(group)) for oid, group in itertools.groupby(entries, key=lambda e: e[0])]


def iter_fits_folder(folder: Path, groups: list, bands: list[str], band_order: list[str] | None, band_map: dict,
                     unused: set | None = None) -> Iterator[Item]:
    """Objects of a folder of FITS cutouts (groups from scan_fits_folder), in id order."""
    for oid, group in groups:
        if any(g[2] == _DIR for g in group):
            if len(group) > 1:
                yield Item(oid, str(folder / oid), reason="both a subfolder and FITS files for this id")
            else:
                yield _object_dir_item(oid, folder / oid, bands, band_map, unused)
            continue
        per_band = [g for g in group if g[2]]
        whole = [g for g in group if not g[2]]
        if whole and per_band:
            yield Item(oid, str(folder / whole[0][3]),
                       reason=f"both a per-object file and per-band files ({per_band[0][3]}, ...) for this id")
            continue
        if whole:
            path = folder / whole[0][3]
            yield item_from(oid, str(path), lambda p=path: read_object_fits(p, bands, band_order, band_map))
            continue
        yield per_band_item(oid, _band_files(folder, per_band, unused), bands, band_map, folder)


def _band_files(folder: Path, per_band: list, unused: set | None) -> dict:
    """{band: file} of one object's per-band entries (None for a band given twice); unused bands' tokens noted."""
    files = {}
    for _, band, token, name in per_band:
        if not band:
            if unused is not None:
                unused.add(token)
            continue
        if band in files:
            files[band] = None  # duplicate
        else:
            files[band] = folder / name
    return files


def _file_band(path: Path, bands: list[str], band_map: dict) -> str | None:
    """The band a file's headers name (first HDU that names one, up to the first image); OSError etc. pass."""
    from astropy.io import fits

    band = None
    with fits.open(path, memmap=False) as hdul:
        for h in hdul:
            band = header_band(h.header, bands, band_map)[0]
            if band or h.is_image and h.header.get("NAXIS", 0) > 0:
                break
    return band


def _object_dir_item(oid: str, sub: Path, bands: list[str], band_map: dict, unused: set | None) -> Item:
    """A subfolder holding one object's per-band files, any names: the band from FILTER/BAND, else the name."""
    files: dict = {}
    for path in sorted(p for p in sub.iterdir() if p.is_file() and strip_fits_suffix(p.name) is not None):
        try:
            band = _file_band(path, bands, band_map)
        except (OSError, ValueError, TypeError) as exc:
            return Item(oid, str(path), reason=f"not a readable FITS file ({exc})")
        if band is None:
            stem = strip_fits_suffix(path.name)
            band = match_band(stem, bands, band_map) or band_suffix(stem, bands, band_map)[1]
        if band is None:
            if unused is not None and len(unused) < 20:  # a sample for the log, not one entry per object
                unused.add(f"{sub.name}/{path.name}")
            continue
        files[band] = None if band in files else path
    return per_band_item(oid, files, bands, band_map, sub)
