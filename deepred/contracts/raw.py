"""Raw sources: what normalization reads, whatever the origin (simulation or a survey download).

A RawSource yields chunks of objects. Readers of real formats (deepred.data.readers) and the simulator's
raw folder (read_simulated) both produce one, so normalization and every later rule are the same.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from deepred.contracts.processed import DataError


@dataclass
class RawChunk:
    truth: pd.DataFrame  # object_id, system_id, obj_class, label columns, optional mag_*, snr, flags
    images: np.ndarray  # float (n, bands, H, W) in the source's band order
    masks: np.ndarray | None  # uint8/bool (n, H, W) true footprint, or None
    origin: str  # file the chunk came from, for error messages


@dataclass
class RawSource:
    bands: list[str]  # band order of the images
    pixel_scale: float  # arcsec per pixel
    survey: str
    n_objects: int
    chunks: Callable[[int], Iterator[RawChunk]]  # chunks(rows) -> iterator over RawChunk
    inputs: list[Path] = field(default_factory=list)  # files whose checksums go into provenance
    meta: dict = field(default_factory=dict)
    # objects the source itself left out before normalization ({object_id, file, reason}; e.g. a cutout too
    # close to an image edge): normalize writes them into rejects.parquet ahead of its own
    rejects: list[dict] = field(default_factory=list)


RAW_SIM_FILES = ("images.npy", "truth.parquet", "meta.json")


def read_rows(mm: np.memmap, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a memory-mapped NPY file, read with plain file I/O.

    Slicing the memmap itself would keep every page touched resident in this process (RSS grows with the
    file); a read into a fresh buffer keeps peak memory at one chunk.
    """
    row_items = int(np.prod(mm.shape[1:]))
    with open(mm.filename, "rb") as fh:
        fh.seek(mm.offset + start * row_items * mm.dtype.itemsize)
        flat = np.fromfile(fh, dtype=mm.dtype, count=(stop - start) * row_items)
    if flat.size != (stop - start) * row_items:
        raise DataError(f"{mm.filename}: truncated (rows {start}-{stop} incomplete)")
    return flat.reshape((stop - start, *mm.shape[1:]))


def read_simulated(raw_dir: str | Path) -> RawSource:
    """The simulator's raw folder: images.npy (N,B,H,W) float32, masks.npy (N,H,W) uint8,
    truth.parquet (one row per object), meta.json (bands, pixel_scale, survey, ...)."""
    raw_dir = Path(raw_dir)
    for name in RAW_SIM_FILES:
        if not (raw_dir / name).exists():
            raise DataError(f"{raw_dir / name}: missing (simulation output incomplete)")
    meta = json.loads((raw_dir / "meta.json").read_text())
    try:
        images = np.load(raw_dir / "images.npy", mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{raw_dir / 'images.npy'}: unreadable NPY file ({exc})") from exc
    if images.ndim != 4 or images.shape[1] != len(meta["bands"]):
        raise DataError(
            f"{raw_dir / 'images.npy'}: images have shape {images.shape}, but {raw_dir / 'meta.json'} lists "
            f"{len(meta['bands'])} bands ({', '.join(meta['bands'])}): expected (N, {len(meta['bands'])}, H, W)"
        )
    masks_path = raw_dir / "masks.npy"
    masks = np.load(masks_path, mmap_mode="r", allow_pickle=False) if masks_path.exists() else None
    truth = pd.read_parquet(raw_dir / "truth.parquet")
    if len(truth) != images.shape[0]:
        raise DataError(
            f"{raw_dir / 'images.npy'}: {images.shape[0]} images but truth.parquet has {len(truth)} rows"
        )
    if masks is not None and masks.shape[0] != images.shape[0]:
        raise DataError(f"{masks_path}: {masks.shape[0]} masks for {images.shape[0]} images")

    def chunks(rows: int) -> Iterator[RawChunk]:
        for start in range(0, images.shape[0], rows):
            stop = min(start + rows, images.shape[0])
            yield RawChunk(
                truth=truth.iloc[start:stop].reset_index(drop=True),
                images=read_rows(images, start, stop),
                masks=None if masks is None else read_rows(masks, start, stop),
                origin=str(raw_dir / "images.npy"),
            )

    inputs = [raw_dir / n for n in (*RAW_SIM_FILES, "masks.npy") if (raw_dir / n).exists()]
    return RawSource(
        bands=list(meta["bands"]),
        pixel_scale=float(meta["pixel_scale"]),
        survey=str(meta["survey"]),
        n_objects=int(images.shape[0]),
        chunks=chunks,
        inputs=inputs,
        meta=meta,
    )


# astropy.io.fits reports a file shorter than its header promises only as a warning ("File may have been
# truncated: actual file length (N) is smaller than the expected size (M)", astropy/io/fits/file.py). That one
# must stop the read; other header-card warnings of real survey files must not (a harmless card would otherwise
# delete and download the file again on every run).
TRUNCATED_FITS = r"File may have been truncated"


@contextlib.contextmanager
def truncation_is_fatal():
    """A context in which astropy's FITS truncation warning is an AstropyUserWarning exception, others pass."""
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=TRUNCATED_FITS, category=AstropyUserWarning)
        yield
