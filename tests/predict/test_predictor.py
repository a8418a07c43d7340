"""deepred.predict.predictor and deepred.contracts.model_json: one loader for every model kind, one reader for every model.json.

The networks and ensembles are exercised on real tiny models in test_inference.py, test_ensemble.py and
test_cli.py; here the registry, the card readers and a real (small) HOG+SVR folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepred.contracts import model_json as card
from deepred.baselines.hogsvr import HogParams, fit_hogsvr, hog_features
from deepred.predict.inputs import InferenceError
from deepred.predict.predictor import (KINDS, EnsemblePredictor, HogSVRPredictor, NeuralPredictor, PhotometryPredictor,
                               load_model)


def test_every_card_kind_has_one_registered_loader():
    assert KINDS == {card.NEURAL: NeuralPredictor, card.HOGSVR: HogSVRPredictor, card.PHOTOMETRY: PhotometryPredictor,
                     card.ENSEMBLE: EnsemblePredictor}
    assert all(cls.kind == kind for kind, cls in KINDS.items())


def test_card_readers_hide_the_kinds_key_differences():
    assert card.weights_sha256({"sha256": "a" * 64}) == "a" * 64  # networks
    assert card.weights_sha256({"weights_sha256": "b" * 64}) == "b" * 64  # HOG+SVR
    assert card.weights_sha256({"members": ["x"]}) is None  # ensembles have no weights of their own
    assert card.n_train({"n_train": 170}) == 170
    assert card.n_train({"hyper": {"n_train": 80}}) == 80
    assert card.n_train({}) is None


def _hogsvr_folder(path, scaling):
    """A real HOG+SVR model of one-band 45 px cutouts, saved as train_hogsvr saves it."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 1, 45, 45)).astype(np.float32)
    params = HogParams(9, 9, 2)
    x = hog_features(images, params)
    y = 0.5 + 0.1 * np.tanh(x[:, 0])
    model = fit_hogsvr(x[:30], y[:30], x[30:], y[30:], {"C": [1.0], "epsilon": [0.01], "gamma_scale": [1.0]},
                       params, ["g"], 45)
    model.save(path, extra_meta={"dataset": "toy", "label_column": "z", "scaling": scaling})
    return model, images


def test_hogsvr_folder_loads_as_its_kind_on_the_cpu(tmp_path):
    model, images = _hogsvr_folder(tmp_path, {"method": "none"})
    pred = load_model(tmp_path, device="cuda")  # HOG+SVR is numpy: the CPU whatever is asked
    assert isinstance(pred, HogSVRPredictor) and pred.device == "cpu"
    assert (pred.name, pred.dataset, pred.bands, pred.cutout, pred.head, pred.grid) == ("hogsvr", "toy", ["g"], 45,
                                                                                        "point", None)
    np.testing.assert_array_equal(pred.predict(images)["z_pred"], model.predict_images(images))
    np.testing.assert_array_equal(pred.predict_raw(images)["z_pred"], model.predict_images(images))  # 'none'
    assert pred.file_record() is None  # HOG+SVR prediction files carry no model record (unchanged bytes)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert card.weights_sha256(meta) == meta["weights_sha256"] and "sha256" not in meta  # the key on disk


def test_unusable_folders_are_named(tmp_path):
    _hogsvr_folder(tmp_path / "noscale", None)
    with pytest.raises(InferenceError, match=r"noscale/model\.json: no 'scaling' recorded"):
        load_model(tmp_path / "noscale")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.json").write_text(json.dumps({"model": "mystery"}))
    with pytest.raises(InferenceError, match="unknown model format"):
        load_model(tmp_path / "other")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{")
    with pytest.raises(InferenceError, match=r"broken/model\.json: unreadable model metadata"):
        load_model(tmp_path / "broken")
