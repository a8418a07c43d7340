"""The photometric features of a processed dataset, measured once (rule `photometry_features`) into
data/processed/{dataset}/photometry.parquet and read by every model that uses them: the photometric baseline, the
DeepRed hybrids, and their prediction and calibration steps.

The file holds one row per catalogue row: object_id, split and the feature columns (deepred.features.photometry's
feature_names, float64). Its Parquet schema metadata (`deepred_features`) records how they were measured (the
measurement settings, bands, the scaling that was inverted, the format version) and the provenance of the code
that measured them (code version, packages, input checksums). `feature_matrix` reads the rows a job asks for,
by object_id; when the file is absent or was measured with other settings it measures the cutouts instead (and
says so), so a model never sees features measured another way than it was trained with.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepred.contracts.processed import FEATURES_FILE, ProcessedDataset
from deepred.core.io import atomic_path
from deepred.core.provenance import provenance
from deepred.features.photometry import (
    FEATURE_CHUNK,
    PhotometryError,
    PhotometryParams,
    feature_names,
    flux_scaling,
    photometry_features,
)

log = logging.getLogger("deepred.features.table")

META_KEY = b"deepred_features"
FORMAT_VERSION = 1
PROGRESS_S = 10.0  # seconds between progress lines


def measurement_record(params: PhotometryParams, bands: list[str], scaling: dict) -> dict:
    """What decides the features' values: compared between the file and the model that reads it."""
    return {"format_version": FORMAT_VERSION, "aperture_radii_px": list(params.radii_px),
            "detect_thresh": params.detect_thresh, "mask_neighbours": params.mask_neighbours,
            "bands": list(bands), "scaling": scaling, "features": feature_names(bands, params)}


def measure_all(ds: ProcessedDataset, rows: pd.DataFrame, params: PhotometryParams, what: str = "") -> np.ndarray:
    """Features (len(rows), n_features) measured on the rows' cutouts, FEATURE_CHUNK at a time, with progress."""
    parts, t0, last = [], time.perf_counter(), time.perf_counter()
    for s in range(0, len(rows), FEATURE_CHUNK):
        parts.append(photometry_features(ds.images(rows.iloc[s:s + FEATURE_CHUNK]), ds.stats["scaling"], params))
        if time.perf_counter() - last > PROGRESS_S:
            last = time.perf_counter()
            log.info("%s photometry: %d/%d cutouts measured (%.0f s)", what, s + len(parts[-1]), len(rows),
                     last - t0)
    n = len(feature_names(ds.bands, params))
    return np.concatenate(parts) if parts else np.empty((0, n))


def write_features(processed_dir: str | Path, cfg: dict, out_path: str | Path, config: dict | None = None) -> Path:
    """Measure every catalogue row of a processed dataset with the baselines.photometry settings `cfg` and write
    the features file (atomically)."""
    ds = ProcessedDataset(processed_dir)
    scaling = flux_scaling(ds.stats, ds.root / "stats.json")
    params = PhotometryParams.from_config(cfg, int(ds.stats["cutout"]))
    rows = ds.catalog
    t0 = time.perf_counter()
    x = measure_all(ds, rows, params, str(processed_dir))
    names = feature_names(ds.bands, params)
    frame = pd.DataFrame(x, columns=names)
    frame.insert(0, "split", rows["split"].astype(str).to_numpy())
    frame.insert(0, "object_id", rows["object_id"].astype(str).to_numpy())
    meta = {**measurement_record(params, ds.bands, scaling), "n_rows": len(frame),
            "seconds": round(time.perf_counter() - t0, 2),
            "provenance": provenance(config, [ds.root / "catalog.parquet", ds.root / "stats.json"])}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with atomic_path(out_path) as tmp:
        pq.write_table(table, tmp)
    log.info("%s: %d cutouts x %d photometric features in %.1f s -> %s", processed_dir, len(frame), len(names),
             meta["seconds"], out_path)
    return Path(out_path)


def read_record(path: str | Path) -> dict:
    """The file's measurement record and provenance; PhotometryError naming the file when it is not one."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise PhotometryError(f"{path}: not a DeepRed photometric features file ({exc})") from exc


def _from_file(path: Path, rows: pd.DataFrame, names: list[str]) -> np.ndarray:
    frame = pd.read_parquet(path, columns=["object_id", *names]).set_index("object_id")
    ids = rows["object_id"].astype(str)
    missing = ids[~ids.isin(frame.index)]
    if len(missing):
        raise PhotometryError(f"{path}: no features for {len(missing)} catalogue rows (e.g. object_id "
                              f"{missing.iloc[0]!r}); rerun the photometry_features job")
    x = frame.loc[ids.to_numpy(), names].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise PhotometryError(f"{path}: {int((~np.isfinite(x)).sum())} non-finite feature values")
    return x


def feature_matrix(ds: ProcessedDataset, rows: pd.DataFrame, params: PhotometryParams) -> np.ndarray:
    """Features of catalogue rows of `ds` (in row order): from the dataset's features file when it was measured
    the same way, else measured on the cutouts now."""
    path = ds.root / FEATURES_FILE
    want = measurement_record(params, ds.bands, ds.stats.get("scaling") or {})
    if path.exists():
        got = {k: v for k, v in read_record(path).items() if k in want}
        if got == want:
            return _from_file(path, rows, want["features"])
        log.info("%s: measured with other settings (%s); measuring %d cutouts again", path,
                 ", ".join(k for k in want if got.get(k) != want[k]), len(rows))
    return measure_all(ds, rows, params, str(ds.root))
