"""Ensembles: the stacked fit sees validation rows only, is no worse than its best member, rejects
misaligned member files, and the saved ensemble predicts new cutouts like the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from deepred.contracts.processed import ProcessedDataset
from deepred.predict.ensemble import EnsembleError, fit_ensembles
from deepred.predict.splits import predict_model
from deepred.contracts.predictions import read_predictions, write_predictions
from deepred.predict.predictor import load_model
from deepred.training.train import nmad, train_model


def write_members(root, z_true, split, members: dict[str, np.ndarray]) -> dict:
    paths = {}
    ids = [f"o{i:04d}" for i in range(len(z_true))]
    for m, z in members.items():
        df = pd.DataFrame({"object_id": ids, "split": split, "z_true": z_true, "z_pred": z})
        paths[m] = root / "predictions" / m / "d.parquet"
        write_predictions(paths[m], df)
    return paths


def synthetic(seed=0, n=600):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 1.0, n)
    split = np.where(np.arange(n) % 2 == 0, "val", "test")
    members = {
        "a": z + rng.normal(0, 0.05, n),  # unbiased, noisy
        "b": 0.7 * z + 0.15 + rng.normal(0, 0.03, n),  # shrunk towards the mean
        "c": z + 0.08 + rng.normal(0, 0.06, n),  # biased
    }
    return z, split, members


def test_stacked_fit_uses_validation_rows_only(tmp_path):
    z, split, members = synthetic()
    cfg = tiny_config({"d": {}})
    paths = write_members(tmp_path / "one", z, split, members)
    a = fit_ensembles("d", cfg, paths, tmp_path / "one" / "models", tmp_path / "one" / "predictions")
    # replace every test-row prediction by garbage: the fitted weights must not move
    test = split == "test"
    rng = np.random.default_rng(5)
    spoiled = {m: np.where(test, rng.uniform(-5, 5, len(z)), v) for m, v in members.items()}
    paths2 = write_members(tmp_path / "two", z, split, spoiled)
    b = fit_ensembles("d", cfg, paths2, tmp_path / "two" / "models", tmp_path / "two" / "predictions")
    sa, sb = a["ensemble_stacked"], b["ensemble_stacked"]
    assert sa["weights"] == sb["weights"] and sa["intercept"] == sb["intercept"]
    assert sa["fit_split"] == "val" and sa["n_fit"] == int((split == "val").sum())
    meta = json.loads((tmp_path / "one" / "models" / "ensemble_stacked" / "d" / "model.json").read_text())
    assert meta["weights"] == sa["weights"] and meta["members"] == ["a", "b", "c"]
    assert all(w >= 0 for w in meta["weights"].values())


def test_stacked_is_no_worse_than_its_best_member_on_test(tmp_path):
    z, split, members = synthetic(seed=1)
    paths = write_members(tmp_path, z, split, members)
    fit_ensembles("d", tiny_config({"d": {}}), paths, tmp_path / "models", tmp_path / "predictions")
    stacked, grid = read_predictions(tmp_path / "predictions" / "ensemble_stacked" / "d.parquet")
    mean, _ = read_predictions(tmp_path / "predictions" / "ensemble_mean" / "d.parquet")
    assert grid is None and list(stacked.columns) == ["object_id", "split", "z_true", "z_pred"]
    test = stacked["split"] == "test"
    ids = stacked.loc[test, "object_id"].str[1:].astype(int).to_numpy()
    best = min(nmad(members[m][ids], z[ids]) for m in members)
    assert nmad(stacked.loc[test, "z_pred"], stacked.loc[test, "z_true"]) <= best
    np.testing.assert_allclose(mean["z_pred"], np.mean([members[m] for m in members], axis=0)[
        mean["object_id"].str[1:].astype(int).to_numpy()])


def test_misaligned_member_files_are_named(tmp_path):
    z, split, members = synthetic(n=60)
    paths = write_members(tmp_path, z, split, members)
    df, _ = read_predictions(paths["b"])
    write_predictions(paths["b"], df.iloc[:-3])
    with pytest.raises(EnsembleError, match=r"b/d.parquet: 3 objects not shared"):
        fit_ensembles("d", tiny_config({"d": {}}), paths, tmp_path / "m", tmp_path / "p")


def test_saved_ensemble_predicts_new_cutouts_like_the_pipeline(tiny_dataset, tmp_path, monkeypatch):
    cfg = tiny_config({"tiny": {}}, results_dir=tmp_path)
    cfg["training"].update({"epochs": 1, "batch_size": 32})
    paths = {}
    for m in ("a1", "netz"):  # two quick networks stand in for the backbones
        train_model(m, "tiny", cfg, tiny_dataset, tmp_path / "models" / m / "tiny")
        paths[m] = tmp_path / "predictions" / m / "tiny.parquet"
        predict_model(tmp_path / "models" / m / "tiny", tiny_dataset, paths[m])
    fit_ensembles("tiny", cfg, paths, tmp_path / "models", tmp_path / "predictions")
    import deepred.models.checkpoint as checkpoint

    loads = []
    load_trained = checkpoint.load_trained
    monkeypatch.setattr(checkpoint, "load_trained", lambda d: loads.append(d) or load_trained(d))
    ens = load_model(tmp_path / "models" / "ensemble_stacked" / "tiny")
    proc = ProcessedDataset(tiny_dataset)
    test = proc.split("test")
    z = ens.predict(proc.images(test))["z_pred"]
    np.testing.assert_array_equal(ens.predict(proc.images(test))["z_pred"], z)
    assert len(loads) == 2 and ens.kind == "ensemble"  # each member loaded once, when the ensemble is
    pred, _ = read_predictions(tmp_path / "predictions" / "ensemble_stacked" / "tiny.parquet")
    want = pred.set_index("object_id").loc[test["object_id"].astype(str), "z_pred"].to_numpy()
    np.testing.assert_allclose(z, want, rtol=1e-5)
    assert ens.meta["bands"] == ["g", "r", "i", "z"] and ens.meta["cutout"] == 45


@pytest.mark.parametrize("convex", [True, False])
def test_convex_and_free_stacks(tmp_path, convex):
    """convex: weights >= 0 summing to one, no intercept; off: non-negative least squares with an intercept,
    which can undo a member's shrinkage towards the mean (member b) where a convex combination cannot."""
    z, split, members = synthetic(seed=2)
    cfg = tiny_config({"d": {}})
    cfg["ensemble"]["convex"] = convex
    fit = fit_ensembles("d", cfg, write_members(tmp_path, z, split, members), tmp_path / "m", tmp_path / "p")
    st = fit["ensemble_stacked"]
    w = np.array(list(st["weights"].values()))
    assert (w >= 0).all() and st["convex"] is convex
    if convex:
        assert w.sum() == pytest.approx(1.0) and st["intercept"] == 0.0
        assert st["weights"]["c"] < 0.2  # the biased member gets little weight
    else:
        assert st["intercept"] != 0.0


def test_cross_validation_chooses_between_the_stack_and_the_best_member(tmp_path):
    """One dominant member among noisy ones: the stack's weights only add variance, so 5-fold validation picks
    the member alone; two equally good members with independent errors: averaging them wins, the stack stays."""
    rng = np.random.default_rng(3)
    n = 600
    z = rng.uniform(0.1, 1.0, n)
    split = np.where(np.arange(n) % 2 == 0, "val", "test")
    cfg = tiny_config({"d": {}})
    cfg["ensemble"].update({"convex": True, "cv_folds": 5})
    dominant = {"good": z + rng.normal(0, 0.01, n), "bad1": z + rng.normal(0, 0.08, n),
                "bad2": 0.5 * z + 0.3 + rng.normal(0, 0.08, n)}
    st = fit_ensembles("d", cfg, write_members(tmp_path / "a", z, split, dominant), tmp_path / "a" / "m",
                       tmp_path / "a" / "p")["ensemble_stacked"]
    sel = st["cv_selection"]
    assert sel["chosen"] == "good" and sel["folds"] == 5
    assert sel["cv_nmad_best_member"] < sel["cv_nmad_stacked"]
    assert st["weights"] == {"good": 1.0, "bad1": 0.0, "bad2": 0.0} and st["intercept"] == 0.0
    twins = {"x": z + rng.normal(0, 0.03, n), "y": z + rng.normal(0, 0.03, n)}
    st = fit_ensembles("d", cfg, write_members(tmp_path / "b", z, split, twins), tmp_path / "b" / "m",
                       tmp_path / "b" / "p")["ensemble_stacked"]
    assert st["cv_selection"]["chosen"] == "stacked"
    assert st["cv_selection"]["cv_nmad_stacked"] < st["cv_selection"]["cv_nmad_best_member"]
    assert 0.3 < st["weights"]["x"] < 0.7
    cfg["ensemble"]["cv_folds"] = 1
    with pytest.raises(EnsembleError, match="cv_folds=1"):
        fit_ensembles("d", cfg, write_members(tmp_path / "c", z, split, twins), tmp_path / "c" / "m",
                      tmp_path / "c" / "p")
