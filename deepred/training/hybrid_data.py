"""A hybrid's training inputs beyond the images (deepred/models/hybrid.py): the photometric features of its train
and val rows, from the dataset's features file (deepred.features.table), and for `fusion: residual` the photometric
baseline's prediction as one more column: out-of-fold for the training rows (the trees' in-sample predictions are
too good to learn corrections from), the fitted trees' for the validation rows. The shuffled-pixels control's rows
point at other objects' images (deepred.models.hybrid.rows_as_seen)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.baselines.photometry import PhotometryModel, read_oof
from deepred.contracts.model_json import MODEL_JSON, PHOTOMETRY, WEIGHTS_FILE
from deepred.contracts.processed import ProcessedDataset
from deepred.features.table import feature_matrix
from deepred.models.hybrid import record_params, rows_as_seen

PHOTOMETRY_DIR = "photometry"  # a residual hybrid's copy of the trees it corrects, inside its own folder


def hybrid_data(record: dict, proc: ProcessedDataset, train_rows: pd.DataFrame, val_rows: pd.DataFrame,
                photometry_dir: str | Path | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, tuple[np.ndarray, np.ndarray]]:
    """(train rows, val rows, (train inputs, val inputs)) as the hybrid trains on them."""
    params = record_params(record)
    f_train, f_val = feature_matrix(proc, train_rows, params), feature_matrix(proc, val_rows, params)
    if record.get("fusion") == "residual":
        if photometry_dir is None:
            raise ValueError("a residual hybrid needs the fitted photometric baseline's folder (photometry_dir)")
        trees = PhotometryModel.load(photometry_dir)
        f_train = np.column_stack([f_train, read_oof(photometry_dir, train_rows)])
        f_val = trees.with_prediction(f_val)
    return rows_as_seen(record, train_rows), rows_as_seen(record, val_rows), (f_train, f_val)


def keep_photometry(photometry_dir: str | Path, model_dir: str | Path) -> None:
    """Copy the trees a residual hybrid corrects into its folder (model.json + model.npz, checksummed), so the folder
    predicts on its own, as deepred predict needs."""
    dest = Path(model_dir) / PHOTOMETRY_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_JSON, WEIGHTS_FILE[PHOTOMETRY]):
        shutil.copyfile(Path(photometry_dir) / name, dest / name)
