"""Simulator outputs: file contract, determinism, per-dataset seeds, bad arguments, reader compatibility."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepred.contracts.raw import read_simulated
from deepred.simulate import SimulationError, dataset_seed, presets, simulate_dataset

N = 24


@pytest.fixture(scope="module")
def des_wide(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "des_wide"
    simulate_dataset("des_wide", N, 11, out, ["g", "r", "i", "z"], 45)
    return out


def test_output_contract(des_wide):
    images = np.load(des_wide / "images.npy", mmap_mode="r")
    masks = np.load(des_wide / "masks.npy", mmap_mode="r")
    truth = pd.read_parquet(des_wide / "truth.parquet")
    meta = json.loads((des_wide / "meta.json").read_text())
    assert images.dtype == np.float32 and images.shape == (N, 4, 45, 45)
    assert masks.dtype == np.uint8 and masks.shape == (N, 45, 45)
    assert np.isfinite(images).all()
    assert set(np.unique(masks)) <= {0, 1} and masks[:, 22, 22].all()  # centre always in the footprint
    for col in ("object_id", "system_id", "obj_class", "z_lens", "z_source", "mag_g", "mag_r", "mag_i", "mag_z", "snr"):
        assert col in truth.columns, col
    assert truth["object_id"].is_unique and len(truth) == N
    assert set(truth["obj_class"]) == {"no_lens", "gg_lens", "lensed_sn_ia", "lensed_sn_cc"}
    lensed = truth["obj_class"] != "no_lens"
    assert truth.loc[lensed, "z_source"].gt(truth.loc[lensed, "z_lens"]).all()
    assert truth.loc[~lensed, "z_source"].isna().all()
    assert truth["z_lens"].between(0.1, 0.75).all()
    assert (truth["snr"] > 0).all()
    assert meta["bands"] == ["g", "r", "i", "z"] and meta["pixel_scale"] == pytest.approx(0.2637)
    assert meta["preset"] == "des_wide" and meta["seed"] == 11 and "nanomaggies" in meta["units"]
    assert not [p for p in des_wide.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_calibration_matches_catalogue_magnitudes(tmp_path):
    """In a cutout large enough to hold the galaxy, the summed pixel flux reproduces the catalogue magnitude
    (calibrated nanomaggies, AB zero point 22.5), noise included."""
    fr = {"no_lens": 1.0, "gg_lens": 0.0, "lensed_sn_ia": 0.0, "lensed_sn_cc": 0.0}
    out = simulate_dataset("des_deep", 12, 4, tmp_path / "big", ["g", "r"], 121, class_fractions=fr, neighbours=False)
    images = np.load(out / "images.npy")
    truth = pd.read_parquet(out / "truth.parquet")
    for j, b in enumerate(["g", "r"]):
        ratio = images[:, j].sum(axis=(1, 2)) / 10 ** (-0.4 * (truth[f"mag_{b}"].to_numpy() - 22.5))
        assert np.median(ratio) == pytest.approx(1.0, abs=0.05), b


def test_readable_by_normalization_reader(des_wide):
    src = read_simulated(des_wide)
    assert src.bands == ["g", "r", "i", "z"] and src.n_objects == N
    chunk = next(src.chunks(10))
    assert chunk.images.shape == (10, 4, 45, 45) and chunk.masks.shape == (10, 45, 45)


def test_deterministic_bytes(tmp_path, des_wide):
    again = tmp_path / "again"
    simulate_dataset("des_wide", N, 11, again, ["g", "r", "i", "z"], 45)
    for name in ("images.npy", "masks.npy", "truth.parquet"):
        assert (again / name).read_bytes() == (des_wide / name).read_bytes(), name


def test_seed_and_preset_change_the_data(tmp_path, des_wide):
    other = tmp_path / "other"
    simulate_dataset("des_wide", N, 12, other, ["g", "r", "i", "z"], 45)
    a = pd.read_parquet(des_wide / "truth.parquet")["z_lens"].to_numpy()
    b = pd.read_parquet(other / "truth.parquet")["z_lens"].to_numpy()
    assert not np.allclose(a, b)
    assert dataset_seed(11, "des_wide") != dataset_seed(11, "des_deep")


@pytest.mark.parametrize("preset,bands,cutout", [("kids", ["u", "g", "r", "i"], 33), ("sdss", list("ugriz"), 64)])
def test_kids_and_sdss_presets(tmp_path, preset, bands, cutout):
    out = simulate_dataset(preset, 16, 3, tmp_path / preset, bands, cutout)
    truth = pd.read_parquet(out / "truth.parquet")
    images = np.load(out / "images.npy")
    assert images.shape == (16, len(bands), cutout, cutout)
    if preset == "kids":
        assert set(truth["obj_class"]) <= {"galaxy", "lens_candidate"}
        assert truth["high_prob_lens"].dtype == bool
        assert not truth.loc[truth["obj_class"] == "galaxy", "high_prob_lens"].any()
    else:
        assert (truth["obj_class"] == "galaxy").all()
        dereddened_r = truth["mag_r"] - 2.285 * truth["ebv"]  # SDSS selects on extinction-corrected r
        assert (dereddened_r <= 17.8 + 1e-9).all() and (truth["z_lens"] < 0.4).all()
        assert truth["ebv"].gt(0).all() and truth["ebv"].median() < 0.1


def test_neighbours_add_light_outside_the_footprint(tmp_path, des_wide):
    """Unrelated field galaxies share some cutouts; they add flux but are not part of the central mask."""
    truth = pd.read_parquet(des_wide / "truth.parquet")
    assert truth["n_neighbours"].between(0, 3).all() and truth["n_neighbours"].gt(0).any()
    alone = simulate_dataset("des_wide", N, 11, tmp_path / "alone", ["g", "r", "i", "z"], 45, neighbours=False)
    with_nb = np.load(des_wide / "images.npy")
    without = np.load(alone / "images.npy")
    masks_a, masks_b = np.load(des_wide / "masks.npy"), np.load(alone / "masks.npy")
    np.testing.assert_array_equal(masks_a, masks_b)  # same central objects, same footprints
    has = truth["n_neighbours"].to_numpy() > 0
    extra = (with_nb - without).sum(axis=(1, 2, 3))
    assert np.all(extra[has] > 0)
    outside = ((with_nb - without).sum(axis=1) * (1 - masks_a)).sum(axis=(1, 2))
    assert np.median(outside[has] / extra[has]) > 0.5  # most neighbour light falls outside the footprint


def test_all_presets_known():
    assert set(presets()) == {"des_deep", "des_wide", "desi_dot", "lsst_wide", "kids", "sdss"}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"preset": "hsc_deep"}, "unknown simulator preset 'hsc_deep'; known presets: des_deep"),
        ({"bands": ["g", "u"]}, r"band\(s\) \['u'\] not available; available bands: g, r, i, z"),
        ({"preset": "kids", "bands": ["g", "z"]}, r"preset 'kids': band\(s\) \['z'\]"),
        ({"n_systems": 0}, "n_systems must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"cutout": 4}, "cutout must be an integer between 8 and 512"),
        ({"class_fractions": {"no_lens": 0.5, "gg_lens": 0.2}}, "must be >= 0 and sum to 1"),
        ({"class_fractions": {"galaxy": 1.0}}, r"unknown class\(es\) \['galaxy'\]"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    args = dict(preset="des_wide", n_systems=8, seed=1, out_dir=tmp_path / "x", bands=["g", "r", "i", "z"], cutout=45)
    args.update(kwargs)
    with pytest.raises(SimulationError, match=match):
        simulate_dataset(**args)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "preset,bands,fractions,expected",
    [
        ("lsst_wide", list("griz"), {"no_lens": 0.5, "gg_lens": 0.5}, {"no_lens": 10, "gg_lens": 10}),
        ("kids", list("ugri"), {"galaxy": 0.25, "lens_candidate": 0.75}, {"galaxy": 5, "lens_candidate": 15}),
    ],
)
def test_class_fractions_are_honoured(tmp_path, preset, bands, fractions, expected):
    out = simulate_dataset(preset, 20, 5, tmp_path / "l", bands, 33, class_fractions=fractions)
    counts = pd.read_parquet(out / "truth.parquet")["obj_class"].value_counts().to_dict()
    assert counts == expected
