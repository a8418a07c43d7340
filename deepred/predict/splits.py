"""The fitting jobs' calibration step and the `predict` and `hogsvr` rules' prediction step: a trained model's
PDF calibration, fitted on the validation rows, and its predictions for the val and test rows.

Any model kind (deepred.predict.predictor.load_model); the file is the prediction contract of deepred.contracts.predictions
(whose names PDF_GRID_KEY, PDF_SUMMARY, read_predictions and write_predictions are importable from here too).
"""

from __future__ import annotations

import logging

import pandas as pd

from deepred.pdfs import calibration as cal
from deepred.contracts.processed import ProcessedDataset
from deepred.core.metrics import nmad
from deepred.contracts.model_json import add_calibration
from deepred.contracts.predictions import (  # noqa: F401 (PDF_GRID_KEY, PDF_SUMMARY, read_predictions: importable here)
    PDF_GRID_KEY,
    PDF_SUMMARY,
    pdf_matrix,
    prediction_frame,
    read_predictions,
    write_predictions,
)
from deepred.predict.predictor import load_model

log = logging.getLogger("deepred.predict.splits")

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
    _write(predictor, out, out_path, processed_dir, splits)
    return out


def calibrate_model(model_dir, processed_dir, config: dict, device: str | None = "cpu") -> dict | None:
    """Fit the PDF calibration of the trained model in model_dir on the validation rows of its dataset and store it
    in its model.json (deepred.pdfs.calibration): one step for every kind, run by the job that fitted the model.

    A model with PDFs calibrates them; a point estimator gets a Gaussian PDF whose naive width comes from its
    training rows' residuals. Returns the record, or None (logged) when the validation split is too small."""
    predictor = load_model(model_dir, device)
    predictor.calibration = None  # fitted on the uncalibrated outputs, even when refitting
    proc = ProcessedDataset(processed_dir)
    val = predictor.predict_rows(proc, proc.split(cal.FIT_SPLIT))
    train = None if predictor.gives_pdf else predictor.predict_rows(proc, proc.split("train"))
    fitted = _fit_calibration(predictor, val, train, config, model_dir)
    return None if fitted is None else fitted.record()


def _fit_calibration(predictor, val: pd.DataFrame, train: pd.DataFrame | None, config: dict, model_dir):
    """The calibration fitted on the uncalibrated val (and, for point estimators, train) predictions, stored in
    model.json; None (logged) when the validation split is too small."""
    settings, what = config["calibration"], f"{predictor.name}/{predictor.dataset}"
    z_val = val["z_true"].to_numpy(float)
    if len(val) < cal.MIN_FIT_ROWS:
        log.warning("%s: %d validation rows, too few to calibrate a PDF (>= %d); point estimates only", what,
                    len(val), cal.MIN_FIT_ROWS)
        return None
    if predictor.gives_pdf:
        grid = predictor.output_grid
        fitted = cal.fit_calibration(pdf_matrix(val, grid, model_dir), grid, z_val, settings["pit_knots"])
    else:
        fitted = cal.fit_point_calibration(train["z_pred"].to_numpy(float), train["z_true"].to_numpy(float),
                                           val["z_pred"].to_numpy(float), z_val, settings["n_bins"],
                                           settings["pit_knots"])
    record = fitted.record()
    add_calibration(model_dir, record, cal.CalibrationError)
    log.info("%s: PDF calibration (%s) on %d validation rows: temperature %.3f, PIT KS %.3f -> %.3f, NLL %.3f -> %.3f",
             what, fitted.base, len(val), fitted.temperature, record["val_pit_ks_uncalibrated"], record["val_pit_ks"],
             record["val_nll_uncalibrated"], record["val_nll"])
    return fitted


def calibrate_and_predict(model_dir, processed_dir, config: dict, out_path, device: str | None = "cpu") -> pd.DataFrame:
    """A fitting job's last step, predicting every row once: the model's uncalibrated outputs for the val and test
    rows (and the train rows a point estimator's calibration reads), the calibration fitted on them
    (calibrate_model) and applied to the same outputs, and the val/test prediction file (predict_model's, the
    same numbers without a second pass over the images or a second process)."""
    predictor = load_model(model_dir, device)
    predictor.calibration = None
    proc = ProcessedDataset(processed_dir)
    rows = proc.catalog[proc.catalog["split"].isin(list(SPLITS))].reset_index(drop=True)
    raw = predictor.predict_rows(proc, rows)
    train = None if predictor.gives_pdf else predictor.predict_rows(proc, proc.split("train"))
    fitted = _fit_calibration(predictor, raw[raw["split"] == cal.FIT_SPLIT].reset_index(drop=True), train, config,
                              model_dir)
    out = raw
    if fitted is not None:
        predictor.calibration = fitted
        grid = predictor.output_grid
        res = {"z_pred": raw["z_pred"].to_numpy(float)}
        if predictor.grid is not None and "pdf" in raw:  # a PDF head's raw PDFs; a point estimator's come from z_pred
            res["pdf"] = pdf_matrix(raw, grid, model_dir)
        out = prediction_frame(rows, proc.stats["label_column"], fitted.apply(res, grid), pdf=True)
        out.attrs["pdf_grid"] = [float(g) for g in grid]
    _write(predictor, out, out_path, processed_dir, SPLITS)
    return out


def _write(predictor, out: pd.DataFrame, out_path, processed_dir, splits) -> None:
    write_predictions(out_path, out, meta=predictor.file_record())
    for split in splits:
        sel = out[out["split"] == split]
        if len(sel):
            log.info("%s on %s: %s NMAD %.4f (%d rows)", predictor.name, processed_dir, split,
                     nmad(sel["z_pred"], sel["z_true"]), len(sel))
