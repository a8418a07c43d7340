"""Redshift metrics, found by name in a registry, with paired bootstrap confidence intervals.

All point metrics are functions of dz = (z_pred - z_true) / (1 + z_true) (LSST RAIL's convention)
except MAE and RMSE, which are on the plain residual z_pred - z_true. Distribution metrics read
per-object quantities computed once from the PDF: PIT (the predictive CDF at z_true) and CRPS.

Every metric function works along the last axis, so a bootstrap evaluates all resamples at once:
arrays of shape (n,) give a scalar, (R, n) give R values.

PDF convention (docs/contracts.md): `pdf` holds one probability per grid point; grid points are bin
centres, the mass of a bin is spread uniformly over it (edges halfway between centres, outer edges
half a spacing beyond), so the CDF is piecewise linear and PIT/CRPS are exact for that histogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

NMAD_SCALE = 1.4826  # MAD -> sigma for a Gaussian
IQR_SCALE = 1.349  # IQR -> sigma for a Gaussian


class MetricError(ValueError):
    """Bad metric request or bad metric input (unknown name, mismatched or non-finite arrays)."""


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "point" (needs z_pred, z_true) or "pdf" (needs per-object pit / crps)
    func: Callable[..., np.ndarray]
    description: str
    lower_is_better: bool = True


def dz(z_pred, z_true):
    return (z_pred - z_true) / (1.0 + z_true)


def _nmad(s, p):
    d = dz(s["z_pred"], s["z_true"])
    med = np.median(d, axis=-1, keepdims=True)
    return NMAD_SCALE * np.median(np.abs(d - med), axis=-1)


def nmad(z_pred, z_true) -> float:
    """NMAD of dz = (z_pred - z_true) / (1 + z_true) for two arrays, without the checks of sample_arrays
    (the trainer's validation score, the ensemble's member scores)."""
    return float(_nmad({"z_pred": np.asarray(z_pred, float), "z_true": np.asarray(z_true, float)}, {}))


def _sigma_iqr(s, p):
    q75, q25 = np.percentile(dz(s["z_pred"], s["z_true"]), [75.0, 25.0], axis=-1)
    return (q75 - q25) / IQR_SCALE


def _sigma68(s, p):
    q84, q16 = np.percentile(dz(s["z_pred"], s["z_true"]), [84.0, 16.0], axis=-1)
    return (q84 - q16) / 2.0


def _outlier_frac(s, p):
    return np.mean(np.abs(dz(s["z_pred"], s["z_true"])) > p["outlier_threshold"], axis=-1)


def _outlier_frac_rail(s, p):
    # LSST Science Book / RAIL: |dz| > max(0.06, 3 sigma_IQR), sigma_IQR of the same sample
    cut = np.maximum(0.06, 3.0 * _sigma_iqr(s, p))
    return np.mean(np.abs(dz(s["z_pred"], s["z_true"])) > np.asarray(cut)[..., None], axis=-1)


def _pit_ks(s, p):
    return ks_uniform(s["pit"])


def _coverage(level: float):
    """Fraction of objects whose z_true lies in the PDF's central `level` interval, read from the PIT:
    z_true is inside [F^-1((1 - level) / 2), F^-1((1 + level) / 2)] exactly when its PIT is between those levels."""
    lo = (1.0 - level) / 2.0
    return lambda s, p: np.mean((s["pit"] >= lo) & (s["pit"] <= 1.0 - lo), axis=-1)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("nmad", "point", _nmad, "1.4826 * median(|dz - median(dz)|)"),
        Metric("bias_median", "point", lambda s, p: np.median(dz(s["z_pred"], s["z_true"]), axis=-1),
               "median(dz) (RAIL's bias)", lower_is_better=False),
        Metric("bias_mean", "point", lambda s, p: np.mean(dz(s["z_pred"], s["z_true"]), axis=-1),
               "mean(dz)", lower_is_better=False),
        Metric("sigma68", "point", _sigma68, "(P84 - P16) / 2 of dz"),
        Metric("sigma_iqr", "point", _sigma_iqr, "IQR(dz) / 1.349"),
        Metric("outlier_frac", "point", _outlier_frac, "fraction with |dz| > outlier_threshold (0.15)"),
        Metric("outlier_frac_rail", "point", _outlier_frac_rail, "fraction with |dz| > max(0.06, 3 sigma_IQR)"),
        Metric("mae", "point", lambda s, p: np.mean(np.abs(s["z_pred"] - s["z_true"]), axis=-1),
               "mean |z_pred - z_true|"),
        Metric("rmse", "point", lambda s, p: np.sqrt(np.mean((s["z_pred"] - s["z_true"]) ** 2, axis=-1)),
               "sqrt(mean (z_pred - z_true)^2)"),
        Metric("pit_ks", "pdf", _pit_ks, "Kolmogorov-Smirnov distance of the PIT values from U(0, 1)"),
        Metric("crps", "pdf", lambda s, p: np.mean(s["crps"], axis=-1), "mean continuous ranked probability score"),
        Metric("coverage_68", "pdf", _coverage(0.68), "fraction of z_true inside the PDF's central 68% interval "
               "(0.68 when calibrated)", lower_is_better=False),
        Metric("coverage_95", "pdf", _coverage(0.95), "fraction of z_true inside the PDF's central 95% interval "
               "(0.95 when calibrated)", lower_is_better=False),
    ]
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise MetricError(f"unknown metric '{name}'; known: {', '.join(METRICS)}") from None


def ks_uniform(u: np.ndarray) -> np.ndarray:
    """Kolmogorov-Smirnov statistic of samples in [0, 1] against U(0, 1), along the last axis."""
    x = np.sort(np.asarray(u, dtype=float), axis=-1)
    n = x.shape[-1]
    i = np.arange(1, n + 1)
    return np.maximum((i / n - x).max(axis=-1), (x - (i - 1) / n).max(axis=-1))


# ----------------------------------------------------------------------------------------------------
# Predictive distributions on a grid
# ----------------------------------------------------------------------------------------------------


def grid_edges(grid) -> np.ndarray:
    """Bin edges around increasing bin centres: midpoints, outer edges half a spacing beyond."""
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or len(g) < 2 or not np.all(np.diff(g) > 0):
        raise MetricError(f"PDF grid must be a strictly increasing 1-D array of >= 2 points, got shape {g.shape}")
    mid = 0.5 * (g[1:] + g[:-1])
    return np.concatenate([[g[0] - (mid[0] - g[0])], mid, [g[-1] + (g[-1] - mid[-1])]])


def _cdf_at_edges(pdf, grid):
    p = np.asarray(pdf, dtype=float)
    if p.ndim != 2 or p.shape[1] != len(grid):
        raise MetricError(f"PDF array shape {p.shape} does not match the grid of {len(grid)} points")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise MetricError("PDF values must be finite and non-negative")
    tot = p.sum(axis=1, keepdims=True)
    if np.any(tot <= 0):
        raise MetricError("a PDF sums to zero")
    cdf = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p / tot, axis=1)], axis=1)
    return cdf, grid_edges(grid)


def pit(pdf, grid, z_true) -> np.ndarray:
    """Probability integral transform: the predictive CDF at z_true, per object."""
    cdf, edges = _cdf_at_edges(pdf, grid)
    z = np.asarray(z_true, dtype=float)
    out = np.empty(len(z))
    for i in range(len(z)):  # np.interp is 1-D; n_bins is small, so this loop costs microseconds per object
        out[i] = np.interp(z[i], edges, cdf[i])
    return out


def crps(pdf, grid, z_true) -> np.ndarray:
    """CRPS = integral (F(z) - 1[z >= z_true])^2 dz per object, exact for the piecewise-linear CDF."""
    cdf, edges = _cdf_at_edges(pdf, grid)
    y = np.asarray(z_true, dtype=float)[:, None]
    a, b = edges[None, :-1], edges[None, 1:]
    fa, fb = cdf[:, :-1], cdf[:, 1:]
    c = np.clip(y, a, b)  # split point of each bin at z_true
    fc = fa + (fb - fa) * (c - a) / (b - a)
    # integral of a squared linear function over [x0, x1] = (x1 - x0) (u0^2 + u0 u1 + u1^2) / 3
    left = (c - a) * (fa**2 + fa * fc + fc**2) / 3.0
    ga, gc, gb = 1.0 - fa, 1.0 - fc, 1.0 - fb
    right = (b - c) * (gc**2 + gc * gb + gb**2) / 3.0
    total = (left + right).sum(axis=1)
    # z_true outside the grid: the CDF is 0 below and 1 above, the step is 1 or 0
    y1 = y[:, 0]
    total += np.clip(edges[0] - y1, 0, None) + np.clip(y1 - edges[-1], 0, None)
    return total


def gaussian_crps(mu, sigma, y):
    """Closed form CRPS of N(mu, sigma^2) at y (Gneiting & Raftery 2007)."""
    from scipy.stats import norm

    w = (np.asarray(y) - mu) / sigma
    return sigma * (w * (2 * norm.cdf(w) - 1) + 2 * norm.pdf(w) - 1 / np.sqrt(np.pi))


# ----------------------------------------------------------------------------------------------------
# Evaluation with bootstrap intervals
# ----------------------------------------------------------------------------------------------------


def sample_arrays(z_pred, z_true, pdf=None, grid=None) -> dict[str, np.ndarray]:
    """Check the inputs and compute the per-object arrays the metrics read."""
    zp = np.asarray(z_pred, dtype=float)
    zt = np.asarray(z_true, dtype=float)
    if zp.shape != zt.shape or zp.ndim != 1:
        raise MetricError(f"z_pred {zp.shape} and z_true {zt.shape} must be 1-D arrays of one length")
    if len(zp) == 0:
        raise MetricError("no objects to evaluate")
    for name, arr in (("z_pred", zp), ("z_true", zt)):
        if not np.all(np.isfinite(arr)):
            raise MetricError(f"{name} has {int((~np.isfinite(arr)).sum())} non-finite values")
    if np.any(zt <= -1):
        raise MetricError("z_true must be > -1")
    s = {"z_pred": zp, "z_true": zt}
    if pdf is not None:
        s["pit"] = pit(pdf, grid, zt)
        s["crps"] = crps(pdf, grid, zt)
    return s


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices; one draw shared by every model on a test set makes the CIs paired."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def metric_values(name: str, s: dict, params: dict, idx: np.ndarray | None = None, chunk: int = 4_000_000):
    """The metric on the sample (idx None) or on each bootstrap resample (rows of idx), memory-bounded."""
    m = get_metric(name)
    if idx is None:
        return float(m.func(s, params))
    out = np.empty(len(idx))
    step = max(1, chunk // max(1, idx.shape[1]))
    for lo in range(0, len(idx), step):
        sub = {k: v[idx[lo:lo + step]] for k, v in s.items()}
        out[lo:lo + step] = m.func(sub, params)
    return out


def evaluate(
    z_pred,
    z_true,
    pdf=None,
    grid=None,
    metrics: list[str] | None = None,
    resamples: int = 200,
    seed: int = 0,
    outlier_threshold: float = 0.15,
    ci_level: float = 0.95,
    idx: np.ndarray | None = None,
) -> list[dict]:
    """[{metric, value, ci_lo, ci_hi, n}] for each metric that applies (PDF metrics only with a PDF)."""
    s = sample_arrays(z_pred, z_true, pdf, grid)
    params = {"outlier_threshold": outlier_threshold}
    names = list(METRICS) if metrics is None else metrics
    for nm in names:
        get_metric(nm)
    n = len(s["z_true"])
    if idx is None and resamples > 0:
        idx = bootstrap_indices(n, resamples, seed)
    alpha = 100 * (1 - ci_level) / 2
    rows = []
    for nm in names:
        if METRICS[nm].kind == "pdf" and "pit" not in s:
            continue
        value = metric_values(nm, s, params)
        lo = hi = float("nan")
        if idx is not None and len(idx):
            boot = metric_values(nm, s, params, idx)
            lo, hi = (float(v) for v in np.percentile(boot, [alpha, 100 - alpha]))
        rows.append({"metric": nm, "value": value, "ci_lo": lo, "ci_hi": hi, "n": n})
    return rows


def improvement(baseline: float, model: float) -> float:
    """(metric_baseline - metric_model) / metric_baseline: the share by which the model is better."""
    return (baseline - model) / baseline if baseline else float("nan")
