"""The photometric baseline (deepred/baselines/photometry.py, deepred/baselines/gbtrees.py): sep photometry on synthetic sources of known
flux, numpy trees equal to scikit-learn's, and a fit -> save -> load_model -> predict round trip on a tiny dataset."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import tiny_config
from sklearn.ensemble import HistGradientBoostingRegressor

from deepred.baselines.gbtrees import TreeEnsemble
from deepred.baselines.photometry import (
    MAG_ZP,
    PhotometryError,
    PhotometryModel,
    PhotometryParams,
    feature_names,
    measure,
    photometry_features,
    train_photometry,
)
from deepred.contracts import model_json as card
from deepred.contracts.config import ConfigError, validate_config
from deepred.contracts.processed import ProcessedDataset
from deepred.data.normalize import scale_images
from deepred.predict.inputs.items import InferenceError
from deepred.predict.predictor import KINDS, PhotometryPredictor, load_model

SIZE, SIGMA_PSF, NOISE = 45, 2.0, 0.02
FLUXES = np.array([50.0, 100.0, 200.0])  # nanomaggies per band: colours -0.753 mag each


def _source(fluxes, offset=(0.0, 0.0), size=SIZE, sigma=SIGMA_PSF):
    """(bands, H, W) of one circular Gaussian of total flux `fluxes[b]` per band."""
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    g = np.exp(-((yy - c - offset[0]) ** 2 + (xx - c - offset[1]) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return np.asarray(fluxes)[:, None, None] * g[None]


def _noisy(images, seed=0):
    return images + NOISE * np.random.default_rng(seed).standard_normal(images.shape)


def test_photometry_recovers_known_fluxes_and_colours_through_the_asinh_shards():
    scaling = {"method": "asinh", "softening": [NOISE] * 3}
    clean = np.stack([_source(FLUXES), _source(FLUXES * 4)])
    images = scale_images(_noisy(clean) + 0.3, scaling)  # a sky level the photometry must subtract
    phot = measure(images, scaling, PhotometryParams((2.0, 4.0, 8.0), 1.5))
    # circles: the Gaussian's enclosed fraction 1 - exp(-r^2 / 2 sigma^2); Kron: >= 94% of the total (SExtractor)
    enclosed = 1 - np.exp(-np.array([2.0, 4.0, 8.0]) ** 2 / (2 * SIGMA_PSF**2))
    np.testing.assert_allclose(phot["flux"][0, :, :3], FLUXES[:, None] * enclosed[None], rtol=0.03, atol=0.3)
    assert np.all(phot["flux"][:, :, 3] / np.stack([FLUXES, FLUXES * 4]) > 0.94)
    # errors: the sky noise over the aperture's area
    area = np.pi * np.array([2.0, 4.0, 8.0]) ** 2
    np.testing.assert_allclose(phot["flux_err"][0, 0, :3], NOISE * np.sqrt(area), rtol=0.15)
    x = photometry_features(images, scaling, PhotometryParams((2.0, 4.0, 8.0), 1.5))
    names = feature_names(["g", "r", "i"], PhotometryParams((2.0, 4.0, 8.0), 1.5))
    assert x.shape == (2, len(names))
    col = dict(zip(names, x[0]))
    expected = -2.5 * np.log10(FLUXES[0] / FLUXES[1])
    for ap in ("r4", "r8", "kron"):
        assert col[f"g-r_{ap}"] == pytest.approx(expected, abs=0.015)
        assert col[f"r-i_{ap}"] == pytest.approx(expected, abs=0.015)
    assert col["mag_r_kron"] == pytest.approx(MAG_ZP - 2.5 * np.log10(FLUXES[1]), abs=0.06)
    assert dict(zip(names, x[1]))["mag_r_kron"] == pytest.approx(col["mag_r_kron"] - 2.5 * np.log10(4), abs=0.01)
    assert col["kron_radius_px"] > 2 * SIGMA_PSF and col["axis_ratio"] == pytest.approx(1.0, abs=0.1)


def test_a_neighbour_is_masked_and_a_blank_cutout_stays_finite():
    scaling, params = {"method": "none"}, PhotometryParams((2.0, 4.0, 8.0), 1.5, mask_neighbours=True)
    alone = _noisy(_source(FLUXES)[None])
    crowded = alone + _source(FLUXES * 3, offset=(0.0, 9.0))[None]
    a, c = measure(alone, scaling, params), measure(crowded, scaling, params)
    np.testing.assert_allclose(c["flux"][0, :, 3], a["flux"][0, :, 3], rtol=0.1)  # Kron: without the neighbour
    unmasked = measure(crowded, scaling, PhotometryParams((2.0, 4.0, 8.0), 1.5))
    assert np.all(unmasked["flux"][0, :, 3] > 2 * a["flux"][0, :, 3])  # the default keeps every pixel
    blank = measure(_noisy(np.zeros((1, 3, SIZE, SIZE)), seed=3), scaling, params)
    assert np.isfinite(photometry_features(_noisy(np.zeros((1, 3, SIZE, SIZE))), scaling, params)).all()
    assert np.isfinite(blank["flux"]).all()


def test_minmax_shards_keep_colours_exactly():
    """minmax maps one image's bands by one affine map: after the sky is subtracted, colours are unchanged."""
    params = PhotometryParams((2.0, 4.0, 8.0), 1.5)
    raw = _noisy(_source(FLUXES)[None])
    names = feature_names(["g", "r", "i"], params)
    flux_cols = [i for i, n in enumerate(names) if "-" in n]
    x_raw = photometry_features(raw, {"method": "none"}, params)
    x_mm = photometry_features(scale_images(raw, {"method": "minmax"}), {"method": "minmax"}, params)
    np.testing.assert_allclose(x_mm[:, flux_cols], x_raw[:, flux_cols], atol=1e-5)


def test_numpy_trees_equal_sklearn_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6))
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values follow each split's learned side
    y = np.nansum(x[:, :3], axis=1) + 0.1 * rng.standard_normal(300)
    gbr = HistGradientBoostingRegressor(max_iter=40, learning_rate=0.1, early_stopping=False, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(gbr, 40)
    np.testing.assert_array_equal(trees.predict(x), gbr.predict(x))
    stage12 = list(gbr.staged_predict(x))[11]
    np.testing.assert_array_equal(TreeEnsemble.from_sklearn(gbr, 12).predict(x), stage12)
    again = TreeEnsemble.from_arrays(trees.arrays(), 6, "test")
    np.testing.assert_array_equal(again.predict(x), gbr.predict(x))


def _small_config(tiny_dataset):
    cfg = tiny_config({"tiny": {}}, data_dir=tiny_dataset.parent.parent)
    cfg["baselines"]["photometry"].update(learning_rate=[0.1], max_leaf_nodes=[7, 15], max_iter=60)
    return cfg


def test_fit_save_load_model_predict_round_trip(tiny_dataset, tmp_path):
    cfg = _small_config(tiny_dataset)
    model = train_photometry("tiny", cfg, tiny_dataset, tmp_path / "m")
    assert len(model.hyper["grid"]) == 2 and model.hyper["chosen"]["n_trees"] <= 60
    meta = card.read_card(tmp_path / "m", ValueError)
    assert (meta["model"], meta["dataset"], meta["bands"], meta["cutout"]) == ("photometry", "tiny", list("griz"), 45)
    assert len(meta["features"]) == model.trees.n_features and (tmp_path / "m" / "provenance.json").is_file()
    assert KINDS[card.PHOTOMETRY] is PhotometryPredictor
    pred = load_model(tmp_path / "m", device="auto")
    assert (pred.kind, pred.device, pred.name, pred.scaling["method"]) == ("photometry", "cpu", "photometry", "asinh")
    ds = ProcessedDataset(tiny_dataset)
    test = ds.split("test")
    frame = pred.predict_rows(ds, test)
    np.testing.assert_array_equal(frame["z_pred"].to_numpy(), model.predict_images(ds.images(test)))
    np.testing.assert_array_equal(frame["z_pred"].to_numpy(),
                                  PhotometryModel.load(tmp_path / "m").predict_images(ds.images(test)))
    # same config, same numbers
    again = train_photometry("tiny", copy.deepcopy(cfg), tiny_dataset, tmp_path / "m2")
    assert (tmp_path / "m" / "model.npz").read_bytes() == (tmp_path / "m2" / "model.npz").read_bytes()
    np.testing.assert_array_equal(again.predict_images(ds.images(test)), frame["z_pred"].to_numpy())
    with (tmp_path / "m2" / "model.npz").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(InferenceError, match="SHA-256"):
        load_model(tmp_path / "m2")


def test_bad_settings_name_the_key(tiny_dataset):
    cfg = tiny_config({"tiny": {}}, data_dir=tiny_dataset.parent.parent)
    cfg["baselines"]["photometry"]["aperture_radii_px"] = [4.0, 30.0]
    with pytest.raises(ConfigError, match=r"baselines.photometry.aperture_radii_px': 30 px does not fit the 45 px"):
        validate_config(cfg)
    with pytest.raises(PhotometryError, match="aperture_radii_px"):
        PhotometryParams.from_config({"aperture_radii_px": [30.0], "detect_thresh": 1.5, "mask_neighbours": False}, 45)
