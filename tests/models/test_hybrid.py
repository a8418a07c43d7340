"""DeepRed hybrids (deepred/models/hybrid.py) and the photometric features file they share with the photometric
baseline (deepred/features/table.py): the file is measured once and read back exactly, hybrids train, calibrate,
predict and explain through the same interfaces as every network, and the two controls do what their names say."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_dataset, tiny_config

from deepred.baselines.photometry import PhotometryModel, train_photometry
from deepred.contracts.config import ConfigError, validate_config
from deepred.contracts.predictions import write_predictions
from deepred.contracts.processed import FEATURES_FILE, ProcessedDataset
from deepred.core.model_names import HYBRID_FAMILY, enabled_networks, model_family, table_models
from deepred.features.photometry import PhotometryError, PhotometryParams, photometry_features
from deepred.features.table import feature_matrix, read_record, write_features
from deepred.models.hybrid import HybridNet, swap_images
from deepred.models.registry import build_model
from deepred.predict.predictor import load_model
from deepred.predict.splits import calibrate_model
from deepred.results.hybrid_controls import controls_table
from deepred.training.resume import fingerprint
from deepred.training.train import setup_run, train_model


@pytest.fixture(scope="module")
def hybrid_data(tmp_path_factory):
    """A tiny processed dataset of its own (the features file is written into it), its config, and the results folder
    with the fitted photometric baseline the residual hybrids correct."""
    root = tmp_path_factory.mktemp("hybrid")
    proc = make_tiny_dataset(root / "data")
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=root / "data", results_dir=root / "results")
    cfg["training"].update(epochs=1, threads=1)
    cfg["baselines"]["photometry"].update(learning_rate=[0.1], max_leaf_nodes=[15], max_iter=60)
    write_features(proc, cfg["baselines"]["photometry"], proc / FEATURES_FILE, cfg)
    train_photometry("tiny", cfg, proc, _photometry_dir(root / "results"))
    return proc, cfg, root / "results"


def _photometry_dir(results):
    return results / "models" / "photometry" / "tiny"


def _params(cfg):
    return PhotometryParams.from_config(cfg["baselines"]["photometry"], 45)


def test_features_file_holds_what_the_cutouts_measure(hybrid_data):
    proc, cfg, _ = hybrid_data
    ds = ProcessedDataset(proc)
    record = read_record(proc / FEATURES_FILE)
    assert record["bands"] == list("griz") and record["provenance"]["inputs"]
    assert len(record["features"]) == 7 * 4 + 4 + 2  # (3 apertures + Kron) x (4 mags + 3 colours), errors, shape
    rows = ds.catalog.sample(frac=1.0, random_state=1)  # any order: looked up by object_id
    direct = photometry_features(ds.images(rows), ds.stats["scaling"], _params(cfg))
    np.testing.assert_array_equal(feature_matrix(ds, rows, _params(cfg)), direct)
    other = PhotometryParams((2.0, 5.0), 1.5)  # not how the file was measured: measured again, not read
    np.testing.assert_array_equal(feature_matrix(ds, rows.head(5), other),
                                  photometry_features(ds.images(rows.head(5)), ds.stats["scaling"], other))


def test_features_file_problems_name_the_file(hybrid_data, tmp_path):
    proc, cfg, _ = hybrid_data
    ds = ProcessedDataset(proc)
    stranger = ds.catalog.head(2).assign(object_id=["nobody", "noone"])
    with pytest.raises(PhotometryError, match=rf"{FEATURES_FILE}: no features for 2 catalogue rows"):
        feature_matrix(ds, stranger, _params(cfg))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not parquet")
    with pytest.raises(PhotometryError, match="bad.parquet: not a DeepRed photometric features file"):
        read_record(bad)


def test_hybrid_trains_predicts_and_is_explained_like_any_network(hybrid_data):
    proc, cfg, results = hybrid_data
    model_dir = results / "models" / "hybrid_resnet" / "tiny"
    meta = train_model("hybrid_resnet", "tiny", cfg, proc, model_dir, threads=1, photometry_dir=_photometry_dir(results))
    assert meta["kind"] == "hybrid" and meta["hybrid"]["backbone"] == "resnet" and meta["hybrid"]["control"] is None
    assert meta["hybrid"]["fusion"] == "residual" and (model_dir / "photometry" / "model.npz").is_file()
    assert meta["hybrid"]["features"]["features"] == read_record(proc / FEATURES_FILE)["features"]
    calibrate_model(model_dir, proc, cfg)
    pred = load_model(model_dir)
    assert isinstance(pred.trained.net, HybridNet) and pred.gives_pdf
    ds = ProcessedDataset(proc)
    test = ds.split("test")
    from_file = pred.predict_rows(ds, test)
    measured = pred.predict(ds.images(test))  # users' cutouts: the predictor measures the features itself
    np.testing.assert_allclose(from_file["z_pred"].to_numpy(), measured["z_pred"], rtol=0, atol=1e-6)
    module = pred.point_module()  # what SHAP explains: images in, photometry at its training mean
    x = torch.from_numpy(ds.images(test.head(3))).requires_grad_()
    (grad,) = torch.autograd.grad(module(x).sum(), x)
    assert module(x).shape == (3, 1) and grad.abs().sum() > 0


def test_noimage_control_never_looks_at_the_pixels(hybrid_data):
    proc, cfg, results = hybrid_data
    model_dir = results / "models" / "hybrid_resnet_noimage" / "tiny"
    train_model("hybrid_resnet_noimage", "tiny", cfg, proc, model_dir, threads=1, photometry_dir=_photometry_dir(results))
    pred = load_model(model_dir)
    ds = ProcessedDataset(proc)
    test = ds.split("test")
    f = pred._features(ds, test)  # the features and the trees' prediction
    images = ds.images(test)
    z = pred.predict(images, f)["z_pred"]
    np.testing.assert_array_equal(pred.predict(images[::-1].copy(), f)["z_pred"], z)
    assert np.std(z) > 0  # the features still move it


def test_swap_images_is_a_seeded_derangement_within_each_split(hybrid_data):
    proc, _, _ = hybrid_data
    cat = ProcessedDataset(proc).catalog
    swapped = swap_images(cat, 11)
    assert swapped.equals(swap_images(cat, 11)) and not swapped.equals(swap_images(cat, 12))
    pairs = list(zip(cat["shard"], cat["row"]))
    for split, idx in cat.groupby("split").indices.items():
        before = sorted(pairs[i] for i in idx)
        after = list(zip(swapped["shard"].iloc[idx], swapped["row"].iloc[idx]))
        assert sorted(after) == before  # the split's own images, each used once
        assert all(a != pairs[i] for a, i in zip(after, idx))  # nobody keeps their own image
    pd.testing.assert_frame_equal(swapped.drop(columns=["shard", "row"]), cat.drop(columns=["shard", "row"]))


def test_shuffled_control_predicts_on_the_images_it_trained_on(hybrid_data):
    proc, cfg, results = hybrid_data
    model_dir = results / "models" / "hybrid_resnet_shuffled" / "tiny"
    meta = train_model("hybrid_resnet_shuffled", "tiny", cfg, proc, model_dir, threads=1,
                       photometry_dir=_photometry_dir(results))
    assert meta["hybrid"]["control"] == "shuffled" and meta["hybrid"]["swap_seed"] is not None
    pred = load_model(model_dir)
    ds = ProcessedDataset(proc)
    test = ds.split("test")
    seen = pred._rows_as_seen(test)
    assert (seen["row"].to_numpy() != test["row"].to_numpy()).any()
    f = pred._features(ds, test)  # the object's own photometry, another object's image
    np.testing.assert_allclose(pred.predict_rows(ds, test)["z_pred"].to_numpy(),
                               pred.predict(ds.images(seen), f)["z_pred"], rtol=0, atol=1e-6)


def test_hybrid_config_names_and_families():
    cfg = tiny_config({"tiny": {}})
    assert "hybrid_resnet" in table_models(cfg) and "hybrid_resnet_noimage" not in table_models(cfg)
    assert model_family(cfg, "hybrid_resnet") == HYBRID_FAMILY
    assert model_family(cfg, "ensemble_stacked") == "deepred_ensemble"  # image-only members: the paper's row
    mixed = copy.deepcopy(cfg)
    mixed["ensemble"]["members"] = ["resnet", "hybrid_resnet", "photometry"]
    assert model_family(validate_config(mixed), "ensemble_stacked") == HYBRID_FAMILY
    bad = copy.deepcopy(cfg)
    bad["hybrid"]["backbones"] = ["resnett"]
    with pytest.raises(ConfigError, match=r"'hybrid.backbones': 'resnett' is not an enabled architecture .*'resnet'"):
        validate_config(bad)
    no_trees = copy.deepcopy(cfg)
    no_trees["baselines"]["photometry"]["enabled"] = False  # residual hybrids: nothing to correct, none trained
    assert "hybrid_resnet" not in enabled_networks(validate_config(no_trees))
    no_trees["hybrid"]["fusion"] = "concat"  # the concatenated head needs only the features
    assert "hybrid_resnet" in enabled_networks(validate_config(no_trees))
    pdf = copy.deepcopy(cfg)
    pdf["architectures"]["resnet"]["head"] = "pdf"
    with pytest.raises(ConfigError, match=r"architectures.resnet.head is 'pdf'; use fusion: concat"):
        validate_config(pdf)
    pdf["hybrid"]["fusion"] = "concat"
    validate_config(pdf)


def test_a_residual_hybrid_starts_at_the_trees_prediction(hybrid_data):
    """Zero-initialized output layer: before any step the residual hybrid predicts the photometric baseline's z."""
    proc, cfg, results = hybrid_data
    net = build_model("hybrid_resnet", cfg, 4, 45).eval()
    ds = ProcessedDataset(proc)
    test = ds.split("test")
    f = feature_matrix(ds, test, _params(cfg))
    trees = PhotometryModel.load(_photometry_dir(results))
    inputs = trees.with_prediction(f)
    net.set_normalization(ds.stats["band_mean"], ds.stats["band_std"], 0.5, 0.3)
    net.set_feature_normalization(inputs.mean(axis=0), inputs.std(axis=0))
    with torch.no_grad():
        z = net.point(net(torch.from_numpy(ds.images(test)), torch.from_numpy(inputs).float())).numpy()
    np.testing.assert_allclose(z, trees.trees.predict(f), rtol=0, atol=1e-5)


def _pred_file(path, ids, z_true, err):
    frame = pd.DataFrame({"object_id": ids, "split": "test", "z_true": z_true, "z_pred": z_true + err})
    write_predictions(path, frame)
    return str(path)


def test_controls_table_reads_the_paired_intervals(hybrid_data, tmp_path):
    proc, cfg, _ = hybrid_data
    cfg = copy.deepcopy(cfg)
    test = ProcessedDataset(proc).split("test")
    ids, z = test["object_id"].astype(str).to_numpy(), test["z_lens"].to_numpy(float)
    noise = np.random.default_rng(0).normal(size=(4, len(z)))
    scale = {"photometry": 0.05, "hybrid_resnet": 0.02, "hybrid_resnet_shuffled": 0.05,
             "hybrid_resnet_noimage": 0.2, "resnet": 0.1}
    pred = {(m, "tiny"): _pred_file(tmp_path / f"{m}.parquet", ids, z,
                                    s * (1 + z) * (noise[0] if m in ("photometry", "hybrid_resnet_shuffled")
                                                   else noise[1 + i % 3]))
            for i, (m, s) in enumerate(scale.items())}
    table = controls_table(cfg, pred, {"tiny": str(proc)}).set_index("variant")
    assert list(table.index) == ["hybrid", "shuffled", "noimage", "image_only"]
    assert table.loc["hybrid", "reading"] == "better than photometry"
    assert table.loc["noimage", "reading"] == "worse than photometry"
    # the same errors as photometry's: R = 1 exactly, and a paired interval of zero width around it
    assert table.loc["shuffled", "R_photometry"] == 1.0 and table.loc["shuffled", "R_ci_lo"] == 1.0
    assert table.loc["shuffled", "reading"] == "no different from photometry"
    assert (table["photometry_nmad"] > 0).all() and (table["n"] == len(z)).all()


def test_refitted_trees_change_the_resume_fingerprint(hybrid_data, tmp_path):
    """A rerun after the photometric baseline changed must retrain the hybrid, not resume its finished run."""
    proc, cfg, results = hybrid_data
    other = tmp_path / "photometry"
    shutil.copytree(_photometry_dir(results), other)
    oof = pd.read_parquet(other / "oof_train.parquet")
    oof.assign(z_oof=oof["z_oof"] + 0.01).to_parquet(other / "oof_train.parquet")
    keys = [fingerprint(setup_run("hybrid_resnet", "tiny", cfg, proc, threads=1, photometry_dir=d), cfg, proc)
            for d in (_photometry_dir(results), _photometry_dir(results), other)]
    assert keys[0] == keys[1] != keys[2]
