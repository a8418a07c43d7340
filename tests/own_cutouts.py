"""Users' own cutouts written from a processed dataset (FITS per band, MEF, folders) and tiny trained models:
the shared fixtures of the prediction, CLI, qp and RAIL tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from conftest import tiny_config

from deepred.contracts.processed import ProcessedDataset
from deepred.training.train import train_model

BANDS = ["g", "r", "i", "z"]
SCALE = 0.263  # the tiny raw folder's pixel scale (conftest.make_tiny_raw)


def train_tiny(results: Path, processed: Path, models=("photoz", "netz"), epochs=2) -> Path:
    """Real tiny networks: photoz (pdf head) and netz (point head) in results/models/{m}/tiny."""
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=processed.parent.parent, results_dir=results)
    cfg["training"]["epochs"] = epochs
    for m in models:
        train_model(m, "tiny", cfg, processed, results / "models" / m / "tiny")
    return results


def raw_of(processed: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """What a user has: the raw (unscaled) images of the tiny dataset and its truth table."""
    raw = processed.parent.parent / "raw" / processed.name
    return np.load(raw / "images.npy", mmap_mode="r"), pd.read_parquet(raw / "truth.parquet")


def band_header(band: str, scale: float = SCALE, keyword="FILTER", value=None) -> fits.Header:
    h = fits.Header()
    h[keyword] = value if value is not None else f"{band} DECam SDSS c0001 4720.0 1520.0"
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -scale / 3600, 0.0, 0.0, scale / 3600
    return h


def write_band_files(folder: Path, oid: str, image: np.ndarray, bands=BANDS, scale=SCALE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for b, band in enumerate(bands):
        fits.PrimaryHDU(np.asarray(image[b], np.float32), header=band_header(band, scale)).writeto(
            folder / f"{oid}_{band}.fits")


def write_mef(path: Path, image: np.ndarray, bands=BANDS, scale=SCALE, order=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    order = order or list(range(len(bands)))
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(np.asarray(image[k], np.float32), header=band_header(bands[k], scale))
                                  for k in order]
    fits.HDUList(hdus).writeto(path)


SUMMARIES = ("z_pred", "z_mean", "z_median", "z_mode", "z_lo68", "z_hi68")


def write_cutouts(folder: Path, processed: Path, n: int) -> pd.DataFrame:
    """One FITS file per test object (raw flux, as a user has it) and a catalogue of them (relative paths, the
    true redshift as `redshift`); returns the catalogue."""
    images, truth = raw_of(processed)
    rows = ProcessedDataset(processed).split("test").iloc[:n]
    recs = []
    for oid in rows["object_id"]:
        i = int(np.flatnonzero(truth["object_id"] == oid)[0])
        write_mef(folder / "cutouts" / f"{oid}.fits", images[i])
        recs.append({"object_id": oid, "file": f"cutouts/{oid}.fits", "redshift": float(truth["z_lens"][i])})
    return pd.DataFrame(recs)


def noise_cube(folder: Path, n: int = 5) -> Path:
    """An NPY cube (n, 4, 45, 45) of seeded Gaussian noise: n cutouts a tiny model accepts."""
    path = folder / "cube.npy"
    np.save(path, np.random.default_rng(0).normal(size=(n, 4, 45, 45)).astype(np.float32))
    return path
