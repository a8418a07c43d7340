"""SHAP attributions and localization on real (tiny) trained networks and real normalized data.

The key test shows the score can fail: a network trained on images whose redshift signal sits on an
off-centre companion looks at the companion (low localization), while the same network trained on
images whose signal is the central object looks at the object, and scores higher than untrained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from deepred.contracts.processed import ProcessedDataset
from deepred.data.normalize import normalize
from deepred.contracts.raw import read_simulated
from deepred.explain.attributions import (
    ExplainError,
    attribution_method,
    explain_and_score,
    patch_size,
    shap_attributions,
    window_sums,
)
from deepred.explain.scoring import summarize
from deepred.explain.controls import occlusion_control, occlusion_scores

C = 24  # cutout side
SHAP_CFG = dict(n_explain=24, n_background=16, nsamples=32, batch_size=64, snr_bins=3, segmentation_thresh=1.5,
                pointing_tolerance=2, occlusion_n=None, occlusion_grow_px=2)
# expected_gradients_patch on the toy CNN: windows of its first convolution's 3 px kernel
PATCH_CFG = dict(SHAP_CFG, method="expected_gradients_patch", patch_px=None)
# occlusion maps: windows of 2.5 x that kernel (8 px) every 3 px, two noise draws
OCC_CFG = dict(SHAP_CFG, method="occlusion", occlusion_map_window=2.5, occlusion_map_stride_px=3,
               occlusion_map_draws=2, occlusion_map_fill="background")
WINDOW = {"expected_gradients": 1, "expected_gradients_patch": 3, "occlusion": 8}


def write_signal_dataset(root: Path, signal_on: str, n: int = 400, seed: int = 0, real_like: bool = False
                         ) -> ProcessedDataset:
    """A central object (its true footprint in masks.npy) and a brighter companion in a corner.
    signal_on='object': the object's flux encodes z, the companion's is random;
    signal_on='companion': the other way round. real_like: no masks and no snr column (as real surveys)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 1.0, n)
    yy, xx = np.mgrid[:C, :C]
    ctr = (C - 1) / 2
    obj = np.exp(-0.5 * ((yy - ctr) ** 2 + (xx - ctr) ** 2) / 1.5**2)
    comp = np.exp(-0.5 * ((yy - 4) ** 2 + (xx - 4) ** 2) / 1.5**2)
    f_z, f_rand = 40 + 160 * z, rng.uniform(120, 240, n)
    f_obj, f_comp = (f_z, f_rand) if signal_on == "object" else (f_rand, f_z)
    noiseless = f_obj[:, None, None] * obj + f_comp[:, None, None] * comp
    images = noiseless[:, None].repeat(2, 1) + rng.normal(0, 1, (n, 2, C, C))
    masks = (f_obj[:, None, None] * obj > 1.0).astype(np.uint8)  # footprint: above the 1-sigma noise
    raw = root / "raw"
    raw.mkdir(parents=True)
    np.save(raw / "images.npy", images.astype(np.float32))
    if not real_like:
        np.save(raw / "masks.npy", masks)
    truth = pd.DataFrame({
        "object_id": [f"o{i:04d}" for i in range(n)],
        "system_id": [f"s{i:04d}" for i in range(n)],
        "obj_class": np.array(["galaxy", "gg_lens", "lensed_sn_ia"])[np.arange(n) % 3],
        "z_lens": z,
        "snr": f_obj / 3.0,
    })
    truth.drop(columns=["snr"] if real_like else []).to_parquet(raw / "truth.parquet")
    (raw / "meta.json").write_text(json.dumps({"bands": ["g", "r"], "pixel_scale": 0.2, "survey": "toy"}))
    cfg = tiny_config({"toy": {"n": n, "bands": ["g", "r"], "cutout": C}})
    normalize(read_simulated(raw), "toy", cfg["datasets"]["toy"], root / "processed", seed=1)
    return ProcessedDataset(root / "processed")


def small_cnn() -> torch.nn.Module:
    """Position-aware (flatten + linear) so it can learn which part of the cutout carries z."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * (C // 4) ** 2, 1),
    ).eval()


def train(ds: ProcessedDataset, epochs: int = 40) -> torch.nn.Module:
    net = small_cnn().train()
    rows = ds.split("train")
    x = torch.from_numpy(ds.images(rows))
    y = torch.tensor(rows["z_lens"].to_numpy(), dtype=torch.float32)[:, None]
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for b in range(0, len(x), 32):
            i = perm[b:b + 32]
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x[i]), y[i]).backward()
            opt.step()
    net.eval()
    test = ds.split("test")
    with torch.no_grad():
        pred = net(torch.from_numpy(ds.images(test)))[:, 0].numpy()
    rmse = np.sqrt(np.mean((pred - test["z_lens"].to_numpy()) ** 2))
    assert rmse < 0.5 * test["z_lens"].std(), "the toy network must really learn z for the test to mean anything"
    return net


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = {}
    for where in ("object", "companion"):
        ds = write_signal_dataset(tmp_path_factory.mktemp(f"signal_{where}"), where)
        out[where] = (ds, train(ds))
    return out


@pytest.mark.parametrize("cfg", [SHAP_CFG, PATCH_CFG, OCC_CFG], ids=["pixel", "patch", "occlusion"])
def test_score_fails_when_the_signal_is_off_the_object_and_rewards_training(toy, cfg):
    ds_obj, net_obj = toy["object"]
    ds_comp, net_comp = toy["companion"]
    on, _, _ = explain_and_score(net_obj, ds_obj, cfg, seed=1)
    off, _, _ = explain_and_score(net_comp, ds_comp, cfg, seed=1)
    untrained, _, _ = explain_and_score(small_cnn(), ds_obj, cfg, seed=1)
    method = cfg.get("method", "expected_gradients")
    assert set(on["method"]) == {method} and set(on["window_px"]) == {WINDOW[method]}
    # Same images explained for the trained and untrained network (same seed, same dataset).
    assert on["object_id"].tolist() == untrained["object_id"].tolist()
    assert off["hit"].mean() <= 0.1 and off["mass_inside"].mean() < off["region_frac"].mean() + 0.05
    assert off["hit_tol"].mean() <= 0.1  # a small tolerance does not rescue a model that looks elsewhere
    # The object-signal network points at the object far more often than chance (region share ~0.12) and
    # than the untrained one; with the tolerance, nearly always (its peaks sit on the object's edge).
    assert on["hit"].mean() >= 0.3 and on["hit"].mean() > untrained["hit"].mean() + 0.25
    assert on["hit_tol"].mean() >= 0.7 and on["hit_tol"].mean() > untrained["hit_tol"].mean() + 0.2
    assert on["mass_inside"].mean() > untrained["mass_inside"].mean()
    # the peak of the off-object model sits on the companion (corner), not on the object
    assert (np.hypot(off["peak_y"] - 4, off["peak_x"] - 4) <= 6).mean() >= 0.8
    # the maps of a trained network are stable: two disjoint halves of the samples rank the pixels alike
    assert on["split_half_rho"].median() > 0.5
    table = summarize(on, hq_snr=40.0, n_resamples=100, seed=0).set_index("subset")
    assert {"galaxy", "lens", "lensed_sn", "high_quality"} <= set(table.index)


class CornerReader(torch.nn.Module):
    """A least-squares linear fit of z on the companion's 7 x 7 corner: a network that cannot see the object."""

    def __init__(self, ds: ProcessedDataset):
        super().__init__()
        rows = ds.split("train")
        x = ds.images(rows)[:, :, :7, :7].reshape(len(rows), -1)
        coef = np.linalg.lstsq(np.c_[x, np.ones(len(x))], rows["z_lens"].to_numpy(), rcond=None)[0]
        self.register_buffer("coef", torch.tensor(coef, dtype=torch.float32))

    def forward(self, x):
        return (x[:, :, :7, :7].flatten(1) @ self.coef[:-1] + self.coef[-1])[:, None]


def test_sky_filled_occlusion_maps_are_fooled_where_background_filled_ones_are_not(toy):
    """Why the occlusion method fills a window from background cutouts: filled with sky noise, hiding the object
    shows the companion-signal network a cutout without an object, unlike any it was trained on, and its map points
    at the object, where its signal is not. Filled with another cutout's pixels, it points at the companion."""
    ds_comp, net_comp = toy["companion"]
    sky, _, _ = explain_and_score(net_comp, ds_comp, dict(OCC_CFG, occlusion_map_fill="sky"), seed=1)
    background, _, _ = explain_and_score(net_comp, ds_comp, OCC_CFG, seed=1)
    assert sky["hit"].mean() >= 0.5 and background["hit"].mean() <= 0.1


def test_occlusion_control_tells_a_network_that_uses_the_object_from_one_that_does_not(toy):
    """Hiding the object ruins the object-signal network (reliance far above the threshold), while hiding the
    same area of sky costs it nothing; a network that reads only the companion's corner loses nothing when the
    object is hidden. (The companion-signal CNN is no such network: it never saw a cutout without its object,
    and hiding the object moves its predictions. The control measures dependence, whatever its cause.)"""
    ds_obj, net_obj = toy["object"]
    ds_comp, _ = toy["companion"]
    on = occlusion_control(net_obj, ds_obj, SHAP_CFG, seed=1)
    corner = occlusion_control(CornerReader(ds_comp).eval(), ds_comp, SHAP_CFG, seed=1)
    assert len(on) == len(ds_obj.split("test")) and (on["px_object"] > 0).all() and (on["px_elsewhere"] > 0).all()
    s_on = occlusion_scores(on, n_resamples=100, seed=0, level=0.95, threshold=0.25)
    s_corner = occlusion_scores(corner, n_resamples=100, seed=0, level=0.95, threshold=0.25)
    assert s_on["looks_at"] == "object" and s_on["reliance_lo"] > 5.0
    assert s_on["err_elsewhere_hidden"] < 1.25 * s_on["err_clean"]
    assert s_corner["err_clean"] < 0.15  # it does predict z from the companion
    np.testing.assert_array_equal(corner["z_object"], corner["z_clean"])  # the object is out of its sight
    assert s_corner["looks_at"] == "not_object" and s_corner["reliance"] <= 0
    assert s_on["swap_uses_object"] == "yes" and s_corner["swap_uses_object"] == "no"


def test_the_donor_swap_judges_the_network_that_sky_noise_cannot(toy):
    """The companion-signal CNN reacts to a missing object (sky-noise control: `object`), but given another
    cutout's object in its place it keeps predicting from the companion: the in-distribution swap says it does
    not use the object, and says the object-signal CNN does (it then predicts about the donor's redshift)."""
    ds_obj, net_obj = toy["object"]
    ds_comp, net_comp = toy["companion"]
    on = occlusion_control(net_obj, ds_obj, SHAP_CFG, seed=1)
    off = occlusion_control(net_comp, ds_comp, SHAP_CFG, seed=1)
    assert (on["donor_id"] != on["object_id"]).all() and set(on["donor_id"]) == set(on["object_id"])
    s_on = occlusion_scores(on, n_resamples=100, seed=0, level=0.95, threshold=0.25)
    s_off = occlusion_scores(off, n_resamples=100, seed=0, level=0.95, threshold=0.25)
    assert s_off["looks_at"] == "object"  # fooled: the reaction to an empty centre
    assert s_off["swap_uses_object"] == "no" and s_off["swap_reliance_hi"] < 0.25
    assert s_on["swap_uses_object"] == "yes" and s_on["swap_reliance_lo"] > 2.0
    z_donor = on.set_index("object_id").loc[on["donor_id"], "z_true"].to_numpy()
    assert np.corrcoef(on["z_swap"], z_donor)[0, 1] > 0.8  # it reads the donor's object


def test_same_seed_same_numbers_other_seed_other_sample(toy):
    ds, net = toy["object"]
    a, attr_a, reg_a = explain_and_score(net, ds, SHAP_CFG, seed=3)
    b, attr_b, reg_b = explain_and_score(net, ds, SHAP_CFG, seed=3)
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(attr_a, attr_b)
    np.testing.assert_array_equal(reg_a, reg_b)
    c, _, _ = explain_and_score(net, ds, SHAP_CFG, seed=4)
    assert c["object_id"].tolist() != a["object_id"].tolist()
    assert set(a["region_source"]) == {"mask"} and set(a["snr_source"]) == {"catalog"}


def test_attributions_of_a_linear_model_are_weight_times_offset():
    """Expected gradients are exact for a linear model: phi = w * (x - mean background)."""
    torch.manual_seed(1)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 1))
    rng = np.random.default_rng(0)
    bg = rng.normal(size=(4, 2, 6, 6)).astype(np.float32)
    x = rng.normal(size=(3, 2, 6, 6)).astype(np.float32)
    phi = shap_attributions(lin, bg, x, nsamples=400, seed=0)
    w = lin[1].weight.detach().numpy().reshape(2, 6, 6)
    assert phi.shape == x.shape and phi.dtype == np.float32
    # the explainer samples background rows; with 400 samples the mean is close to the background mean
    np.testing.assert_allclose(phi, w * (x - bg.mean(0)), atol=0.15 * np.abs(w).max())
    # completeness: attributions sum to f(x) - E[f(background)]
    with torch.no_grad():
        fx = lin(torch.from_numpy(x))[:, 0].numpy()
        fb = lin(torch.from_numpy(bg))[:, 0].numpy().mean()
    np.testing.assert_allclose(phi.sum(axis=(1, 2, 3)), fx - fb, atol=0.3)


def test_explainer_rejects_mismatched_inputs():
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 1))
    with pytest.raises(ExplainError, match="same C, H, W"):
        shap_attributions(lin, np.zeros((2, 2, 6, 6)), np.zeros((2, 3, 6, 6)), nsamples=4, seed=0)
    two_out = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 2))
    with pytest.raises(ExplainError, match=r"must return \(B, 1\)"):
        shap_attributions(two_out, np.zeros((2, 2, 6, 6)), np.zeros((2, 2, 6, 6)), nsamples=4, seed=0)


def test_expected_gradients_match_shap_gradient_explainer():
    """deepred.explain.attributions computes expected gradients itself (batched over images, without shap's import cost):
    with the same seed it must give shap.GradientExplainer's values, draw for draw."""
    import shap

    net = small_cnn()
    rng = np.random.default_rng(2)
    bg = rng.normal(size=(5, 2, C, C)).astype(np.float32)
    x = rng.normal(size=(3, 2, C, C)).astype(np.float32)
    ours = shap_attributions(net, bg, x, nsamples=10, seed=7, batch_size=8)
    ref = shap.GradientExplainer(net, torch.from_numpy(bg), batch_size=8).shap_values(torch.from_numpy(x),
                                                                                      nsamples=10, rseed=7)
    ref = np.asarray(ref)[..., 0] if np.ndim(ref) == 5 else np.asarray(ref)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    both = shap_attributions(net, bg, x, nsamples=10, seed=7, batch_size=8, halves=True)
    np.testing.assert_allclose(both[0], (both[1] + both[2]) / 2, rtol=1e-5, atol=1e-7)  # the halves' mean


def test_window_sums_and_the_method_of_each_network():
    attr = np.zeros((1, 2, 7, 7))
    attr[0, 0, 3, 3] = 1.0
    attr[0, 1, 3, 4] = -1.0
    s3 = window_sums(attr, 3)
    np.testing.assert_allclose(s3[0, 0, 2:5, 2:5], 1.0)  # each window holding the pixel carries its value
    assert s3[0, 0].sum() == pytest.approx(9.0) and s3[0, 1, 3, 5] == pytest.approx(-1.0)
    assert window_sums(attr, 1) is attr
    from timm.models.mlp_mixer import MlpMixer

    mixer = MlpMixer(num_classes=1, img_size=20, in_chans=2, patch_size=5, num_blocks=1, embed_dim=8)
    assert patch_size(mixer) == 5 and patch_size(small_cnn()) == 3  # a patch; a stem's kernel
    assert patch_size(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))) == 1
    cfg = {"method": "expected_gradients", "method_per_model": {"mixer": "expected_gradients_patch"}, "patch_px": None}
    assert attribution_method(cfg, "mixer", mixer) == ("expected_gradients_patch", 5)
    assert attribution_method(cfg, "resnet", small_cnn()) == ("expected_gradients", 1)
    assert attribution_method(dict(cfg, patch_px=3), "mixer", mixer) == ("expected_gradients_patch", 3)
    with pytest.raises(ExplainError, match="unknown"):
        attribution_method({"method": "lime"}, "resnet", small_cnn())


def test_without_masks_or_catalogue_snr_regions_are_segmented_and_snr_measured(tmp_path, toy):
    """Real surveys carry neither footprints nor S/N: the central source is segmented (sep) and the S/N
    measured on the pixels; the object-signal network still localizes on the segmented object."""
    _, net = toy["object"]
    ds = write_signal_dataset(tmp_path, "object", n=150, real_like=True)
    assert ds.masks(ds.catalog.head(1)) is None and "snr" not in ds.catalog
    pi, _, regions = explain_and_score(net, ds, SHAP_CFG, seed=1)
    assert set(pi["snr_source"]) == {"estimated"} and set(pi["region_source"]) == {"segmentation"}
    ctr = (C - 1) // 2
    assert regions[:, ctr, ctr].all() and not regions[:, 4, 4].any()  # the object, never the companion
    # estimated S/N follows the object's true flux (here f_obj = 40 + 160 z)
    assert np.corrcoef(pi["snr"], pi["z_true"])[0, 1] > 0.8
    assert pi["hit"].mean() >= 0.5


def test_occlusion_maps_cover_every_pixel_and_repeat_with_the_seed(toy):
    from deepred.explain.occlusion_map import occlusion_maps, window_slices

    slices = window_slices(24, 8, 3)
    covered = np.zeros(24, dtype=int)
    for s in slices:
        covered[s] += 1
    assert covered.min() >= 2 and slices[0].start == 0 and slices[-1].stop == 24  # edges too, clipped
    ds, net = toy["object"]
    rows = ds.split("test").head(6)
    images, regions = ds.images(rows), ds.masks(rows).astype(bool)
    background = ds.images(ds.split("train").head(4))
    a = occlusion_maps(net, images, regions, background, 8, 3, 2, "background", seed=5)
    b = occlusion_maps(net, images, regions, background, 8, 3, 2, "background", seed=5)
    assert a.shape == (3, 6, 1, 24, 24) and (a >= 0).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, occlusion_maps(net, images, regions, background, 8, 3, 2, "background", seed=6))
    with pytest.raises(ValueError, match="unknown"):
        occlusion_maps(net, images, regions, background, 8, 3, 2, "blur", seed=5)
