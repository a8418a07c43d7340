"""deepred.pdfs.calibration on synthetic data with a known answer: the temperature recovers a known width (point
estimators) or a known softmax temperature, the PIT map makes biased heavy-tailed PDFs' PITs uniform on new data,
records survive model.json, ensembles' rebinning and mixtures keep the mass, and a bad record names its file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepred.pdfs import calibration as C
from deepred.core import metrics as M
from deepred.contracts.model_json import CALIBRATION, add_calibration, read_card, write_card


def point_sample(rng, n, sigma, bias=0.0, tail=0.0):
    """(z_pred, z_true) with a known predictive distribution: z_pred ~ U(0.3, 1.2), z_true = z_pred + (bias + sigma
    eps) (1 + z_pred), eps Gaussian or (tail > 0) a mixture with a tail fraction of 5-sigma outliers."""
    zp = rng.uniform(0.3, 1.2, n)
    eps = rng.standard_normal(n) * np.where(rng.random(n) < tail, 5.0, 1.0)
    return zp, zp + (bias + sigma * eps) * (1 + zp)


def ks_limit(n_fit, n_test):
    """1% critical KS distance of test PITs from uniform when the calibration itself was estimated from n_fit
    validation rows: the two-sample value 1.63 sqrt(1/n_fit + 1/n_test) (the 1% level and 3 binomial standard errors
    below, not 5% and 2: a unit test must not fail by chance)."""
    return 1.63 * np.sqrt(1 / n_fit + 1 / n_test)


def covers(u, level):
    """Whether the central `level` intervals hold that share of the labels within 3 binomial standard errors."""
    return abs(coverage(u, level) - level) < 3 * np.sqrt(level * (1 - level) / len(u))


def coverage(u, level):
    lo = (1 - level) / 2
    return np.mean((u >= lo) & (u <= 1 - lo))


def test_point_estimator_width_is_recovered_and_pits_become_uniform():
    rng = np.random.default_rng(1)
    (zp_tr, z_tr), (zp_val, z_val), (zp_te, z_te) = (point_sample(rng, n, 0.04) for n in (2000, 4000, 1000))
    zp_tr = z_tr + 0.4 * (zp_tr - z_tr)  # training residuals 2.5x too narrow (an overfitted network's)
    cal = C.fit_point_calibration(zp_tr, z_tr, zp_val, z_val, n_bins=200, pit_knots=0)
    assert cal.sigma == pytest.approx(0.4 * 0.04, rel=0.1)  # the naive width: the training residuals' NMAD
    assert cal.temperature == pytest.approx(2.5**2, rel=0.2)  # T = (true / naive width)^2 for a Gaussian
    raw = C.gaussian_pdf(zp_te, cal.sigma, cal.grid)
    u_raw, u = M.pit(raw, cal.grid, z_te), M.pit(cal.calibrate(raw), cal.grid, z_te)
    limit = ks_limit(len(z_val), len(z_te))
    assert M.ks_uniform(u_raw) > 3 * limit and coverage(u_raw, 0.68) < 0.4  # overconfident before
    assert M.ks_uniform(u) < limit
    assert covers(u, 0.68) and covers(u, 0.95)


def sample_from(pdf, grid, rng):
    """One redshift per row drawn from histogram PDFs (a bin, then uniform inside it)."""
    edges = M.grid_edges(grid)
    k = np.array([rng.choice(len(grid), p=p) for p in pdf])
    return edges[k] + rng.random(len(k)) * np.diff(edges)[k]


def test_softmax_temperature_is_recovered():
    rng = np.random.default_rng(2)
    grid = np.linspace(0.0, 1.0, 60)
    centre = rng.uniform(0.2, 0.8, 3000)
    logits = -0.5 * ((grid[None] - centre[:, None]) / 0.05) ** 2 + rng.normal(0, 0.3, (3000, 60))
    truth = C.temper(np.exp(logits - logits.max(1, keepdims=True)), 1.0)
    z = sample_from(truth, grid, rng)
    overconfident = C.temper(truth, 1 / 3.0)  # softmax(3 * logits): a network three times too sure
    temperature = C.fit_temperature(overconfident[:1500], grid, z[:1500])
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert C.nll(C.temper(overconfident[1500:], temperature), grid, z[1500:]) < C.nll(overconfident[1500:], grid,
                                                                                      z[1500:])


def test_pit_map_fixes_bias_and_tails_that_a_width_cannot():
    rng = np.random.default_rng(3)
    (zp_val, z_val), (zp_te, z_te) = (point_sample(rng, n, 0.03, bias=0.02, tail=0.1) for n in (4000, 1000))
    grid = C.label_grid(z_val, 150)
    raw_val, raw_te = (C.gaussian_pdf(zp, 0.03, grid) for zp in (zp_val, zp_te))
    limit = ks_limit(len(z_val), len(z_te))
    width_only = C.fit_calibration(raw_val, grid, z_val, pit_knots=0)
    mapped = C.fit_calibration(raw_val, grid, z_val, pit_knots=10)
    assert M.ks_uniform(M.pit(width_only.calibrate(raw_te), grid, z_te)) > limit
    u = M.pit(mapped.calibrate(raw_te), grid, z_te)
    assert M.ks_uniform(u) < limit
    assert covers(u, 0.68) and covers(u, 0.95)
    x, y = mapped.pit_knots
    assert x[0] == y[0] == 0 and x[-1] == y[-1] == 1 and np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    assert mapped.info["val_pit_ks"] < mapped.info["val_pit_ks_uncalibrated"] and mapped.info["n_fit"] == 4000
    # few validation rows: at most one knot per ROWS_PER_KNOT rows, none below two knots
    few = C.fit_calibration(raw_val[:30], grid, z_val[:30], pit_knots=10)
    assert few.pit_knots is None
    with pytest.raises(C.CalibrationError, match="validation rows"):
        C.fit_calibration(raw_val[:5], grid, z_val[:5], pit_knots=10)


def test_record_round_trips_through_model_json(tmp_path):
    rng = np.random.default_rng(4)
    (zp, z) = point_sample(rng, 400, 0.05, bias=0.01)
    cal = C.fit_point_calibration(zp, z, zp, z, n_bins=80, pit_knots=10)
    write_card(tmp_path, "ensemble", {"model": "m"})  # a card without weights: the simplest kind
    add_calibration(tmp_path, cal.record(), C.CalibrationError)
    rec = read_card(tmp_path, C.CalibrationError)[CALIBRATION]
    assert rec["fit_split"] == "val" and rec["base"] == "gaussian" and len(rec["grid"]) == 80
    back = C.Calibration.from_record(json.loads(json.dumps(rec)), tmp_path / "model.json")
    res = {"z_pred": zp[:50]}
    a, b = cal.apply(res, cal.grid), back.apply(res, back.grid)
    assert np.array_equal(a["pdf"], b["pdf"]) and np.array_equal(a["z_pred"], zp[:50])
    assert np.allclose(a["pdf"].sum(1), 1) and np.all(a["z_lo68"] <= a["z_median"]) and "pdf_uncalibrated" in a
    with pytest.raises(C.CalibrationError, match=r"model.json: bad calibration record"):
        C.Calibration.from_record({**rec, "temperature": -1.0}, tmp_path / "model.json")
    with pytest.raises(C.CalibrationError, match=r"model.json: unreadable calibration record"):
        C.Calibration.from_record({"base": "gaussian"}, tmp_path / "model.json")


def test_rebinning_and_mixtures_keep_the_mass_and_the_mean():
    rng = np.random.default_rng(5)
    fine, coarse = np.linspace(0.0, 2.0, 201), np.linspace(0.0, 2.0, 81)
    pdf = C.gaussian_pdf(rng.uniform(0.3, 1.5, 20), 0.05, fine)
    moved = C.rebin(pdf, fine, coarse)
    assert np.allclose(moved.sum(1), 1) and np.allclose(moved @ coarse, pdf @ fine, atol=2e-3)
    assert np.array_equal(C.rebin(pdf, fine, fine), pdf)
    assert np.array_equal(C.common_grid([fine, fine.copy()]), fine)
    wide = C.common_grid([fine, np.linspace(0.5, 3.0, 50)])
    assert wide[0] == 0 and wide[-1] == 3 and len(wide) == 201
    mix = C.mixture_pdf([pdf, moved], [fine, coarse], np.array([0.25, 0.75]), coarse)
    assert np.allclose(mix, 0.25 * C.rebin(pdf, fine, coarse) + 0.75 * moved)


def test_stacked_pdf_weights_minimize_the_validation_crps():
    rng = np.random.default_rng(6)
    zp, z = point_sample(rng, 600, 0.04)
    grid = C.label_grid(z, 120)
    good, biased = C.gaussian_pdf(zp, 0.04, grid), C.gaussian_pdf(zp + 0.08, 0.04, grid)
    broad = C.gaussian_pdf(zp, 0.12, grid)
    w = C.fit_mixture_weights([good, biased, broad], grid, z)
    assert w.sum() == pytest.approx(1) and (w >= 0).all() and w[0] > 0.7 and w[1] < 0.1
    score = np.mean(M.crps(C.mixture_pdf([good, biased, broad], [grid] * 3, w, grid), grid, z))
    assert score <= min(np.mean(M.crps(p, grid, z)) for p in (good, biased, broad)) + 1e-9
