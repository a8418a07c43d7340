"""The controls beside the attribution maps (deepred/explain/controls.py), on hand-made masks, images and
predictions: each number checked against one worked out by hand. The occlusion control on trained toy networks
is in tests/explain/test_shap.py (it shares their fixture); the shuffled-label job in tests/explain/test_shap_pipeline.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepred.contracts.processed import ProcessedDataset
from deepred.explain.scoring import grow
from deepred.explain.controls import occlusion_scores, occlusion_summary, robust_error
from deepred.explain.shuffled import shuffled_view
from deepred.explain.perturb import fill_with_sky, occlusion_masks, sky_levels


def test_grow_is_the_dilation_with_a_disc():
    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(0)
    regions = rng.random((30, 21, 21)) > 0.99
    regions[0] = False  # an empty region stays empty
    for t in (1, 3, 6):
        yy, xx = np.mgrid[-t:t + 1, -t:t + 1]
        ref = np.stack([binary_dilation(r, structure=yy**2 + xx**2 <= t**2) for r in regions])
        np.testing.assert_array_equal(grow(regions, t), ref)


def test_occlusion_masks_move_the_footprint_away_from_the_object():
    region = np.zeros((1, 12, 12), bool)
    region[0, 5:7, 5:7] = True  # 4 px at the centre
    m = occlusion_masks(region, grow_px=1)
    assert m["object"].sum() == 4 and m["wide"].sum() == 12  # the 2x2 block and its 8 edge neighbours
    # moved by half the cutout (6 px): the same 2x2 block at the corners' junction, far from the object
    np.testing.assert_array_equal(np.argwhere(m["elsewhere"][0]), [[0, 0], [0, 11], [11, 0], [11, 11]])
    assert not (m["elsewhere"] & grow(region, 4)).any() and not (m["wide_elsewhere"] & grow(region, 4)).any()
    assert not (m["sky"] & grow(region, 4)).any() and m["sky"].sum() > 50


def test_fill_with_sky_replaces_only_the_hidden_pixels_by_that_images_sky():
    rng = np.random.default_rng(1)
    images = np.stack([rng.normal(3.0, 0.5, (2, 20, 20)), rng.normal(-1.0, 2.0, (2, 20, 20))]).astype(np.float32)
    images[:, :, 8:12, 8:12] += 100.0  # a bright object
    hide = np.zeros((2, 20, 20), bool)
    hide[:, 8:12, 8:12] = True
    sky = ~grow(hide, 2)
    levels = sky_levels(images, sky)
    np.testing.assert_allclose(levels[0][:, 0], [3.0, -1.0], atol=0.15)
    np.testing.assert_allclose(levels[1][:, 0], [0.5, 2.0], rtol=0.2)
    out = fill_with_sky(images, hide, levels, np.random.default_rng(2))
    np.testing.assert_array_equal(out[~np.repeat(hide[:, None], 2, 1)], images[~np.repeat(hide[:, None], 2, 1)])
    assert abs(out[0, 0, 8:12, 8:12].mean() - 3.0) < 0.5 and out[:, :, 8:12, 8:12].max() < 20  # no object left


def occlusion_frame(n=200, shift_object=0.0, shift_wide=0.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 1.0, n)
    clean = z + 0.03 * (1 + z) * rng.standard_normal(n)
    return pd.DataFrame({
        "object_id": [f"o{i}" for i in range(n)],
        "class_group": np.array(["galaxy", "lens"])[np.arange(n) % 2],
        "snr": np.where(np.arange(n) % 4 == 0, 50.0, 500.0),
        "z_true": z, "z_clean": clean, "z_elsewhere": clean, "z_wide_elsewhere": clean,
        "z_object": clean + shift_object * (1 + z), "z_wide": clean + shift_wide * (1 + z),
    })


def test_reliance_and_verdict_by_hand():
    clean = occlusion_frame()
    err = robust_error(clean["z_clean"].to_numpy(), clean["z_true"].to_numpy())
    # every prediction moved by 0.1 (1 + z) when the object is hidden: the error becomes ~0.1 * 1.4826 and the
    # reliance (0.148 - err) / err, far above 0.25; hiding the sky changes nothing
    s = occlusion_scores(occlusion_frame(shift_object=0.1, shift_wide=0.1), 200, 0, 0.95, 0.25)
    assert s["err_elsewhere_hidden"] == pytest.approx(err) and s["err_clean"] == pytest.approx(err)
    assert s["err_object_hidden"] == pytest.approx(0.14826, rel=0.15)
    assert s["reliance"] == pytest.approx((s["err_object_hidden"] - err) / err)
    assert s["reliance_lo"] < s["reliance"] < s["reliance_hi"] and s["looks_at"] == "object"
    # the NMAD ignores such a shift (its median is subtracted): the table keeps it for the clean predictions only
    assert s["nmad_clean"] == pytest.approx(err, rel=0.2)
    assert occlusion_scores(occlusion_frame(shift_wide=0.1), 200, 0, 0.95, 0.25)["looks_at"] == "around_object"
    none = occlusion_scores(clean, 200, 0, 0.95, 0.25)
    assert none["looks_at"] == "not_object" and none["reliance"] == 0.0
    assert np.isnan(occlusion_scores(clean.head(1), 200, 0, 0.95, 0.25)["reliance"])


def test_occlusion_summary_per_subset():
    s = occlusion_summary(occlusion_frame(shift_object=0.1), hq_snr=200.0, n_resamples=50, seed=1, level=0.95,
                          threshold=0.25).set_index("subset")
    assert list(s.index) == ["all", "galaxy", "lens", "high_quality"]
    assert s.loc["all", "occl_n"] == 200 and s.loc["high_quality", "occl_n"] == 150
    assert set(s["looks_at"]) == {"object"}


def test_shuffled_view_permutes_train_and_val_labels_only(tiny_dataset, tmp_path):
    ds = ProcessedDataset(tiny_dataset)
    view = ProcessedDataset(shuffled_view(tiny_dataset, tmp_path / "view", seed=3))
    label = ds.stats["label_column"]
    a, b = ds.catalog.set_index("object_id"), view.catalog.set_index("object_id").loc[ds.catalog["object_id"]]
    test = a["split"] == "test"
    np.testing.assert_array_equal(a.loc[test, label], b.loc[test, label])
    for split in ("train", "val"):
        assert not np.array_equal(a.loc[a.split == split, label], b.loc[a.split == split, label])
    fit = a["split"] != "test"
    np.testing.assert_allclose(np.sort(a.loc[fit, label]), np.sort(b.loc[fit, label]))  # the same labels
    rows = ds.catalog.head(5)
    np.testing.assert_array_equal(ds.images(rows), view.images(rows))  # the same images
    # the two permuted labels are independent of the images: no correlation left with the true ones
    assert abs(np.corrcoef(a.loc[fit, label], b.loc[fit, label])[0, 1]) < 0.3
