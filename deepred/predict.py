"""Predictions in the file contract (docs/contracts.md): one row per object of the val and test splits.

Columns: object_id, split, z_true, z_pred, and for PDF heads z_mean, z_median, z_mode, z_lo68, z_hi68 and
pdf (a list of floats on the grid stored in the Parquet metadata key `deepred_pdf_grid`, a JSON list).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepred.data.contract import DataError, ProcessedDataset
from deepred.io import atomic_path
from deepred.models.checkpoint import TrainedModel, load_trained

log = logging.getLogger("deepred.predict")

PDF_GRID_KEY = "deepred_pdf_grid"
PDF_SUMMARY = ("z_mean", "z_median", "z_mode", "z_lo68", "z_hi68")
CHUNK_ROWS = 2048  # images read and predicted at a time (memory stays flat whatever the dataset size)


def check_compatible(meta: dict, proc: ProcessedDataset, model_dir) -> None:
    """A model only sees data with its bands (same order) and cutout size; say both when not."""
    stats_path = proc.root / "stats.json"
    bands, want = list(proc.stats["bands"]), list(meta["bands"])
    if len(bands) != len(want):
        raise DataError(
            f"{stats_path}: {len(bands)} bands {bands}, but the model {model_dir} takes {len(want)} bands {want}"
        )
    if bands != want:
        raise DataError(f"{stats_path}: bands {bands} differ from the bands {want} of the model {model_dir}")
    if int(proc.stats["cutout"]) != int(meta["cutout"]):
        raise DataError(
            f"{stats_path}: cutouts are {proc.stats['cutout']} px, the model {model_dir} takes {meta['cutout']} px"
        )


def predict_rows(model_dir, processed_dir, rows: pd.DataFrame, trained: TrainedModel | None = None,
                 batch_size: int = 256) -> pd.DataFrame:
    """Predictions of the trained model in model_dir for catalogue rows of processed_dir, in row order.

    The frame's attrs["pdf_grid"] holds the grid for PDF heads (write it with write_predictions).
    """
    trained = trained or load_trained(model_dir)
    proc = ProcessedDataset(processed_dir)
    check_compatible(trained.meta, proc, model_dir)
    label = proc.stats["label_column"]
    parts = []
    for s in range(0, len(rows), CHUNK_ROWS):
        chunk = rows.iloc[s : s + CHUNK_ROWS]
        res = trained.predict(proc.images(chunk), batch_size=batch_size)
        part = pd.DataFrame(
            {
                "object_id": chunk["object_id"].astype("string").to_numpy(),
                "split": chunk["split"].astype("string").to_numpy(),
                "z_true": pd.to_numeric(chunk[label], errors="coerce").to_numpy(dtype=float) if label in chunk
                else np.full(len(chunk), np.nan),
                "z_pred": res["z_pred"].astype(float),
            }
        )
        if trained.head == "pdf":
            for k in PDF_SUMMARY:
                part[k] = res[k].astype(float)
            part["pdf"] = list(res["pdf"].astype(np.float32))
        parts.append(part)
    columns = ["object_id", "split", "z_true", "z_pred"] + (list(PDF_SUMMARY) + ["pdf"] if trained.head == "pdf" else [])
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    out.attrs["pdf_grid"] = None if trained.grid is None else [float(g) for g in trained.grid]
    return out


def write_predictions(path, df: pd.DataFrame, grid=None, meta: dict | None = None) -> None:
    """Write a prediction frame atomically; the PDF grid (if any) goes into the `deepred_pdf_grid` metadata."""
    grid = grid if grid is not None else df.attrs.get("pdf_grid")
    frame = df.copy()
    frame.attrs = {}
    if "pdf" in frame:
        frame["pdf"] = [np.asarray(p, dtype=np.float32).tolist() for p in frame["pdf"]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {}
    if grid is not None:
        extra[PDF_GRID_KEY] = json.dumps([float(g) for g in grid])
    if meta:
        extra["deepred_model"] = json.dumps(meta, sort_keys=True, default=str)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in extra.items()}})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_predictions(path) -> tuple[pd.DataFrame, np.ndarray | None]:
    """(frame, grid or None) of a prediction file."""
    table = pq.read_table(path)
    md = table.schema.metadata or {}
    grid = np.asarray(json.loads(md[PDF_GRID_KEY.encode()]), dtype=float) if PDF_GRID_KEY.encode() in md else None
    return table.to_pandas(), grid


def predict_model(model_dir, processed_dir, out_path, splits=("val", "test")) -> pd.DataFrame:
    """The `predict` rule's job: predictions of one trained model for the val and test rows of a dataset."""
    trained = load_trained(model_dir)
    proc = ProcessedDataset(processed_dir)
    rows = proc.catalog[proc.catalog["split"].isin(list(splits))].reset_index(drop=True)
    out = predict_rows(model_dir, processed_dir, rows, trained=trained)
    write_predictions(out_path, out, meta={"model": trained.meta["model"], "dataset": trained.meta["dataset"],
                                           "model_dir": str(model_dir), "sha256": trained.meta["sha256"]})
    from deepred.train import nmad

    for split in splits:
        sel = out[out["split"] == split]
        if len(sel):
            log.info("%s on %s: %s NMAD %.4f (%d rows)", trained.meta["model"], processed_dir, split,
                     nmad(sel["z_pred"], sel["z_true"]), len(sel))
    return out
