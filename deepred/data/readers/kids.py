"""KiDS lens candidates: per-object FITS cutouts, one file per band (u, g, r, i), plus a catalogue
(CSV, Parquet or FITS) with id, RA/Dec, redshift and lens-candidate grade.

Cutout paths follow `cutout_pattern` (default "cutouts/{id}_{band}.fits"), relative to data/raw/{dataset}/.
Each cutout must be a 2-D image of the same size in its primary (or first image) HDU, with finite pixels
and the header keyword `band_keyword` (default FILTER) naming its band; a truncated file, a missing band or
a wrong keyword stops with the file and the object named. Grades: `grades.keep` selects the catalogue rows
used (null: all) and `grades.high_prob` the ones flagged `high_prob_lens` (the KiDS high-probability test set).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError
from deepred.contracts.raw import RawChunk, RawSource, truncation_is_fatal
from deepred.fetch.source_files import read_table, require_columns, source_specs, spec_for, verified

log = logging.getLogger("deepred.readers.kids")

KIDS_BANDS = ["u", "g", "r", "i"]


def read_cutout(path: Path, band: str, band_keyword: str, object_id: str) -> np.ndarray:
    """One band's cutout as float32 (H, W); DataError naming file and object on any problem."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    if not path.is_file():
        raise DataError(f"{path}: object {object_id}: cutout for band {band} missing")
    try:
        with truncation_is_fatal():  # only "File may have been truncated"; other header warnings pass
            with fits.open(path, memmap=False) as hdul:
                hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 2), None)
                if hdu is None:
                    raise DataError(f"{path}: object {object_id}: no 2-D image HDU")
                data = np.asarray(hdu.data, dtype=np.float32)
                header = hdu.header.copy()
                primary = hdul[0].header
    except DataError:
        raise
    except (OSError, ValueError, TypeError, AstropyUserWarning) as exc:
        raise DataError(f"{path}: object {object_id}: unreadable or truncated FITS ({exc})") from exc
    value = header.get(band_keyword, primary.get(band_keyword))
    if value is None:
        raise DataError(f"{path}: object {object_id}: header keyword {band_keyword} missing (needed to check the band)")
    # Survey headers write e.g. "r", "r_SDSS" or "OCAM_r_SDSS": the band letter must be one of the tokens.
    tokens = str(value).replace("-", "_").split("_")
    if band not in tokens and str(value).strip().lower() != band.lower():
        raise DataError(f"{path}: object {object_id}: {band_keyword}={value!r}, expected band {band}")
    return data


def read_kids(raw_dir: str | Path, src: dict, dataset: str = "kids", cutout: int | None = None) -> RawSource:
    raw_dir = Path(raw_dir)
    specs = source_specs(raw_dir, src)
    cat_path = verified(raw_dir, spec_for(specs, src["catalog"], "catalogue", dataset))
    cat = read_table(cat_path)
    cols = {k: src.get(f"{k}_column", d) for k, d in (("id", "ID"), ("ra", "RA"), ("dec", "DEC"), ("z", "z"), ("grade", "grade"))}
    require_columns(cat, list(cols.values()), cat_path)
    bands = list(src.get("bands", KIDS_BANDS))
    pattern = src.get("cutout_pattern", "cutouts/{id}_{band}.fits")
    band_keyword = src.get("band_keyword", "FILTER")
    grades = dict(src.get("grades") or {})
    truth = _candidates(cat, cat_path, cols, grades)
    ids = truth["object_id"]
    paths = [[raw_dir / pattern.format(id=oid, band=b) for b in bands] for oid in ids]
    # Cutouts listed among the pinned files are verified; the others must exist (placed by hand).
    listed = {raw_dir / n for n in specs}
    unpinned = sum(p not in listed for row in paths for p in row)
    if unpinned:
        log.warning("%s: %d cutout files are not pinned by checksum (not in source.files or the manifest)", dataset, unpinned)

    def chunks(rows: int) -> Iterator[RawChunk]:
        for start in range(0, len(truth), rows):
            stop = min(start + rows, len(truth))
            imgs = [_read_object(raw_dir, specs, paths[i], bands, band_keyword, ids.iloc[i], cutout)
                    for i in range(start, stop)]
            yield RawChunk(
                truth=truth.iloc[start:stop].reset_index(drop=True),
                images=np.stack(imgs),
                masks=None,
                origin=str(cat_path),
            )

    log.info("%s: %d candidates (%d high-probability)", dataset, len(truth), int(truth["high_prob_lens"].sum()))
    return RawSource(
        bands=bands,
        pixel_scale=float(src.get("pixel_scale", 0.2)),
        survey=str(src.get("survey", "KiDS")),
        n_objects=len(truth),
        chunks=chunks,
        inputs=[cat_path],
        meta={"kind": "kids", "catalog": src["catalog"], "grades": grades, "cutout_pattern": pattern},
    )


def _candidates(cat: pd.DataFrame, cat_path: Path, cols: dict, grades: dict) -> pd.DataFrame:
    """The truth table of the candidates kept by grades.keep: ids unique, RA/Dec in range, high_prob_lens set."""
    grade = cat[cols["grade"]].astype(str).str.strip()
    keep_grades = grades.get("keep")
    if keep_grades is not None:
        cat = cat[grade.isin([str(g) for g in keep_grades]).to_numpy()].reset_index(drop=True)
        grade = grade[grade.isin([str(g) for g in keep_grades])].reset_index(drop=True)
    if len(cat) == 0:
        raise DataError(f"{cat_path}: no catalogue rows left after the grade selection {keep_grades}")
    ids = cat[cols["id"]].astype(str)
    if ids.duplicated().any():
        raise DataError(f"{cat_path}: duplicate {cols['id']} {ids[ids.duplicated()].iloc[0]!r}")
    ra = pd.to_numeric(cat[cols["ra"]], errors="coerce").to_numpy(float)
    dec = pd.to_numeric(cat[cols["dec"]], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (ra >= 0) & (ra < 360) & (np.abs(dec) <= 90))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{cat_path}: object {ids.iloc[i]}: RA/Dec ({ra[i]}, {dec[i]}) out of range")
    z = pd.to_numeric(cat[cols["z"]], errors="coerce").to_numpy(float)
    high = grade.isin([str(g) for g in grades.get("high_prob", ["A"])]).to_numpy()
    return pd.DataFrame(
        {
            "object_id": ids.to_numpy(),
            "system_id": ids.to_numpy(),
            "obj_class": "lens_candidate",
            "z_lens": z,  # the catalogue redshift of the candidate's lens galaxy (the central object)
            "ra": ra,
            "dec": dec,
            "grade": grade.to_numpy(),
            "high_prob_lens": high,
        }
    )


def _read_object(raw_dir: Path, specs: dict, paths: list[Path], bands: list[str], band_keyword: str,
                 object_id: str, cutout: int | None) -> np.ndarray:
    """One candidate's cutouts as (bands, H, W); pinned files verified first, every band the same shape."""
    planes = []
    for b, p in zip(bands, paths):
        rel = p.relative_to(raw_dir).as_posix()
        if rel in specs:
            verified(raw_dir, specs[rel])
        planes.append(read_cutout(p, b, band_keyword, object_id))
    shapes = {pl.shape for pl in planes}
    if len(shapes) != 1 or (cutout and planes[0].shape != (cutout, cutout)):
        raise DataError(
            f"{paths[0].parent}: object {object_id}: cutout shapes {[pl.shape for pl in planes]} "
            f"for bands {bands}, expected all {(cutout, cutout) if cutout else 'equal'}"
        )
    return np.stack(planes)
