"""Calibrated redshift PDFs for every model kind, fitted on the validation split (model.json "calibration").

Every model's PDF goes through the same steps; only the first depends on the kind:
1. the uncalibrated PDF (`base`): a PDF head's softmax (`native`), an ensemble's mixture of its members'
   calibrated PDFs on a common grid (`mixture`: equal weights, or weights minimizing the validation CRPS, a
   stacked PDF), or for a point estimator (`gaussian`)
   a Gaussian in z centred on z_pred with standard deviation sigma (1 + z_pred), sigma the NMAD of the *training*
   residuals dz. That is the PDF one writes down without held-out data; training
   residuals are optimistic, so it is too narrow (the "uncalibrated" columns of the tables say by how much);
2. a temperature T: p -> p^(1/T), renormalized. For a softmax head this is softmax(logits / T), temperature scaling
   (Guo et al. 2017, "On calibration of modern neural networks"); for the Gaussian it scales sigma by about
   sqrt(T). T minimizes the validation negative log-likelihood;
3. a PIT map G (optional, `calibration.pit_knots`): the CDF at every grid edge becomes G(CDF), G the monotone
   piecewise-linear map through quantiles of the validation PITs (Bordoloi et al. 2010, MNRAS 406, 881). It takes
   out what one width cannot: a bias, tails heavier than the core.
The point estimate z_pred is never changed; the calibrated PDF's own summaries (z_mean, z_median, ...) sit beside it.

PDF convention: deepred.core.metrics (one mass per grid point, spread uniformly over its bin), so PIT and CRPS of the
calibrated PDFs are exact. Torch-free: HOG+SVR and ensembles calibrate without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepred.contracts.processed import MIN_CALIBRATION_ROWS
from deepred.core.metrics import crps, grid_edges, ks_uniform, nmad, pit
from deepred.contracts.predictions import PDF_UNCALIBRATED, pdf_summary

FIT_SPLIT = "val"  # the only split a calibration is fitted on (test rows never enter)
TINY = 1e-300  # floor of a bin's mass before logarithms (a Gaussian's far tail underflows to zero)
T_BOUNDS = (0.01, 1e4)  # temperatures searched: a point estimator's training residuals can be 10x too narrow
MIN_FIT_ROWS = MIN_CALIBRATION_ROWS  # fewer validation rows: no calibration (the model gives what it gave)
ROWS_PER_KNOT = 20  # the PIT map gets at most one knot per 20 validation rows (a 24-row CI split: none)
BASES = ("native", "gaussian", "mixture")
INTERVAL_LEVELS = (0.025, 0.16, 0.84, 0.975)  # PIT map knots at the central 68% and 95% intervals' ends
GRID_MARGIN = 0.05  # a point estimator's grid: the training labels' range widened by 5% on each side


class CalibrationError(ValueError):
    """A calibration cannot be fitted or applied (too few rows, a bad record); the message names the model."""


def label_grid(z_train: np.ndarray, n_bins: int) -> np.ndarray:
    """n_bins bin centres over the training labels' range padded by 5% (never below z = 0): the pdf heads' grid
    (deepred.training.train.pdf_grid) and the point estimators' PDFs' grid."""
    z = np.asarray(z_train, dtype=float)
    span = float(z.max() - z.min()) or 1.0
    lo, hi = max(0.0, float(z.min()) - GRID_MARGIN * span), float(z.max()) + GRID_MARGIN * span
    if not hi > lo or n_bins < 2:
        raise CalibrationError(f"redshift grid needs hi > lo and n_bins >= 2, got [{lo}, {hi}] with {n_bins} bins")
    return np.linspace(lo, hi, n_bins)


# ----------------------------------------------------------------------------------------------------
# The three steps
# ----------------------------------------------------------------------------------------------------


def gaussian_pdf(z_pred: np.ndarray, sigma: float, grid: np.ndarray) -> np.ndarray:
    """(n, bins) bin masses of N(z_pred, (sigma (1 + z_pred))^2), renormalized over the grid."""
    from scipy.special import log_ndtr

    edges = grid_edges(grid)
    mu = np.asarray(z_pred, dtype=float)[:, None]
    w = (edges[None, :] - mu) / (sigma * (1.0 + np.clip(mu, 0.0, None)))
    # a bin's mass from the side of the nearer tail: Phi(b) - Phi(a) cancels to zero far out, log_ndtr does not
    upper = np.exp(log_ndtr(w[:, 1:])) - np.exp(log_ndtr(w[:, :-1]))
    lower = np.exp(log_ndtr(-w[:, :-1])) - np.exp(log_ndtr(-w[:, 1:]))
    mass = np.where(w[:, :-1] + w[:, 1:] < 0, upper, lower).clip(min=0.0)
    return _normalized(mass)


def temper(pdf: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T) renormalized (softmax(logits / T) for a softmax head), computed in logs."""
    logp = np.log(np.clip(np.asarray(pdf, dtype=float), TINY, None)) / float(temperature)
    return _normalized(np.exp(logp - logp.max(axis=1, keepdims=True)))


def cdf_at_edges(pdf: np.ndarray) -> np.ndarray:
    """(n, bins + 1) CDF at the grid edges of normalized bin masses."""
    c = np.cumsum(pdf, axis=1)
    return np.concatenate([np.zeros((len(pdf), 1)), c / c[:, -1:]], axis=1)


def apply_pit_map(pdf: np.ndarray, knots: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Bin masses whose CDF at every edge is G(the old CDF), G piecewise linear through knots (x, y)."""
    mapped = np.interp(cdf_at_edges(pdf), *knots)
    return _normalized(np.diff(mapped, axis=1).clip(min=0.0))


def rebin(pdf: np.ndarray, grid: np.ndarray, to_grid: np.ndarray) -> np.ndarray:
    """Bin masses on `to_grid` of PDFs on `grid`: the piecewise-linear CDF read at the new edges (exact under the
    uniform-in-bin convention); mass beyond the new grid is dropped and the rest renormalized."""
    if len(grid) == len(to_grid) and np.allclose(grid, to_grid, rtol=0, atol=1e-9):
        return np.asarray(pdf, dtype=float)
    edges, to_edges = grid_edges(grid), grid_edges(to_grid)
    cdf = cdf_at_edges(np.asarray(pdf, dtype=float))
    at = np.stack([np.interp(to_edges, edges, row) for row in cdf])
    return _normalized(np.diff(at, axis=1).clip(min=0.0))


def common_grid(grids: list[np.ndarray]) -> np.ndarray:
    """One grid for PDFs on several: the grids themselves if they agree, else their union range at the finest
    bin count among them."""
    first = np.asarray(grids[0], dtype=float)
    if all(len(g) == len(first) and np.allclose(g, first, rtol=0, atol=1e-9) for g in grids):
        return first
    return np.linspace(min(float(g[0]) for g in grids), max(float(g[-1]) for g in grids), max(map(len, grids)))


def mixture_pdf(pdfs: list[np.ndarray], grids: list[np.ndarray], weights, grid: np.ndarray) -> np.ndarray:
    """sum_m w_m p_m of the members' PDFs, each rebinned onto `grid` (weights >= 0 summing to one)."""
    return sum(float(wm) * rebin(p, g, grid) for wm, p, g in zip(weights, pdfs, grids))


def fit_mixture_weights(pdfs: list[np.ndarray], grid: np.ndarray, z_true: np.ndarray) -> np.ndarray:
    """Weights >= 0 summing to one that minimize the mean CRPS of sum_m w_m p_m at z_true (PDFs on `grid`): a
    stacked PDF (stacking by a proper score; the CRPS is quadratic in the weights, so the optimum is unique when
    the members differ). Starts from equal weights; SLSQP, as deepred.predict.ensemble's convex point stack."""
    from scipy.optimize import minimize

    m = len(pdfs)
    res = minimize(lambda w: float(np.mean(crps(sum(wi * p for wi, p in zip(w, pdfs)), grid, z_true))),
                   np.full(m, 1.0 / m), method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}], options={"ftol": 1e-10})
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def _normalized(mass: np.ndarray) -> np.ndarray:
    tot = mass.sum(axis=1, keepdims=True)
    if np.any(tot <= 0) or not np.all(np.isfinite(tot)):
        raise CalibrationError("a PDF has no mass on the grid")
    return mass / tot


# ----------------------------------------------------------------------------------------------------
# Fitting on the validation split
# ----------------------------------------------------------------------------------------------------


def nll(pdf: np.ndarray, grid: np.ndarray, z_true: np.ndarray) -> float:
    """Mean negative log density at z_true (bin mass / bin width; labels beyond the grid count in the end bins)."""
    edges = grid_edges(grid)
    k = np.clip(np.searchsorted(edges, z_true, side="right") - 1, 0, len(grid) - 1)
    density = pdf[np.arange(len(k)), k] / np.diff(edges)[k]
    return float(-np.mean(np.log(np.clip(density, TINY, None))))


def fit_temperature(pdf: np.ndarray, grid: np.ndarray, z_true: np.ndarray) -> float:
    """The T in T_BOUNDS minimizing the validation NLL of temper(pdf, T) (bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: nll(temper(pdf, np.exp(lt)), grid, z_true), method="bounded",
                          bounds=tuple(np.log(T_BOUNDS)), options={"xatol": 1e-4})
    return float(np.exp(res.x))


def fit_pit_map(u: np.ndarray, n_knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y) of G: y = 0, the levels, 1 at x = 0, the validation PITs' quantiles at those levels, 1. The
    levels are k/K (K = n_knots) and the ends of the central 68% and 95% intervals (INTERVAL_LEVELS), so that
    on the validation rows those intervals hold 68% and 95% of the labels by construction.

    x is made strictly increasing (ties, e.g. labels beyond the grid at PIT 0 or 1, are nudged apart) so that G is
    a monotone map of [0, 1] onto itself with G(0) = 0 and G(1) = 1."""
    levels = np.unique(np.round(np.concatenate([np.arange(1, n_knots) / n_knots, INTERVAL_LEVELS]), 12))
    x = np.concatenate([[0.0], np.quantile(np.asarray(u, dtype=float), levels), [1.0]])
    y = np.concatenate([[0.0], levels, [1.0]])
    step = 1e-6
    for i in range(1, len(x)):  # a handful of knots: a loop is clearest
        x[i] = max(x[i], x[i - 1] + step)
    x = np.minimum(x, 1.0 - step * (len(x) - 1 - np.arange(len(x))))
    x[-1] = 1.0
    return x, y


@dataclass
class Calibration:
    """A fitted calibration: how to make the uncalibrated PDF and how to calibrate it (model.json "calibration")."""

    base: str  # one of BASES (module docstring)
    temperature: float
    pit_knots: tuple[np.ndarray, np.ndarray] | None
    sigma: float | None = None  # the gaussian base's width in dz = (z - z_pred) / (1 + z_pred)
    grid: np.ndarray | None = None  # gaussian and mixture bases' grid (native PDFs come on the model's own)
    weights: np.ndarray | None = None  # the mixture base's member weights, in the ensemble's member order
    info: dict | None = None  # what the fit measured (n_fit, validation NLL and PIT KS before and after)

    def uncalibrated(self, res: dict) -> np.ndarray:
        """The uncalibrated PDF of a model's outputs `res` (its own "pdf", or the gaussian base's)."""
        if self.base == "gaussian":
            return gaussian_pdf(res["z_pred"], self.sigma, self.grid)
        if "pdf" not in res:
            raise CalibrationError(f"a '{self.base}' calibration applied to outputs without PDFs")
        return np.asarray(res["pdf"], dtype=float)

    def apply(self, res: dict, grid: np.ndarray) -> dict:
        """A model's outputs with the calibrated PDF (pdf, its PDF_SUMMARY columns) and the uncalibrated one
        (pdf_uncalibrated), on `grid`; z_pred as it was."""
        raw = self.uncalibrated(res)
        pdf = self.calibrate(raw)
        return {**res, **pdf_summary(pdf, grid), "z_pred": res["z_pred"], "pdf": pdf, PDF_UNCALIBRATED: raw}

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        out = temper(raw, self.temperature)
        return apply_pit_map(out, self.pit_knots) if self.pit_knots is not None else out

    def record(self) -> dict:
        """The JSON record stored in model.json under deepred.contracts.model_json.CALIBRATION."""
        return {
            "base": self.base,
            "sigma": self.sigma,
            "grid": None if self.grid is None else [float(g) for g in self.grid],
            "weights": None if self.weights is None else [float(w) for w in self.weights],
            "temperature": self.temperature,
            "pit_map": None if self.pit_knots is None else {"x": [float(v) for v in self.pit_knots[0]],
                                                             "y": [float(v) for v in self.pit_knots[1]]},
            "fit_split": FIT_SPLIT,
            **(self.info or {}),
        }

    @classmethod
    def from_record(cls, rec: dict, where) -> "Calibration":
        try:
            base, temperature = str(rec["base"]), float(rec["temperature"])
            pm = rec.get("pit_map")
            knots = None if pm is None else (np.asarray(pm["x"], float), np.asarray(pm["y"], float))
            grid = None if rec.get("grid") is None else np.asarray(rec["grid"], dtype=float)
            sigma = None if rec.get("sigma") is None else float(rec["sigma"])
            weights = None if rec.get("weights") is None else np.asarray(rec["weights"], dtype=float)
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where}: unreadable calibration record ({exc!r})") from exc
        if base not in BASES or not temperature > 0 or (base != "native" and grid is None) or (
                base == "gaussian" and (sigma is None or not sigma > 0)) or (base == "mixture" and weights is None):
            raise CalibrationError(f"{where}: bad calibration record (base {base!r}, temperature {temperature}, "
                                   f"sigma {sigma}, grid {'none' if grid is None else len(grid)}, weights {weights})")
        info = {k: v for k, v in rec.items() if k not in ("base", "sigma", "grid", "weights", "temperature", "pit_map")}
        return cls(base, temperature, knots, sigma, grid, weights, info)


def point_sigma(z_pred_train: np.ndarray, z_train: np.ndarray) -> float:
    """The naive width of a point estimator's PDF: the NMAD of its training residuals (never below 1e-4)."""
    return max(nmad(z_pred_train, z_train), 1e-4)


def fit_calibration(raw_val: np.ndarray, grid: np.ndarray, z_val: np.ndarray, pit_knots: int, base: str = "native",
                    sigma: float | None = None, weights: np.ndarray | None = None) -> Calibration:
    """Fit the temperature, then the PIT map (with at most min(pit_knots, rows / ROWS_PER_KNOT) knots; fewer than
    2: none), on the validation rows' uncalibrated PDFs `raw_val` on `grid`."""
    z_val = np.asarray(z_val, dtype=float)
    if len(z_val) < MIN_FIT_ROWS:
        raise CalibrationError(f"{len(z_val)} validation rows; a calibration needs >= {MIN_FIT_ROWS}")
    temperature = fit_temperature(raw_val, grid, z_val)
    tempered = temper(raw_val, temperature)
    n_knots = min(int(pit_knots), len(z_val) // ROWS_PER_KNOT)
    knots = fit_pit_map(pit(tempered, grid, z_val), n_knots) if n_knots >= 2 else None
    cal = Calibration(base, temperature, knots, sigma, None if base == "native" else np.asarray(grid, dtype=float),
                      weights)
    after = cal.calibrate(raw_val)
    cal.info = {"n_fit": int(len(z_val)),
                "val_nll_uncalibrated": nll(raw_val, grid, z_val), "val_nll": nll(after, grid, z_val),
                "val_pit_ks_uncalibrated": float(ks_uniform(pit(raw_val, grid, z_val))),
                "val_pit_ks": float(ks_uniform(pit(after, grid, z_val)))}
    return cal


def fit_point_calibration(z_pred_train, z_train, z_pred_val, z_val, n_bins: int, pit_knots: int) -> Calibration:
    """A point estimator's calibration: grid over the training labels, naive width from training residuals,
    temperature and PIT map from the validation residuals."""
    grid = label_grid(z_train, n_bins)
    sigma = point_sigma(z_pred_train, z_train)
    raw = gaussian_pdf(z_pred_val, sigma, grid)
    return fit_calibration(raw, grid, z_val, pit_knots, base="gaussian", sigma=sigma)

