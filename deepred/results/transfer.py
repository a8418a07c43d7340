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
from functools import partial

import numpy as np
import pandas as pd

from deepred.core import metrics as M
from deepred.core.model_names import transfer_models
from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.data.normalize import scale_images, scaling_for_bands, unscale_images
from deepred.core.io import write_csv
from deepred.contracts.predictions import read_predictions, write_predictions
from deepred.predict.predictor import load_model
from deepred.results.tables import FLOAT_FORMAT
from deepred.workflow.plan import compatibility, transfer_pairs  # noqa: F401 (the transfer pairs this module serves)

log = logging.getLogger("deepred.results.transfer")

def adapt_images(images: np.ndarray, eval_bands: list[str], model_bands: list[str], cutout: int) -> np.ndarray:
    """Select the model's bands (in its order) and centre-crop to its cutout."""
    idx = [eval_bands.index(b) for b in model_bands]
    h = images.shape[-1]
    o = (h - cutout) // 2
    return np.ascontiguousarray(images[:, idx, o:o + cutout, o:o + cutout], dtype=np.float32)


def model_pixels(images: np.ndarray, eval_bands: list[str], model_bands: list[str], cutout: int,
                 data_scaling: dict, model_scaling: dict) -> np.ndarray:
    """Another dataset's images as the model's training data looked: its bands, its crop and, where the
    asinh softening differs, back to flux and scaled as the model's training data was."""
    images = adapt_images(images, eval_bands, model_bands, cutout)
    if data_scaling != model_scaling:
        images = scale_images(unscale_images(images, data_scaling), model_scaling)
    return images


def transfer_predict(model_dir, eval_processed_dir, out_path, batch_size: int = 64) -> pd.DataFrame:
    """Apply a trained network to another dataset's test split and write the prediction file."""
    predictor = load_model(model_dir, batch_size=batch_size)
    ds = ProcessedDataset(eval_processed_dir)
    mb, mc = predictor.bands, predictor.cutout
    if any(b not in ds.bands for b in mb):
        raise DataError(f"{eval_processed_dir}: bands {ds.bands} lack the model's {mb} ({model_dir})")
    if int(ds.stats["cutout"]) < mc:
        raise DataError(f"{eval_processed_dir}: cutout {ds.stats['cutout']} < the model's {mc} ({model_dir})")
    model_scaling = predictor.scaling
    data_scaling = scaling_for_bands(ds.stats["scaling"], ds.bands, mb)
    if model_scaling.get("method") != data_scaling.get("method"):
        raise DataError(f"{eval_processed_dir}: scaling {data_scaling['method']} != the model's "
                        f"{model_scaling.get('method')} ({model_dir})")
    exact = ds.bands == mb and int(ds.stats["cutout"]) == mc and data_scaling == model_scaling
    adapt = None if exact else partial(model_pixels, eval_bands=ds.bands, model_bands=mb, cutout=mc,
                                       data_scaling=data_scaling, model_scaling=model_scaling)
    frame = predictor.predict_rows(ds, ds.split("test"), adapt=adapt)
    write_predictions(out_path, frame, meta={"model_dir": str(model_dir), "bands_used": mb,
                                             "crop": mc, "eval_dataset": ds.stats.get("dataset")})
    log.info("%s on %s: %d test objects, bands %s, crop %d px", model_dir, eval_processed_dir, len(frame), mb, mc)
    return frame


def _test_nmad(path) -> float:
    df, _ = read_predictions(path)
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
