"""Cross-survey transfer: a really trained (tiny) network applied to a band-matched, larger-cutout dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from deepred.results import transfer as X
from deepred.contracts.config import ConfigError, validate_config
from deepred.contracts.processed import DataError


def _config(tiny_dataset, tiny_dataset_64):
    cfg = tiny_config({"tiny": {}, "tiny64": {"bands": ["u", "g", "r", "i", "z"], "cutout": 64}})
    cfg["training"].update({"epochs": 1, "patience": 1})
    cfg["metrics"]["transfer_models"] = ["a1"]
    return cfg


def test_pairs_follow_bands_and_cutouts(tiny_dataset, tiny_dataset_64):
    cfg = _config(tiny_dataset, tiny_dataset_64)
    assert X.transfer_pairs(cfg) == [("a1", "tiny", "tiny64")]  # tiny64 -> tiny would need a u band
    assert "lacks band(s) u" in X.compatibility(cfg, "tiny64", "tiny")
    cfg["datasets"]["tiny64"]["cutout"] = 32
    assert "smaller" in X.compatibility(cfg, "tiny", "tiny64")
    cfg["metrics"]["transfer_models"] = ["resnte"]
    with pytest.raises(ConfigError, match="'metrics.transfer_models': 'resnte' is not an enabled .*resnet"):
        validate_config(cfg)
    imgs = np.arange(2 * 5 * 6 * 6, dtype=np.float32).reshape(2, 5, 6, 6)
    out = X.adapt_images(imgs, ["u", "g", "r", "i", "z"], ["g", "r", "i", "z"], 4)
    assert out.shape == (2, 4, 4, 4) and np.array_equal(out[:, 0], imgs[:, 1, 1:5, 1:5])


def test_transfer_predict_and_table(tiny_dataset, tiny_dataset_64, tmp_path):
    from deepred.predict.splits import predict_model
    from deepred.training.train import train_model

    cfg = _config(tiny_dataset, tiny_dataset_64)
    mdir = tmp_path / "models" / "a1" / "tiny"
    train_model("a1", "tiny", cfg, tiny_dataset, mdir, threads=1)
    diag = tmp_path / "pred" / "a1" / "tiny.parquet"
    predict_model(mdir, tiny_dataset, diag)
    off = tmp_path / "transfer" / "a1" / "tiny__tiny64.parquet"
    frame = X.transfer_predict(mdir, tiny_dataset_64, off)
    test64 = pd.read_parquet(tiny_dataset_64 / "catalog.parquet").query("split == 'test'")
    written = pd.read_parquet(off)
    assert list(written["object_id"]) == list(test64["object_id"]) and (written["split"] == "test").all()
    assert np.allclose(written["z_true"], test64["z_lens"]) and np.isfinite(written["z_pred"]).all()
    assert len(frame) == len(written)
    # the same-band path (predict_rows) agrees with the in-domain prediction file
    same = X.transfer_predict(mdir, tiny_dataset, tmp_path / "same.parquet")
    ind = pd.read_parquet(diag).query("split == 'test'")
    np.testing.assert_allclose(same["z_pred"].to_numpy(), ind["z_pred"].to_numpy(), rtol=1e-5)
    # a 5-band model cannot run on 4-band data
    five = _five_band_model(cfg, tiny_dataset_64, tmp_path)
    with pytest.raises(DataError, match="lack the model's"):
        X.transfer_predict(five, tiny_dataset, tmp_path / "x.parquet")

    table = X.transfer_table(cfg, {("a1", "tiny"): diag}, {("a1", "tiny", "tiny64"): off}, tmp_path / "t.csv")
    assert list(table.columns) == ["model", "train_dataset", "tiny", "tiny64"]
    row = table.set_index("train_dataset").loc["tiny"]
    assert 0 < row["tiny"] < 1 and 0 < row["tiny64"] < 5
    assert table.set_index("train_dataset").loc["tiny64"].isna()[["tiny", "tiny64"]].all()  # not trained: empty
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "model,train_dataset,tiny,tiny64"


def _five_band_model(cfg, processed, tmp_path):
    from deepred.training.train import train_model

    d = tmp_path / "models" / "a1" / "tiny64"
    train_model("a1", "tiny64", cfg, processed, d, threads=1)
    return d
