"""The SHAP stage as the workflow runs it: a network trained by deepred.training.train.train_model on a real
normalized dataset, explained through load_trained(...).point_module(), then the study table and the figures."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from deepred.contracts.config import ConfigError, validate_config
from deepred.explain.attributions import ExplainError, explain_model, load_explained
from deepred.results.shap_table import TABLE_COLUMNS, write_localization_table
from deepred.explain.shuffled import shuffled_control
from deepred.results.shap_figures import shap_figures


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    from deepred.training.train import train_model

    root = tmp_path_factory.mktemp("shap_pipeline")
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent, results_dir=root)
    cfg["training"]["epochs"] = 3
    cfg["shap"].update(models=["a1"], n_explain=12, n_background=8, nsamples=16)
    cfg["test_sets"]["tiny_hpl"] = {"dataset": "tiny", "table": "tiny", "query": "high_prob_lens"}
    model_dir = root / "models" / "a1" / "tiny"
    train_model("a1", "tiny", cfg, tiny_dataset, model_dir, threads=1)
    return cfg, model_dir, root


def test_explain_model_writes_scores_maps_and_provenance(trained, tiny_dataset):
    cfg, model_dir, root = trained
    out = root / "shap" / "a1" / "tiny"
    per_image = explain_model(model_dir, tiny_dataset, cfg, out, model="a1", dataset="tiny")
    ex = load_explained(out)
    assert len(per_image) == 12 and ex["attributions"].shape == (12, 4, 45, 45)
    assert ex["regions"].shape == (12, 45, 45) and ex["regions"].any(axis=(1, 2)).all()
    assert set(per_image["region_source"]) == {"mask"}  # the tiny dataset carries true footprints
    assert per_image["hit"].isin([True, False]).all() and per_image["mass_inside"].between(0, 1).all()
    test_ids = set(pd.read_parquet(tiny_dataset / "catalog.parquet").query("split == 'test'")["object_id"])
    assert set(per_image["object_id"]) <= test_ids
    # the default method: expected gradients summed over windows of the network's input unit (its stem's kernel)
    from deepred.explain.attributions import patch_size
    from deepred.predict.predictor import load_model

    assert ex["meta"]["provenance"]["inputs"] and ex["meta"]["method"] == "expected_gradients_patch"
    assert ex["meta"]["window_px"] == patch_size(load_model(model_dir).point_module()) > 1
    assert set(per_image["method"]) == {"expected_gradients_patch"}
    # the occlusion control: every test cutout predicted clean and with each region hidden
    occl = pd.read_parquet(out / "occlusion.parquet")
    assert set(occl["object_id"]) == test_ids and ex["meta"]["n_occluded"] == len(occl)
    assert occl[["z_clean", "z_object", "z_elsewhere", "z_wide", "z_wide_elsewhere"]].notna().all().all()
    # the module explained is the trained one: its z_pred equals the model's own prediction
    from deepred.contracts.processed import ProcessedDataset
    from deepred.models.checkpoint import load_trained

    ds = ProcessedDataset(tiny_dataset)
    rows = ds.catalog.set_index("object_id").loc[per_image["object_id"]].reset_index()
    np.testing.assert_allclose(per_image["z_pred"], load_trained(model_dir).predict(ds.images(rows))["z_pred"],
                               rtol=1e-5)
    # same config, same numbers (a second run into another folder)
    again = explain_model(model_dir, tiny_dataset, cfg, root / "again", model="a1", dataset="tiny")
    pd.testing.assert_frame_equal(per_image, again)
    np.testing.assert_array_equal(ex["attributions"], np.load(root / "again" / "attributions.npy"))


def test_table_and_figures(trained, tiny_dataset):
    cfg, model_dir, root = trained
    out = root / "shap" / "a1" / "tiny"
    if not (out / "per_image.parquet").exists():
        explain_model(model_dir, tiny_dataset, cfg, out, model="a1", dataset="tiny")
    shuffled = root / "shap" / "a1" / "tiny" / "shuffled"
    short = copy.deepcopy(cfg)
    short["training"]["epochs"] = 1
    shuffled_control("a1", "tiny", short, tiny_dataset, shuffled, threads=1)
    assert (shuffled / "model" / "model.json").exists() and not (shuffled / "model" / "last.safetensors").exists()
    assert not (shuffled / "shuffled_data").exists()  # the shuffled view is removed once trained
    entries = [["a1", "tiny", str(out / "per_image.parquet"), str(out / "occlusion.parquet"),
                str(shuffled / "per_image.parquet")]]
    csv, prov = root / "tables" / "shap_localization.csv", root / "tables" / "shap.json"
    write_localization_table(cfg, entries, {"tiny": str(tiny_dataset)}, csv, prov)
    table = pd.read_csv(csv)
    assert list(table.columns) == TABLE_COLUMNS
    full = table[(table.test_set == "tiny") & (table.subset == "all")].iloc[0]
    assert full["n"] == 12 and 0 <= full["pointing_lo"] <= full["pointing_acc"] <= full["pointing_hi"] <= 1
    assert full["method"] == "expected_gradients_patch" and -1 <= full["split_half_rho"] <= 1
    assert full["occl_n"] > 12 and full["looks_at"] in ("object", "around_object", "not_object")
    assert full["reliance_lo"] <= full["reliance"] <= full["reliance_hi"]
    assert full["swap_reliance_lo"] <= full["swap_reliance"] <= full["swap_reliance_hi"]
    assert full["swap_uses_object"] in ("yes", "no")
    assert 0 <= full["shuffled_pointing_lo"] <= full["shuffled_pointing_acc"] <= full["shuffled_pointing_hi"] <= 1
    # without the controls' files the columns are empty, not missing
    write_localization_table(cfg, [entries[0][:3]], {"tiny": str(tiny_dataset)}, root / "bare.csv", prov)
    bare = pd.read_csv(root / "bare.csv")
    assert list(bare.columns) == TABLE_COLUMNS and bare["reliance"].isna().all()
    write_localization_table(cfg, entries, {"tiny": str(tiny_dataset)}, csv, prov)
    hpl = table[(table.test_set == "tiny_hpl") & (table.subset == "all")]
    assert len(hpl) == 1 and 0 < hpl["n"].iloc[0] < 12  # the query narrows the explained rows
    assert json.loads(prov.read_text())["inputs"]
    first = csv.read_bytes()
    write_localization_table(cfg, entries, {"tiny": str(tiny_dataset)}, csv, prov)
    assert csv.read_bytes() == first  # byte-identical for identical inputs

    pngs = {"a1": root / "figures" / "examples_a1.png"}
    snr_png = root / "figures" / "accuracy_vs_snr.png"
    shap_figures(cfg, "tiny", {"a1": str(out)}, tiny_dataset, pngs, snr_png)
    for p in (pngs["a1"], snr_png):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_bad_inputs_fail_early(trained, tiny_dataset_64, tmp_path):
    cfg, model_dir, _ = trained
    with pytest.raises(ExplainError, match="bands"):
        explain_model(model_dir, tiny_dataset_64, cfg, tmp_path / "x", model="a1", dataset="tiny64")
    bad = copy.deepcopy(cfg)
    bad["shap"]["models"] = ["a1", "resnett"]
    with pytest.raises(ConfigError, match="'shap.models': 'resnett' is not an enabled"):
        validate_config(bad)
    bad["shap"].update(models=["a1"], shuffled_models=["a3"])
    with pytest.raises(ConfigError, match="'shap.shuffled_models': 'a3' is not an explained network"):
        validate_config(bad)
    with pytest.raises(Exception, match="missing"):
        load_explained(tmp_path / "nothing")


def test_figures_of_a_test_set_without_explained_cutouts(tmp_path):
    """A narrow test set (e.g. kids_hpl with a small n_explain) may hold none of the explained cutouts:
    the figures say so instead of failing."""
    from deepred.results.shap_figures import accuracy_snr_figure, examples_figure

    cfg = tiny_config({"tiny": {"n": 240}})
    empty = pd.DataFrame(columns=["object_id", "class_group", "snr", "hit", "mass_inside", "region_frac",
                                  "peak_y", "peak_x", "hit_tol", "region_tol_frac"])
    examples_figure(empty, np.empty((0, 4, 9, 9)), np.empty((0, 4, 9, 9)), np.empty((0, 9, 9), bool), "none",
                    tmp_path / "ex.png", 4)
    binned = accuracy_snr_figure(cfg, "tiny", {"a1": empty}, tmp_path / "snr.png")
    assert binned.empty and (tmp_path / "ex.png").stat().st_size > 0 and (tmp_path / "snr.png").stat().st_size > 0
