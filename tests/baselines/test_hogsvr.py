"""HOG+SVR: features per band, the numpy decision function equals sklearn's, pickle-free save/load with
checksum, the prediction contract, the training-row cap, and real accuracy on a tiny dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.feature import hog
from sklearn.svm import SVR

from conftest import make_tiny_raw, tiny_config
from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.data.normalize import normalize
from deepred.contracts.raw import read_simulated
from deepred.baselines.hogsvr import HogParams, HogSVRError, HogSVRModel, fit_hogsvr, hog_features, train_hogsvr
from deepred.core.metrics import metric_values, sample_arrays
from deepred.predict.splits import predict_model, predict_rows

REPO = Path(__file__).resolve().parents[2]


def _nmad(p, t):
    return metric_values("nmad", sample_arrays(p, t), {})


def run_hogsvr(dataset, cfg, processed, model_dir, predictions):
    """What the hogsvr rule's script does: fit, then predict the val and test rows like any model."""
    train_hogsvr(dataset, cfg, processed, model_dir)
    return predict_model(model_dir, processed, predictions)


def test_hog_features_are_per_band_hogs_concatenated():
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(3, 4, 45, 45)).astype(np.float32)
    params = HogParams.from_config({"orientations": 9, "cells_per_side": 5, "cells_per_block": 2}, 45)
    assert params.pixels_per_cell == 9
    f = hog_features(imgs, params)
    per_band = 4 * 4 * 2 * 2 * 9  # (5 - 1)^2 blocks x 2x2 cells x 9 orientations
    assert f.shape == (3, 4 * per_band)
    ref = hog(imgs[1, 2], orientations=9, pixels_per_cell=(9, 9), cells_per_block=(2, 2), block_norm="L2-Hys")
    np.testing.assert_array_equal(f[1, 2 * per_band:3 * per_band], ref)


def test_bad_hog_input_and_settings():
    params = HogParams(9, 9, 2)
    bad = np.zeros((2, 4, 45, 45), np.float32)
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(HogSVRError, match="non-finite"):
        hog_features(bad, params)
    with pytest.raises(HogSVRError, match="shape"):
        hog_features(np.zeros((4, 45, 45)), params)
    with pytest.raises(HogSVRError, match="cells_per_side"):
        HogParams.from_config({"orientations": 9, "cells_per_side": 40, "cells_per_block": 2}, 45)


def _toy(n=120, f=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    y = 0.5 + 0.2 * np.tanh(x[:, 0] + 0.5 * x[:, 1]) + rng.normal(0, 0.01, n)
    return x, y


def test_numpy_decision_function_equals_sklearn_and_reload_is_bit_identical(tmp_path):
    x, y = _toy()
    cfg = {"C": [3.0], "epsilon": [0.01], "gamma_scale": [1.0]}
    model = fit_hogsvr(x[:90], y[:90], x[90:], y[90:], cfg, HogParams(9, 9, 2), ["g"], 45)
    # the same SVR refit with sklearn directly, on the same standardized features
    mean, scale = x[:90].mean(0), x[:90].std(0)
    svr = SVR(kernel="rbf", C=3.0, epsilon=0.01, gamma=model.gamma).fit((x[:90] - mean) / scale, y[:90])
    np.testing.assert_allclose(model.predict_features(x[90:]), svr.predict((x[90:] - mean) / scale), atol=1e-9)
    model.save(tmp_path)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:  # no object arrays anywhere
        assert all(z[k].dtype != object for k in z.files)
    again = HogSVRModel.load(tmp_path)
    assert np.array_equal(again.predict_features(x), model.predict_features(x))
    assert again.hyper["chosen"]["C"] == 3.0


def test_validation_grid_picks_the_best_nmad():
    x, y = _toy(seed=1)
    cfg = {"C": [0.01, 10.0], "epsilon": [0.005], "gamma_scale": [0.5, 1.0]}
    model = fit_hogsvr(x[:90], y[:90], x[90:], y[90:], cfg, HogParams(9, 9, 2), ["g"], 45)
    grid = model.hyper["grid"]
    assert len(grid) == 4
    assert model.hyper["chosen"]["val_nmad"] == min(g["val_nmad"] for g in grid)
    assert model.hyper["chosen"]["C"] == 10.0  # C = 0.01 underfits badly


def test_tampered_or_missing_model_is_refused(tmp_path):
    x, y = _toy()
    model = fit_hogsvr(x[:90], y[:90], x[90:], y[90:], {"C": [1.0], "epsilon": [0.01], "gamma_scale": [1.0]},
                       HogParams(9, 9, 2), ["g"], 45)
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["weights_sha256"] = "0" * 64
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(HogSVRError, match="SHA-256"):
        HogSVRModel.load(tmp_path)
    with pytest.raises(HogSVRError, match="missing"):
        HogSVRModel.load(tmp_path / "nowhere")


def test_fit_and_predict_on_a_dataset_beats_the_median_by_2x(tiny_dataset, tmp_path):
    cfg = tiny_config({"tiny": {}})
    out = run_hogsvr("tiny", cfg, tiny_dataset, tmp_path / "m", tmp_path / "pred.parquet")
    ds = ProcessedDataset(tiny_dataset)
    # the prediction contract: val and test rows, object_id/split/z_true/z_pred
    written = pd.read_parquet(tmp_path / "pred.parquet")
    assert list(written.columns) == ["object_id", "split", "z_true", "z_pred"]
    assert set(written["split"]) == {"val", "test"}
    assert len(written) == len(ds.split("val")) + len(ds.split("test"))
    assert written["object_id"].is_unique
    cat = ds.catalog.set_index("object_id")
    np.testing.assert_allclose(written["z_true"], cat.loc[written["object_id"], "z_lens"].to_numpy())
    test = out[out["split"] == "test"]
    median = np.median(ds.split("train")["z_lens"])
    assert _nmad(test["z_pred"].to_numpy(), test["z_true"].to_numpy()) < _nmad(
        np.full(len(test), median), test["z_true"].to_numpy()) / 2
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["dataset"] == "tiny" and meta["bands"] == ["g", "r", "i", "z"]
    assert "config" in json.loads((tmp_path / "m" / "provenance.json").read_text())
    # reloading reproduces the written predictions exactly
    again = predict_rows(tmp_path / "m", tiny_dataset, ds.split("test"))
    assert np.array_equal(again["z_pred"].to_numpy(), test["z_pred"].to_numpy())


def test_training_rows_are_capped(tiny_dataset, tmp_path):
    cfg = tiny_config({"tiny": {}})
    cfg["baselines"]["hogsvr"].update(max_train_rows=40, C=[1.0], epsilon=[0.01], gamma_scale=[1.0])
    run_hogsvr("tiny", cfg, tiny_dataset, tmp_path / "m", tmp_path / "p.parquet")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["hyper"]["n_train"] == 40 and meta["n_support_vectors"] <= 40


def test_band_mismatch_and_bad_labels_are_named(tiny_dataset, tiny_dataset_64, tmp_path):
    cfg = tiny_config({"tiny": {}})
    cfg["baselines"]["hogsvr"].update(C=[1.0], epsilon=[0.01], gamma_scale=[1.0])
    run_hogsvr("tiny", cfg, tiny_dataset, tmp_path / "m", tmp_path / "p.parquet")
    with pytest.raises(DataError, match="bands"):
        predict_rows(tmp_path / "m", tiny_dataset_64, ProcessedDataset(tiny_dataset_64).split("test"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    cat = pd.read_parquet(broken / "catalog.parquet")
    cat.loc[cat.index[cat["split"] == "train"][0], "z_lens"] = np.nan
    cat.to_parquet(broken / "catalog.parquet", index=False)
    with pytest.raises(DataError, match="non-finite 'z_lens'"):
        run_hogsvr("tiny", cfg, broken, tmp_path / "m2", tmp_path / "p2.parquet")


@pytest.mark.workflow
def test_snakemake_rule_hogsvr_end_to_end(tmp_path):
    """The real rule on a tiny config: model, provenance, predictions, log and benchmark come out."""
    cfg = tiny_config({"tiny": {"n": 160}}, results_dir=str(tmp_path / "results"), data_dir=str(tmp_path / "data"))
    cfg["baselines"]["hogsvr"].update(C=[1.0], epsilon=[0.01], gamma_scale=[1.0])
    raw = make_tiny_raw(tmp_path / "data" / "raw" / "tiny", n=160)
    normalize(read_simulated(raw), "tiny", cfg["datasets"]["tiny"], tmp_path / "data" / "processed" / "tiny",
              seed=cfg["seed"], config=cfg)
    (tmp_path / "config.yaml").write_text(json.dumps(cfg))
    target = f"{tmp_path}/results/predictions/hogsvr/tiny.parquet"
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
         str(tmp_path / "config.yaml"), "--cores", "1", "--directory", str(tmp_path), target],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    pred = pd.read_parquet(target)
    assert set(pred["split"]) == {"val", "test"}
    assert (tmp_path / "results" / "models" / "hogsvr" / "tiny" / "model.npz").is_file()
    assert (tmp_path / "results" / "benchmarks" / "hogsvr" / "tiny.tsv").is_file()
    assert "validation NMAD" in (tmp_path / "logs" / "hogsvr" / "tiny.log").read_text()
