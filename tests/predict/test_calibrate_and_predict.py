"""deepred.predict.splits.calibrate_and_predict, the fitting jobs' last step: one pass over the rows gives the same
calibration and the same prediction file as calibrating (calibrate_model) and then predicting (predict_model)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from deepred.contracts import model_json as card
from deepred.contracts.predictions import read_predictions
from deepred.predict.splits import calibrate_and_predict, calibrate_model, predict_model
from deepred.training.train import train_model


@pytest.fixture(scope="module")
def point_model(tmp_path_factory, tiny_dataset):
    results = tmp_path_factory.mktemp("point")
    cfg = tiny_config({"tiny": {}}, data_dir=tiny_dataset.parent.parent, results_dir=results)
    cfg["training"]["epochs"] = 1
    train_model("netz", "tiny", cfg, tiny_dataset, results / "netz", threads=1)
    return results / "netz", cfg


def _both_ways(model_dir, processed, cfg, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        shutil.copytree(model_dir, d)
    calibrate_model(two, processed, cfg)
    predict_model(two, processed, tmp_path / "two.parquet")
    calibrate_and_predict(one, processed, cfg, tmp_path / "one.parquet")
    cards = [card.read_card(d, ValueError)[card.CALIBRATION] for d in (one, two)]
    return read_predictions(tmp_path / "one.parquet"), read_predictions(tmp_path / "two.parquet"), cards


@pytest.mark.parametrize("kind", ["point", "pdf"])
def test_one_pass_gives_the_two_step_numbers(kind, point_model, tiny_pdf_model, tiny_dataset, tmp_path):
    cfg = point_model[1]
    model_dir = point_model[0] if kind == "point" else tiny_pdf_model
    (one, grid_one), (two, grid_two), (cal_one, cal_two) = _both_ways(model_dir, tiny_dataset, cfg, tmp_path)
    assert cal_one == cal_two  # fitted on the same uncalibrated outputs
    assert list(one.columns) == list(two.columns) and "pdf_uncalibrated" in one
    np.testing.assert_array_equal(grid_one, grid_two)
    pd.testing.assert_frame_equal(one[["object_id", "split", "z_true", "z_pred"]],
                                  two[["object_id", "split", "z_true", "z_pred"]])
    # the PDFs: equal up to the float32 lists the frames hold
    for col in ("pdf", "pdf_uncalibrated"):
        np.testing.assert_allclose(np.stack(one[col]), np.stack(two[col]), rtol=0, atol=2e-6)
    np.testing.assert_allclose(one["z_median"], two["z_median"], rtol=0, atol=1e-5)
