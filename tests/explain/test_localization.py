"""Localization scores on hand-made attributions and images: each score is checked against a value
worked out by hand, and each bad input against its error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepred.explain.attributions import stratified_sample
from deepred.explain.scoring import (
    LocalizationError,
    bootstrap_mean,
    central_disc,
    estimate_snr,
    object_regions,
    score_attributions,
    segment_central,
    summarize,
)


def blob(c, y, x, sigma, flux):
    yy, xx = np.mgrid[:c, :c]
    return flux * np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / sigma**2)


def test_pointing_game_and_mass_inside_by_hand():
    attr = np.zeros((2, 3, 8, 8))
    region = np.zeros((2, 8, 8), bool)
    region[:, 3:5, 3:5] = True  # 4 of 64 pixels
    attr[0, 0, 3, 3] = 5.0  # peak inside
    attr[0, 1, 0, 0] = -3.0  # |.| counts, sign does not
    attr[1, 2, 7, 7] = 4.0  # peak outside ...
    attr[1, 0, 4, 4] = 1.0  # ... with a little mass inside
    attr[1, 1, 4, 4] = 2.0  # bands add up at a pixel: 3 < 4
    s = score_attributions(attr, region)
    assert s["hit"].tolist() == [True, False]
    np.testing.assert_allclose(s["mass_inside"], [5 / 8, 3 / 7])
    np.testing.assert_allclose(s["region_frac"], [4 / 64, 4 / 64])
    assert (s.loc[1, "peak_y"], s.loc[1, "peak_x"]) == (7, 7)
    # with a tolerance, a peak within that many pixels of the region is a hit too
    near = np.zeros((1, 1, 8, 8))
    near[0, 0, 3, 7] = 1.0  # 3 px right of the region's edge column 4
    assert not score_attributions(near, region[:1], tolerance=2)["hit_tol"][0]
    tol3 = score_attributions(near, region[:1], tolerance=3)
    assert tol3["hit_tol"][0] and not tol3["hit"][0]
    assert tol3["region_tol_frac"][0] > tol3["region_frac"][0]
    np.testing.assert_array_equal(s["hit_tol"], s["hit"])  # tolerance 0: the strict game


def test_zero_attribution_points_nowhere():
    region = np.ones((1, 4, 4), bool)
    s = score_attributions(np.zeros((1, 2, 4, 4)), region)
    assert not s["hit"][0] and s["mass_inside"][0] == 0.0


@pytest.mark.parametrize(
    "attr, region, match",
    [
        (np.zeros((2, 4, 4)), np.ones((2, 4, 4), bool), "attributions must be"),
        (np.zeros((2, 1, 4, 4)), np.ones((2, 5, 5), bool), "regions have shape"),
        (np.full((1, 1, 4, 4), np.nan), np.ones((1, 4, 4), bool), "NaN"),
        (np.ones((1, 1, 4, 4)), np.zeros((1, 4, 4), bool), "region empty for image"),
    ],
)
def test_bad_score_inputs_fail_clearly(attr, region, match):
    with pytest.raises(LocalizationError, match=match):
        score_attributions(attr, region)


def test_segmentation_keeps_the_central_source_not_the_companion():
    rng = np.random.default_rng(0)
    c = 33
    img = blob(c, 16, 16, 2.0, 60.0) + blob(c, 5, 5, 1.5, 200.0)  # companion brighter than the centre
    img = np.stack([img, 0.5 * img]) + rng.normal(0, 1, (2, c, c))
    region, src = segment_central(img)
    assert src == "segmentation"
    assert region[16, 16] and not region[5, 5]
    assert 10 < region.sum() < 200


def test_segmentation_picks_nearest_detection_and_falls_back_to_a_disc():
    rng = np.random.default_rng(1)
    c = 33
    off = blob(c, 16, 22, 1.5, 80.0)[None] + rng.normal(0, 1, (1, c, c))  # 6 px off centre
    region, src = segment_central(off)
    assert src == "segmentation" and region[16, 22] and not region[16, 16]
    empty, src = segment_central(rng.normal(0, 1, (2, c, c)))
    assert src == "central_disc"
    np.testing.assert_array_equal(empty, central_disc((c, c), 3.0))


def test_regions_from_masks_where_known_else_segmentation():
    rng = np.random.default_rng(2)
    c = 25
    imgs = np.arcsinh(np.stack([blob(c, 12, 12, 2.0, 100.0)] * 2)[:, None] + rng.normal(0, 1, (2, 1, c, c)))
    masks = np.zeros((2, c, c), np.uint8)
    masks[0, 10:15, 10:15] = 1  # image 1 has an all-zero mask: it must not be scored as an empty region
    regions, sources = object_regions(imgs, masks, scaling="asinh")
    assert sources == ["mask", "segmentation"]
    assert regions[0].sum() == 25 and regions[1][12, 12]
    with pytest.raises(LocalizationError, match="masks have shape"):
        object_regions(imgs, masks[:1])


def test_estimated_snr_grows_with_flux():
    rng = np.random.default_rng(3)
    c = 25
    region = central_disc((c, c), 4.0)[None].repeat(3, 0)
    imgs = np.stack([blob(c, 12, 12, 2.0, f)[None] + rng.normal(0, 1, (1, c, c)) for f in (5.0, 20.0, 80.0)])
    snr = estimate_snr(imgs, region, scaling="none")
    assert snr[0] < snr[1] < snr[2]
    # Expected S/N of a Gaussian blob summed over the disc: flux inside / sqrt(npix)
    expected = blob(c, 12, 12, 2.0, 80.0)[region[0]].sum() / np.sqrt(region[0].sum())
    assert abs(snr[2] - expected) / expected < 0.15


def per_image_table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.array(["galaxy", "lens", "lensed_sn"])[np.arange(n) % 3]
    snr = rng.uniform(1, 100, n)
    return pd.DataFrame({
        "hit": snr > 30,  # the high-S/N images are the hits
        "mass_inside": np.clip(snr / 100, 0, 1),
        "region_frac": 0.1,
        "hit_tol": snr > 20,
        "region_tol_frac": 0.2,
        "class_group": groups,
        "snr": snr,
    })


def test_summary_rows_intervals_and_determinism():
    pi = per_image_table()
    s = summarize(pi, hq_snr=30.0, n_resamples=300, seed=5).set_index("subset")
    assert list(s.index) == ["all", "galaxy", "lens", "lensed_sn", "high_quality"]
    assert s.loc["high_quality", "pointing_acc"] == 1.0 and s.loc["high_quality", "n"] == (pi.snr >= 30).sum()
    assert s.loc["all", "pointing_acc"] == pytest.approx(pi.hit.mean())
    assert s.loc["all", "pointing_lo"] < s.loc["all", "pointing_acc"] < s.loc["all", "pointing_hi"]
    assert s.loc["galaxy", "n"] == 20 and s.loc["all", "chance"] == pytest.approx(0.1)
    assert s.loc["all", "pointing_tol_acc"] == pytest.approx((pi.snr > 20).mean()) and s.loc["all", "chance_tol"] == pytest.approx(0.2)
    again = summarize(pi, hq_snr=30.0, n_resamples=300, seed=5).set_index("subset")
    pd.testing.assert_frame_equal(s, again)
    with pytest.raises(LocalizationError, match="lack column"):
        summarize(pi.drop(columns="snr"), 30.0, 10, 0)


def test_bootstrap_mean_interval_matches_binomial_width():
    v = (np.arange(400) % 4 == 0).astype(float)  # p = 0.25
    m, lo, hi = bootstrap_mean(v, 2000, seed=1)
    half = 1.96 * np.sqrt(0.25 * 0.75 / 400)
    assert m == 0.25 and abs((hi - lo) / 2 - half) < 0.01
    assert bootstrap_mean(np.array([]), 10, 0)[0] != bootstrap_mean(np.array([]), 10, 0)[0]  # nan


def test_stratified_sample_balances_classes_and_snr_and_ignores_row_order():
    rng = np.random.default_rng(4)
    classes = ["galaxy"] * 300 + ["gg_lens"] * 40 + ["lensed_sn_ia"] * 5 + ["lensed_sn_cc"] * 5
    rows = pd.DataFrame({
        "object_id": [f"o{i:04d}" for i in range(len(classes))],
        "obj_class": classes,
        "snr": rng.uniform(1, 100, len(classes)),
    })
    s = stratified_sample(rows, 30, seed=9, snr_bins=3)
    counts = s["obj_class"].replace({"lensed_sn_ia": "sn", "lensed_sn_cc": "sn"}).value_counts()
    assert counts["galaxy"] == 10 and counts["gg_lens"] == 10 and counts["sn"] == 10
    gal = s[s.obj_class == "galaxy"]["snr"]
    tertiles = np.quantile(rows[rows.obj_class == "galaxy"]["snr"], [1 / 3, 2 / 3])
    assert np.histogram(gal, [-np.inf, *tertiles, np.inf])[0].min() >= 3  # every S/N bin sampled
    shuffled = stratified_sample(rows.sample(frac=1, random_state=3), 30, seed=9, snr_bins=3)
    pd.testing.assert_frame_equal(s, shuffled)
    assert not s.equals(stratified_sample(rows, 30, seed=10, snr_bins=3))
    # a rare class gives up its share to the others; never more rows than exist
    small = stratified_sample(rows, 100, seed=9)
    assert len(small) == 100 and (small.obj_class.str.startswith("lensed")).sum() == 10
