"""Cross-survey transfer: a network trained on one dataset, applied to another dataset's test split.

Which pairs: the evaluation dataset must carry every band the model was trained on (the model's bands are
taken from it, in the model's order: a g,r,i,z model runs on SDSS u,g,r,i,z through its g,r,i,z planes), its
cutouts must be at least as large (larger ones are centre-cropped to the model's size) and its
scaling method must be the same (asinh cutouts are re-expressed with the training set's per-band
softening, exactly: asinh is invertible). A model never gets a zero-filled or invented band: KiDS (u,g,r,i) lacks z, so a
DES-like g,r,i,z model is not evaluated there and its cell in transfer_nmad.csv is empty ("n/a").
The pixel scale is not matched (0.263"/px DES vs 0.396"/px SDSS): that difference is part of the domain shift
the table measures.

Outputs: results/transfer/{model}/{train}__{eval}.parquet in the prediction contract (test rows only), and
results/tables/transfer_nmad.csv, a matrix: one row per (model, train dataset), one column per eval dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from deepred import metrics as M
from deepred.data.contract import DataError, ProcessedDataset
from deepred.data.normalize import scale_images, scaling_for_bands, unscale_images
from deepred.io import write_csv
from deepred.tables import FLOAT_FORMAT

log = logging.getLogger("deepred.transfer")

def compatibility(config: dict, train: str, evaluate: str) -> str | None:
    """None when a model trained on `train` can run on `evaluate`, else the reason it cannot."""
    a, b = config["datasets"][train], config["datasets"][evaluate]
    missing = [x for x in a["bands"] if x not in b["bands"]]
    if missing:
        return f"{evaluate} lacks band(s) {','.join(missing)}"
    if b["cutout"] < a["cutout"]:
        return f"{evaluate} cutouts ({b['cutout']} px) are smaller than {train}'s ({a['cutout']} px)"
    if a.get("scaling", "asinh") != b.get("scaling", "asinh"):
        return f"pixel scaling differs ({a.get('scaling')} vs {b.get('scaling')})"
    return None


def transfer_models(config: dict) -> list[str]:
    """metrics.transfer_models of a validated config (deepred.config checks that each is an enabled network)."""
    return list(config["metrics"]["transfer_models"])


def transfer_pairs(config: dict) -> list[tuple[str, str, str]]:
    """(model, train dataset, eval dataset) for every off-diagonal compatible pair."""
    ds = list(config["datasets"])
    return [(m, a, b) for m in transfer_models(config) for a in ds for b in ds
            if a != b and compatibility(config, a, b) is None]


def adapt_images(images: np.ndarray, eval_bands: list[str], model_bands: list[str], cutout: int) -> np.ndarray:
    """Select the model's bands (in its order) and centre-crop to its cutout."""
    idx = [eval_bands.index(b) for b in model_bands]
    h = images.shape[-1]
    o = (h - cutout) // 2
    return np.ascontiguousarray(images[:, idx, o:o + cutout, o:o + cutout], dtype=np.float32)


def transfer_predict(model_dir, eval_processed_dir, out_path, batch_size: int = 64) -> pd.DataFrame:
    """Apply a trained network to another dataset's test split and write the prediction file."""
    from deepred.models.checkpoint import load_trained  # the models area's loader and writer
    from deepred.predict import PDF_SUMMARY, predict_rows, write_predictions

    tm = load_trained(model_dir)
    ds = ProcessedDataset(eval_processed_dir)
    meta = tm.meta
    mb, mc = list(meta["bands"]), int(meta["cutout"])
    if any(b not in ds.bands for b in mb):
        raise DataError(f"{eval_processed_dir}: bands {ds.bands} lack the model's {mb} ({model_dir})")
    if int(ds.stats["cutout"]) < mc:
        raise DataError(f"{eval_processed_dir}: cutout {ds.stats['cutout']} < the model's {mc} ({model_dir})")
    model_scaling = meta.get("scaling") or ds.stats["scaling"]
    data_scaling = scaling_for_bands(ds.stats["scaling"], ds.bands, mb)
    if model_scaling.get("method") != data_scaling.get("method"):
        raise DataError(f"{eval_processed_dir}: scaling {data_scaling['method']} != the model's "
                        f"{model_scaling.get('method')} ({model_dir})")
    rows = ds.split("test")
    if ds.bands == mb and int(ds.stats["cutout"]) == mc and data_scaling == model_scaling:
        frame = predict_rows(model_dir, eval_processed_dir, rows, trained=tm, batch_size=batch_size)
        grid = frame.attrs.get("pdf_grid")
    else:  # band subset, centre crop and/or another dataset's asinh softening: predict_rows takes exact matches
        images = adapt_images(ds.images(rows), ds.bands, mb, mc)
        if data_scaling != model_scaling:  # back to flux, then scaled as the model's training data was
            images = scale_images(unscale_images(images, data_scaling), model_scaling)
        out = tm.predict(images, batch_size=batch_size)
        frame = pd.DataFrame({
            "object_id": rows["object_id"].astype("string").to_numpy(),
            "split": rows["split"].astype("string").to_numpy(),
            "z_true": rows[ds.stats["label_column"]].to_numpy(float),
            "z_pred": np.asarray(out["z_pred"], dtype=float).reshape(-1),
        })
        grid = tm.grid
        if tm.head == "pdf":
            for k in PDF_SUMMARY:
                frame[k] = np.asarray(out[k], dtype=float)
            frame["pdf"] = list(np.asarray(out["pdf"], dtype=np.float32))
    write_predictions(out_path, frame, grid=grid, meta={"model_dir": str(model_dir), "bands_used": mb,
                                                         "crop": mc, "eval_dataset": ds.stats.get("dataset")})
    log.info("%s on %s: %d test objects, bands %s, crop %d px", model_dir, eval_processed_dir, len(frame), mb, mc)
    return frame


def _test_nmad(path) -> float:
    df = pd.read_parquet(path, columns=["split", "z_true", "z_pred"])
    df = df[df["split"] == "test"]
    zp, zt = df["z_pred"].to_numpy(float), df["z_true"].to_numpy(float)
    if not np.all(np.isfinite(zp)):
        raise DataError(f"{path}: {int((~np.isfinite(zp)).sum())} NaN/inf values in 'z_pred'")
    try:
        return M.metric_values("nmad", M.sample_arrays(zp, zt), {})
    except M.MetricError as exc:
        raise DataError(f"{path}: {exc}") from exc


def transfer_table(config: dict, diagonal: dict, off: dict, out_csv) -> pd.DataFrame:
    """Matrix of test NMAD: diagonal from the in-domain prediction files, off-diagonal from transfer files.

    diagonal: {(model, dataset): path}; off: {(model, train, eval): path}."""
    ds = list(config["datasets"])
    rows = []
    for m in transfer_models(config):
        for a in ds:
            r = {"model": m, "train_dataset": a}
            for b in ds:
                p = diagonal.get((m, a)) if a == b else off.get((m, a, b))
                r[b] = _test_nmad(p) if p is not None else np.nan
            rows.append(r)
    table = pd.DataFrame(rows, columns=["model", "train_dataset", *ds])
    write_csv(out_csv, table, float_format=FLOAT_FORMAT)
    return table
