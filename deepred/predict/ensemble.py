"""Ensembles of the DeepRed backbones: a stacked linear regression and a plain mean, per dataset.

The stacked ensemble is z = intercept + sum_m w_m * z_m over the members' point estimates, fit by least
squares on the validation split only (test rows never enter the fit; `fit_split` in model.json says so).
`ensemble.positive` constrains the weights to be >= 0 (non-negative least squares), which keeps a
collinear set of members from trading huge positive and negative weights; `ensemble.convex` (the default
config's choice) further makes them sum to one with no intercept, fit in (z - z_true) / (1 + z_true).
`ensemble.cv_folds` (K >= 2) chooses, by K-fold cross-validation on the validation rows, between that stack
and the single member that is best on the training folds (weight one on it): with a few hundred validation
rows and one dominant member, the stack's extra weights can cost more in variance than they gain (Breiman
1996 chooses stacking weights the same way).
The mean ensemble averages the members. When every member's prediction file has PDFs (the calibrated ones,
deepred.pdfs.calibration), each ensemble's PDF is a mixture of its members' PDFs, recalibrated on the validation rows:
equal weights for the mean ensemble; for the stacked one a stacked PDF, weights >= 0 summing to one that minimize
the validation CRPS (a point stack's weights, fitted for NMAD, can favour a member whose PDFs are worse).
model.json keeps the calibration with the mixture's weights.
Each writes predictions in the file contract and
results/models/ensemble_{stacked,mean}/{dataset}/model.json with the members, their weights and folders, so
deepred.predict.predictor.load_model can predict new cutouts with it (its members loaded once).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression

from deepred.contracts.model_json import CALIBRATION, ENSEMBLE, MODEL_JSON, read_card, write_card
from deepred.contracts.predictions import (
    PRED_COLUMNS,
    pdf_matrix,
    prediction_frame,
    read_predictions,
    write_predictions,
)
from deepred.core.metrics import nmad
from deepred.core.model_names import ENSEMBLE_METHODS, ENSEMBLES
from deepred.core.provenance import provenance
from deepred.pdfs import calibration as cal

log = logging.getLogger("deepred.predict.ensemble")

FIT_SPLIT = "val"


class EnsembleError(ValueError):
    """Member predictions missing, misaligned or unusable; the message names the file."""


def member_table(pred_paths: dict[str, str | Path]) -> pd.DataFrame:
    """One row per object: object_id, split, z_true and one z_pred column per member (z_<member>)."""
    table = None
    for member, path in pred_paths.items():
        df, _ = read_predictions(path)  # the contract's columns, each object once
        if not np.isfinite(df["z_pred"].to_numpy(float)).all():
            raise EnsembleError(f"{path}: non-finite z_pred values")
        part = df[list(PRED_COLUMNS)].rename(columns={"z_pred": f"z_{member}"})
        if table is None:
            table = part
            continue
        merged = table.merge(part, on="object_id", how="outer", suffixes=("", "_new"), indicator=True)
        if (merged["_merge"] != "both").any():
            n = int((merged["_merge"] != "both").sum())
            raise EnsembleError(f"{path}: {n} objects not shared with the other members' prediction files")
        if not np.allclose(merged["z_true"], merged["z_true_new"], equal_nan=True):
            raise EnsembleError(f"{path}: z_true differs from the other members' (different datasets?)")
        table = merged.drop(columns=["split_new", "z_true_new", "_merge"])
    return table.sort_values("object_id").reset_index(drop=True)


def fit_stacked(z_members: np.ndarray, z_true: np.ndarray, positive: bool = True,
                convex: bool = False) -> tuple[np.ndarray, float]:
    """(weights, intercept) of the least-squares stack of member predictions (n, m) onto z_true.

    convex: weights >= 0 summing to one and no intercept, fit on (z - z_true) / (1 + z_true), the scale NMAD
    measures. A convex combination cannot extrapolate beyond its members, so a few hundred validation rows do
    not buy an offset or a scale that fails on new objects (Breiman 1996, "Stacked regressions")."""
    if not convex:
        reg = LinearRegression(positive=positive).fit(z_members, z_true)
        return reg.coef_.astype(float), float(reg.intercept_)
    from scipy.optimize import minimize

    a = z_members / (1.0 + z_true)[:, None]
    b = z_true / (1.0 + z_true)
    m = z_members.shape[1]
    res = minimize(lambda w: float(np.sum((a @ w - b) ** 2)), np.full(m, 1.0 / m),
                   jac=lambda w: 2.0 * a.T @ (a @ w - b), method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                   options={"ftol": 1e-14, "maxiter": 1000})
    if not res.success:
        raise EnsembleError(f"convex stacking did not converge: {res.message}")
    w = np.clip(res.x, 0.0, None)
    return w / w.sum(), 0.0


def select_by_cv(z_members: np.ndarray, z_true: np.ndarray, folds: int, seed: int, positive: bool = True,
                 convex: bool = False) -> dict:
    """Out-of-fold NMAD of the stack and of the best single member over `folds` seeded folds of the fit rows.

    Returns {"stack_wins" (a tie keeps the stack), "cv_nmad_stacked", "cv_nmad_best_member", "folds"}."""
    from sklearn.model_selection import KFold

    if folds < 2:
        raise EnsembleError(f"ensemble.cv_folds={folds}: use 0 (always the stack) or >= 2 folds")
    n = len(z_true)
    if n < 2 * folds:
        raise EnsembleError(f"ensemble.cv_folds={folds} needs >= {2 * folds} validation rows, got {n}")
    oof_stack, oof_member = np.empty(n), np.empty(n)
    for fit_idx, held in KFold(folds, shuffle=True, random_state=seed).split(z_true):
        w, b = fit_stacked(z_members[fit_idx], z_true[fit_idx], positive=positive, convex=convex)
        oof_stack[held] = b + z_members[held] @ w
        best = int(np.argmin([nmad(col, z_true[fit_idx]) for col in z_members[fit_idx].T]))
        oof_member[held] = z_members[held, best]
    cv_stack, cv_member = nmad(oof_stack, z_true), nmad(oof_member, z_true)
    return {"stack_wins": cv_stack <= cv_member, "folds": int(folds), "cv_nmad_stacked": cv_stack,
            "cv_nmad_best_member": cv_member}


@dataclass
class EnsembleModel:
    """A fitted ensemble's combination of its members' point estimates (the members are deepred.predict.predictor's)."""

    members: list[str]
    weights: np.ndarray
    intercept: float
    meta: dict

    def combine(self, z_members: np.ndarray) -> np.ndarray:
        return self.intercept + z_members @ self.weights

    def combine_pdfs(self, pdfs: list, grids: list, grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The members' PDFs mixed with the PDF weights of the calibration on `grid` (calibration.mixture_pdf)."""
        missing = [m for m, p, g in zip(self.members, pdfs, grids) if p is None or g is None]
        if missing:
            raise EnsembleError(f"members {missing} give no PDFs, but this ensemble mixes its members' PDFs")
        return cal.mixture_pdf(pdfs, grids, weights, grid)


def load_ensemble(model_dir) -> EnsembleModel:
    path = Path(model_dir) / MODEL_JSON
    if not path.is_file():
        raise EnsembleError(f"{path}: missing (run the ensemble rule first)")
    meta = read_card(model_dir, EnsembleError)
    members = list(meta["members"])
    return EnsembleModel(members, np.array([meta["weights"][m] for m in members], float), float(meta["intercept"]),
                         meta)


def fit_ensembles(dataset: str, config: dict, pred_paths: dict[str, str | Path], model_root, pred_root) -> dict:
    """Fit both ensembles of one dataset; write their predictions and model.json; return the summaries."""
    members = list(pred_paths)
    table = member_table(pred_paths)
    fit = table[table["split"] == FIT_SPLIT]
    if len(fit) < len(members) + 2:
        raise EnsembleError(f"{dataset}: only {len(fit)} '{FIT_SPLIT}' rows to fit {len(members)} member weights")
    zm = table[[f"z_{m}" for m in members]].to_numpy(float)
    fit_mask = (table["split"] == FIT_SPLIT).to_numpy()
    z_true = table["z_true"].to_numpy(float)
    ens_cfg = config.get("ensemble", {})
    positive = bool(ens_cfg.get("positive", True))
    convex = bool(ens_cfg.get("convex", False))
    member_val = {m: nmad(zm[fit_mask, i], z_true[fit_mask]) for i, m in enumerate(members)}
    w, b, selection = _stacked_weights(zm[fit_mask], z_true[fit_mask], member_val, int(ens_cfg.get("cv_folds", 0)),
                                       int(config["seed"]), positive, convex, dataset)
    weights = {"stacked": (w, b), "mean": (np.full(len(members), 1.0 / len(members)), 0.0)}  # per ENSEMBLE_METHODS

    first_meta = _member_meta(model_root, members[0], dataset)
    pdfs = member_pdfs(pred_paths, table["object_id"])
    out = {}
    for method, name in zip(ENSEMBLE_METHODS, ENSEMBLES):
        w_m, b_m = weights[method]
        model_dir = Path(model_root) / name / dataset
        res = {"z_pred": b_m + zm @ w_m}
        calibration = _mixture_calibration(res, pdfs, method, fit_mask, z_true, config, f"{name}/{dataset}")
        z_pred = res["z_pred"]
        pred = prediction_frame(table, "z_true", res, pdf=calibration is not None)
        pred_path = Path(pred_root) / name / f"{dataset}.parquet"
        write_predictions(pred_path, pred, grid=None if calibration is None else calibration.grid,
                          meta={"model": name, "dataset": dataset})
        meta = {
            "model": name,
            "kind": ENSEMBLE,
            "method": method,
            "dataset": dataset,
            "members": members,
            "weights": {m: float(v) for m, v in zip(members, w_m)},
            "intercept": float(b_m),
            "positive_weights": positive or convex if method == "stacked" else None,
            "convex": convex if method == "stacked" else None,
            "cv_selection": selection if method == "stacked" else None,
            "fit_split": FIT_SPLIT if method == "stacked" else None,
            "n_fit": int(fit_mask.sum()),
            "fit_object_ids_sha256": _ids_digest(table.loc[fit_mask, "object_id"]),
            "metrics": {"val_nmad": nmad(z_pred[fit_mask], z_true[fit_mask]), "member_val_nmad": member_val},
            "member_dirs": {m: f"../../{m}/{dataset}" for m in members},
            **{k: first_meta.get(k) for k in ("bands", "in_chans", "cutout", "pixel_scale", "scaling", "label_column")},
            **({} if calibration is None else {CALIBRATION: calibration.record()}),
            "provenance": provenance(config, list(pred_paths.values())),
        }
        write_card(model_dir, ENSEMBLE, meta)
        log.info("%s on %s: weights %s, intercept %.4f, val NMAD %.4f (members %s)", name, dataset,
                 {m: round(v, 4) for m, v in meta["weights"].items()}, b_m, meta["metrics"]["val_nmad"],
                 {m: round(v, 4) for m, v in member_val.items()})
        out[name] = meta
    return out


def _stacked_weights(z_members: np.ndarray, z_true: np.ndarray, member_val: dict, folds: int, seed: int,
                     positive: bool, convex: bool, dataset: str) -> tuple[np.ndarray, float, dict | None]:
    """(weights, intercept, cv selection or None) of the stacked ensemble on the fit rows: the stack, or with
    cv_folds the single best member where cross-validation prefers it."""
    members = list(member_val)
    w, b = fit_stacked(z_members, z_true, positive=positive, convex=convex)
    if not folds:
        return w, b, None
    selection = select_by_cv(z_members, z_true, folds, seed, positive=positive, convex=convex)
    selection["chosen"] = "stacked" if selection.pop("stack_wins") else min(member_val, key=member_val.get)
    if selection["chosen"] != "stacked":
        w, b = (np.array([float(m == selection["chosen"]) for m in members]), 0.0)
    log.info("%s: %d-fold validation NMAD stack %.4f, best single member %.4f -> %s", dataset, folds,
             selection["cv_nmad_stacked"], selection["cv_nmad_best_member"], selection["chosen"])
    return w, b, selection


def member_pdfs(pred_paths: dict[str, str | Path], object_ids: pd.Series) -> dict | None:
    """{member: (PDFs in object_ids' order, grid)} from the members' prediction files, or None when one of them
    has no PDFs (members fitted before calibrations existed): the ensembles then give point estimates only."""
    out = {}
    for member, path in pred_paths.items():
        df, grid = read_predictions(path)
        if grid is None or "pdf" not in df:
            log.info("%s: no PDFs; the ensembles give point estimates only", path)
            return None
        df = df.set_index(df["object_id"].astype(str)).loc[object_ids.astype(str)]
        out[member] = (pdf_matrix(df, grid, path), grid)
    return out


def _mixture_calibration(res: dict, pdfs: dict | None, method: str, fit_mask: np.ndarray, z_true: np.ndarray,
                         config: dict, what: str) -> cal.Calibration | None:
    """Mix the members' PDFs (method "mean": equal weights; "stacked": weights minimizing the validation CRPS), fit
    the mixture's calibration on the validation rows and put the calibrated PDFs into `res` (in place); None (and
    res untouched) without member PDFs."""
    if pdfs is None:
        return None
    if fit_mask.sum() < cal.MIN_FIT_ROWS:
        log.warning("%s: %d %s rows, too few to calibrate a PDF (>= %d); point estimates only", what,
                    int(fit_mask.sum()), FIT_SPLIT, cal.MIN_FIT_ROWS)
        return None
    grid = cal.common_grid([g for _, g in pdfs.values()])
    on_grid = [cal.rebin(p, g, grid) for p, g in pdfs.values()]
    weights = (np.full(len(on_grid), 1.0 / len(on_grid)) if method == "mean"
               else cal.fit_mixture_weights([p[fit_mask] for p in on_grid], grid, z_true[fit_mask]))
    mixed = cal.mixture_pdf(on_grid, [grid] * len(on_grid), weights, grid)
    fitted = cal.fit_calibration(mixed[fit_mask], grid, z_true[fit_mask], config["calibration"]["pit_knots"],
                                 base="mixture", weights=weights)
    res.update(fitted.apply({**res, "pdf": mixed}, grid))
    log.info("%s: mixture weights %s, calibrated on %d %s rows: temperature %.3f, validation PIT KS %.3f -> %.3f",
             what, dict(zip(pdfs, np.round(weights, 4).tolist())), int(fit_mask.sum()), FIT_SPLIT, fitted.temperature,
             fitted.info["val_pit_ks_uncalibrated"], fitted.info["val_pit_ks"])
    return fitted


def _member_meta(model_root, member: str, dataset: str) -> dict:
    model_dir = Path(model_root) / member / dataset
    return read_card(model_dir, EnsembleError) if (model_dir / MODEL_JSON).is_file() else {}


def _ids_digest(ids) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()
