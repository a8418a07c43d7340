"""The `predict` and `hogsvr` rules' prediction step: a trained model's predictions for the val and test rows.

Any model kind (deepred.predictor.load_model); the file is the prediction contract of deepred.predictions
(whose names PDF_GRID_KEY, PDF_SUMMARY, read_predictions and write_predictions are importable from here too).
"""

from __future__ import annotations

import logging

import pandas as pd

from deepred.data.contract import ProcessedDataset
from deepred.metrics import nmad
from deepred.predictions import PDF_GRID_KEY, PDF_SUMMARY, read_predictions, write_predictions  # noqa: F401
from deepred.predictor import load_model

log = logging.getLogger("deepred.predict")

SPLITS = ("val", "test")  # the rows a prediction file holds (ensembles fit on val; tables read test)


def predict_rows(model_dir, processed_dir, rows: pd.DataFrame, batch_size: int = 256) -> pd.DataFrame:
    """Predictions of the trained model in model_dir for catalogue rows of processed_dir, in row order."""
    return load_model(model_dir, batch_size=batch_size).predict_rows(ProcessedDataset(processed_dir), rows)


def predict_model(model_dir, processed_dir, out_path, splits=SPLITS) -> pd.DataFrame:
    """Predictions of one trained model for the val and test rows of a dataset, written to out_path."""
    predictor = load_model(model_dir)
    proc = ProcessedDataset(processed_dir)
    rows = proc.catalog[proc.catalog["split"].isin(list(splits))].reset_index(drop=True)
    out = predictor.predict_rows(proc, rows)
    write_predictions(out_path, out, meta=predictor.file_record())
    for split in splits:
        sel = out[out["split"] == split]
        if len(sel):
            log.info("%s on %s: %s NMAD %.4f (%d rows)", predictor.name, processed_dir, split,
                     nmad(sel["z_pred"], sel["z_true"]), len(sel))
    return out
