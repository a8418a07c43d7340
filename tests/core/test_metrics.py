"""deepred.core.metrics: definitions against hand values, LSST RAIL's implementations and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from deepred.core import metrics as M


def _sample(n=2000, seed=0, scatter=0.03, outliers=0.05):
    rng = np.random.default_rng(seed)
    zt = rng.uniform(0.1, 1.5, n)
    zp = zt + scatter * (1 + zt) * rng.standard_normal(n) + 0.01
    bad = rng.random(n) < outliers
    zp[bad] = rng.uniform(0, 2, bad.sum())
    return zp, zt


def test_unknown_metric_lists_known():
    with pytest.raises(M.MetricError, match="unknown metric 'nmda'.*nmad.*crps"):
        M.get_metric("nmda")
    with pytest.raises(M.MetricError, match="unknown metric"):
        M.evaluate([0.1], [0.1], metrics=["nmda"])


def test_hand_values():
    zt = np.zeros(5)
    zp = np.array([-0.2, -0.1, 0.0, 0.1, 0.3])  # dz = zp
    s = M.sample_arrays(zp, zt)
    p = {"outlier_threshold": 0.15}
    assert M.metric_values("nmad", s, p) == pytest.approx(1.4826 * 0.1)
    assert M.metric_values("bias_median", s, p) == pytest.approx(0.0)
    assert M.metric_values("bias_mean", s, p) == pytest.approx(0.02)
    assert M.metric_values("outlier_frac", s, p) == pytest.approx(2 / 5)
    assert M.metric_values("mae", s, p) == pytest.approx(0.14)
    assert M.metric_values("rmse", s, p) == pytest.approx(np.sqrt(0.15 / 5))
    # dz divides by 1 + z_true
    s2 = M.sample_arrays([1.3], [1.0])
    assert M.metric_values("bias_mean", s2, p) == pytest.approx(0.15)


def test_gaussian_scatter_recovered():
    rng = np.random.default_rng(1)
    zt = rng.uniform(0, 1, 20000)
    zp = zt + 0.05 * (1 + zt) * rng.standard_normal(len(zt))
    rows = {r["metric"]: r for r in M.evaluate(zp, zt, resamples=50, seed=3)}
    for name in ("nmad", "sigma_iqr", "sigma68"):
        assert rows[name]["value"] == pytest.approx(0.05, rel=0.03)
        assert rows[name]["ci_lo"] < rows[name]["value"] < rows[name]["ci_hi"]
    assert rows["outlier_frac"]["value"] == pytest.approx(2 * stats.norm.sf(3.0), abs=0.002)
    assert "crps" not in rows and "pit_ks" not in rows  # no PDF given


def test_rail_cross_check():
    """Our NMAD, sigma_IQR, bias and outlier rate equal LSST RAIL's on the same arrays."""
    pe = pytest.importorskip(
        "rail.evaluation.metrics.pointestimates",
        reason="pz-rail-base (dev extra, pinned in requirements.lock) is not installed",
    )
    for seed in range(3):
        zp, zt = _sample(seed=seed)
        rows = {r["metric"]: r["value"] for r in M.evaluate(zp, zt, resamples=0)}
        assert rows["nmad"] == pytest.approx(pe.PointSigmaMAD(zp, zt).evaluate(), rel=1e-12)
        assert rows["sigma_iqr"] == pytest.approx(pe.PointSigmaIQR(zp, zt).evaluate(), rel=1e-12)
        assert rows["bias_median"] == pytest.approx(pe.PointBias(zp, zt).evaluate(), rel=1e-12, abs=1e-15)
        assert rows["outlier_frac_rail"] == pytest.approx(pe.PointOutlierRate(zp, zt).evaluate(), rel=1e-12)


def _gaussian_pdfs(mu, sigma, grid):
    return stats.norm.pdf(grid[None, :], loc=np.asarray(mu)[:, None], scale=np.asarray(sigma)[:, None])


def test_crps_matches_gaussian_closed_form():
    grid = np.linspace(-1.0, 3.0, 4001)
    mu = np.array([0.5, 1.0, 0.2, 1.5])
    sig = np.array([0.05, 0.2, 0.1, 0.3])
    y = np.array([0.5, 0.7, 0.45, 2.4])
    ours = M.crps(_gaussian_pdfs(mu, sig, grid), grid, y)
    exact = M.gaussian_crps(mu, sig, y)
    np.testing.assert_allclose(ours, exact, rtol=2e-3)
    # a point mass at the truth has CRPS ~ 0; z_true beyond the grid adds the distance
    g = np.linspace(0, 1, 101)
    p = np.zeros((1, 101))
    p[0, 50] = 1
    assert M.crps(p, g, [0.5])[0] < 0.01
    assert M.crps(p, g, [2.0])[0] == pytest.approx(2.0 - 0.5, abs=0.01)


def test_pit_and_ks():
    rng = np.random.default_rng(4)
    n = 800
    grid = np.linspace(-1, 3, 801)
    mu = rng.uniform(0.3, 1.2, n)
    sig = np.full(n, 0.1)
    z_cal = mu + sig * rng.standard_normal(n)
    u = M.pit(_gaussian_pdfs(mu, sig, grid), grid, z_cal)
    np.testing.assert_allclose(u, stats.norm.cdf((z_cal - mu) / sig), atol=2e-3)
    ks = float(M.ks_uniform(u))
    assert ks == pytest.approx(stats.kstest(u, "uniform").statistic, abs=1e-12)
    assert ks < 0.06
    # over-confident PDFs (true scatter 3x the predicted width) give a U-shaped PIT and a large KS
    z_wide = mu + 3 * sig * rng.standard_normal(n)
    assert float(M.ks_uniform(M.pit(_gaussian_pdfs(mu, sig, grid), grid, z_wide))) > 0.2
    rows = {r["metric"]: r for r in M.evaluate(mu, z_cal, pdf=_gaussian_pdfs(mu, sig, grid), grid=grid,
                                               resamples=30)}
    assert rows["crps"]["value"] == pytest.approx(np.mean(M.gaussian_crps(mu, sig, z_cal)), rel=5e-3)
    # (the KS distance of a resample is biased upwards by ties, so its interval need not hold the value)
    assert 0 < rows["pit_ks"]["ci_lo"] < rows["pit_ks"]["ci_hi"] < 0.2


def test_bootstrap_reproducible_and_paired():
    zp, zt = _sample(n=300)
    a = M.evaluate(zp, zt, resamples=100, seed=11)
    b = M.evaluate(zp, zt, resamples=100, seed=11)
    c = M.evaluate(zp, zt, resamples=100, seed=12)
    assert a == b
    assert a != c
    # chunking the resamples does not change the numbers
    s = M.sample_arrays(zp, zt)
    idx = M.bootstrap_indices(len(zt), 64, 5)
    np.testing.assert_array_equal(M.metric_values("nmad", s, {}, idx), M.metric_values("nmad", s, {}, idx, chunk=300))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"z_pred": [0.1, np.nan], "z_true": [0.1, 0.2]}, "z_pred has 1 non-finite"),
        ({"z_pred": [0.1], "z_true": [0.1, 0.2]}, "one length"),
        ({"z_pred": [], "z_true": []}, "no objects"),
        ({"z_pred": [0.1], "z_true": [0.1], "pdf": [[0.5, -0.1]], "grid": [0, 1]}, "non-negative"),
        ({"z_pred": [0.1], "z_true": [0.1], "pdf": [[0.5, 0.5]], "grid": [1, 0]}, "increasing"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(M.MetricError, match=match):
        M.evaluate(**kwargs, resamples=0)
