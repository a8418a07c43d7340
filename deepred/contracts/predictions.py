"""Prediction files (docs/contracts.md): the frame every model kind writes, its writer and its reader.

Columns: object_id, split, z_true, z_pred, and for models with PDFs z_mean, z_median, z_mode, z_lo68, z_hi68 and
pdf (a list of float32 on the grid stored in the Parquet metadata key `deepred_pdf_grid`, a JSON list). A model
with a calibration (deepred.pdfs.calibration) gives the calibrated PDF and its summaries there, the uncalibrated PDF
in pdf_uncalibrated (same grid) for the before/after tables; z_pred is the model's point estimate either way.
Optional metadata `deepred_model`: a JSON record of the model that made the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepred.contracts.processed import DataError
from deepred.core.io import atomic_path
from deepred.core.metrics import grid_edges

PRED_COLUMNS = ("object_id", "split", "z_true", "z_pred")
PDF_SUMMARY = ("z_mean", "z_median", "z_mode", "z_lo68", "z_hi68")
PDF_UNCALIBRATED = "pdf_uncalibrated"  # the PDF before calibration (pipeline prediction files)
PDF_GRID_KEY = "deepred_pdf_grid"
MODEL_KEY = "deepred_model"


def pdf_quantiles(pdf: np.ndarray, grid: np.ndarray, qs) -> np.ndarray:
    """Quantiles (N, len(qs)) of histogram PDFs: bin mass spread uniformly between its edges
    (deepred.core.metrics' convention, so PIT/CRPS and these summaries agree)."""
    edges = grid_edges(grid)
    cdf = np.concatenate([np.zeros((pdf.shape[0], 1)), np.cumsum(pdf, axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    out = np.empty((pdf.shape[0], len(qs)))
    for j, q in enumerate(qs):
        i = np.clip((cdf < q).sum(axis=1) - 1, 0, len(grid) - 1)  # bin where the CDF reaches q
        c0 = cdf[np.arange(len(i)), i]
        c1 = cdf[np.arange(len(i)), i + 1]
        frac = np.where(c1 > c0, (q - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.5)
        out[:, j] = edges[i] + np.clip(frac, 0, 1) * (edges[i + 1] - edges[i])
    return out


def pdf_summary(pdf: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, median, mode and the 68% central interval of each PDF row."""
    q = pdf_quantiles(pdf, grid, (0.16, 0.5, 0.84))
    return {
        "z_mean": pdf @ grid,
        "z_median": q[:, 1],
        "z_mode": grid[np.argmax(pdf, axis=1)],
        "z_lo68": q[:, 0],
        "z_hi68": q[:, 2],
    }


def prediction_columns(pdf: bool) -> list[str]:
    return list(PRED_COLUMNS) + (list(PDF_SUMMARY) + ["pdf"] if pdf else [])


def output_columns(res: dict, summaries: bool, pdf: bool) -> dict:
    """A model's outputs `res` as the contract's columns: z_pred (float64), with `summaries` the PDF_SUMMARY
    columns, with `pdf` the PDFs as float32 lists (deepred predict writes the lists only when asked)."""
    columns = {"z_pred": np.asarray(res["z_pred"], dtype=np.float64).reshape(-1)}
    if summaries:
        columns.update({k: np.asarray(res[k], dtype=np.float64).reshape(-1) for k in PDF_SUMMARY})
    if pdf:
        columns["pdf"] = list(np.asarray(res["pdf"], dtype=np.float32))
        if PDF_UNCALIBRATED in res:
            columns[PDF_UNCALIBRATED] = list(np.asarray(res[PDF_UNCALIBRATED], dtype=np.float32))
    return columns


def prediction_frame(rows: pd.DataFrame, label: str, res: dict, pdf: bool) -> pd.DataFrame:
    """The contract's frame for catalogue `rows` (object_id, split, the `label` column) and a model's outputs
    `res` ({z_pred} or, with PDFs, also the PDF_SUMMARY columns, pdf and, if calibrated, pdf_uncalibrated).
    A missing label gives NaN z_true."""
    z_true = (pd.to_numeric(rows[label], errors="coerce").to_numpy(dtype=float) if label in rows
              else np.full(len(rows), np.nan))
    return pd.DataFrame({
        "object_id": rows["object_id"].astype("string").to_numpy(),
        "split": rows["split"].astype("string").to_numpy(),
        "z_true": z_true,
        **output_columns(res, summaries=pdf, pdf=pdf),
    })


def write_predictions(path, df: pd.DataFrame, grid=None, meta: dict | None = None) -> None:
    """Write a prediction frame atomically; the PDF grid (if any, else df.attrs["pdf_grid"]) and the model
    record `meta` go into the Parquet metadata."""
    grid = grid if grid is not None else df.attrs.get("pdf_grid")
    frame = df.copy()
    frame.attrs = {}
    for col in ("pdf", PDF_UNCALIBRATED):
        if col in frame:
            frame[col] = [np.asarray(p, dtype=np.float32).tolist() for p in frame[col]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {}
    if grid is not None:
        extra[PDF_GRID_KEY] = json.dumps([float(g) for g in grid])
    if meta:
        extra[MODEL_KEY] = json.dumps(meta, sort_keys=True, default=str)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           **{k.encode(): v.encode() for k, v in extra.items()}})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_predictions(path) -> tuple[pd.DataFrame, np.ndarray | None]:
    """(frame, PDF grid or None) of a prediction file, checked against the contract: the file is there and
    readable, has the contract's columns, each object once, and a grid when it has PDFs."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"{path}: prediction file missing") from None
    except Exception as exc:  # a truncated or foreign file: name it
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    df = table.to_pandas()
    missing = [c for c in PRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; the prediction contract needs {list(PRED_COLUMNS)}")
    dup = df["object_id"].duplicated()
    if dup.any():
        raise DataError(f"{path}: object_id '{df.loc[dup, 'object_id'].iloc[0]}' appears more than once")
    md = table.schema.metadata or {}
    grid = np.asarray(json.loads(md[PDF_GRID_KEY.encode()]), dtype=float) if PDF_GRID_KEY.encode() in md else None
    if "pdf" in df.columns and grid is None:
        raise DataError(f"{path}: has a 'pdf' column but no '{PDF_GRID_KEY}' grid in its metadata")
    return df, grid


def pdf_matrix(frame: pd.DataFrame, grid: np.ndarray, path, column: str = "pdf") -> np.ndarray:
    """(rows, bins) float64 PDFs of a prediction frame (`column`: pdf or pdf_uncalibrated), each checked to have
    one value per grid point."""
    lengths = frame[column].map(len).to_numpy()
    if np.any(lengths != len(grid)):
        raise DataError(f"{path}: {column} lists have {sorted(set(lengths.tolist()))} entries, the grid has "
                        f"{len(grid)}")
    return np.stack(frame[column].to_numpy()).astype(float)


def test_set_predictions(path: str | Path, test_rows: pd.DataFrame, catalog: pd.DataFrame, label_column: str):
    """The test-set rows of one prediction file (deepred.contracts.predictions.read_predictions checks the file and its
    columns), in test_rows' order, checked against the catalogue.

    Returns (frame, grid): grid is the PDF grid, or None for point-estimate models."""
    df, grid = read_predictions(path)
    # plain object arrays: isin on Arrow-backed strings is slow (a Python loop per call)
    ids = pd.Index(df["object_id"].astype(str).to_numpy(dtype=object))
    unknown = ~ids.isin(pd.Index(catalog["object_id"].astype(str).to_numpy(dtype=object)))
    if unknown.any():
        ex = ", ".join(map(str, df.loc[unknown, "object_id"].head(3)))
        raise DataError(f"{path}: {int(unknown.sum())} object ids absent from the catalogue (e.g. {ex})")
    df["object_id"] = ids
    test = df[(df["split"] == "test").to_numpy()].set_index("object_id")
    want = test_rows["object_id"].astype(str).to_numpy(dtype=object)
    absent = ~pd.Index(want).isin(test.index)
    if absent.any():
        ex = ", ".join(map(str, test_rows.loc[absent, "object_id"].head(3)))
        raise DataError(f"{path}: {int(absent.sum())} test objects have no test prediction (e.g. {ex})")
    sel = test.loc[want].reset_index()
    for col in ("z_pred", "z_true"):
        bad = ~np.isfinite(sel[col].to_numpy(dtype=float))
        if bad.any():
            raise DataError(f"{path}: {int(bad.sum())} NaN/inf values in '{col}' (e.g. object {sel.loc[bad, 'object_id'].iloc[0]})")
    truth = test_rows[label_column].to_numpy(dtype=float)
    off = ~np.isclose(sel["z_true"].to_numpy(dtype=float), truth, rtol=0, atol=1e-6)
    if off.any():
        raise DataError(
            f"{path}: z_true differs from the catalogue's '{label_column}' for {int(off.sum())} objects "
            f"(e.g. {sel.loc[off, 'object_id'].iloc[0]}): predictions of another dataset or label?"
        )
    return sel, (grid if "pdf" in sel.columns else None)
