"""The PDF calibration table (results/tables/pdf_calibration.csv): how well every model's PDFs are calibrated on
each test set, before and after the calibration of deepred.pdfs.calibration.

One row per (test set, model, stage): stage `uncalibrated` reads a prediction file's pdf_uncalibrated column
(or its pdf, for a PDF head that has no calibration), `calibrated` its pdf. Columns: PIT KS, CRPS and the 68% and
95% interval coverage with paired bootstrap intervals (the test set's resamples, shared with every other metric),
the targets (KS below 1.36 / sqrt(n), the 5% critical value; coverage within two binomial standard errors) and
whether they are met, and the NMAD of z_pred beside the NMAD of the stage's PDF median: the point estimate with and
without the PDF, from one run. An ensemble's final row also holds its CRPS minus its best member's (the member with
the lowest test CRPS) with a paired bootstrap interval: the target "no worse than the best member", tested.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepred.core import metrics as M
from deepred.contracts.predictions import PDF_UNCALIBRATED, pdf_matrix, pdf_quantiles

PDF_METRICS = ("pit_ks", "crps", "coverage_68", "coverage_95")
COVERAGE_LEVELS = {"coverage_68": 0.68, "coverage_95": 0.95}
KS_CRITICAL = 1.36  # KS distance below 1.36 / sqrt(n): consistent with uniform at the 5% level (large-n value)
COLUMNS = (["test_set", "dataset", "model", "family", "stage", "n", "nmad", "nmad_pdf_median"]
           + [f"{m}{s}" for m in PDF_METRICS for s in ("", "_ci_lo", "_ci_hi")]
           + ["ks_limit", "pit_uniform", "coverage_68_tolerance", "coverage_95_tolerance", "coverage_ok",
              "best_member", "crps_minus_best_member", "crps_minus_best_member_ci_lo", "crps_minus_best_member_ci_hi"])


def stages(frame: pd.DataFrame, grid) -> list[tuple[str, str]]:
    """(stage, column) pairs a prediction frame has PDFs for."""
    if grid is None or "pdf" not in frame:
        return []
    if PDF_UNCALIBRATED in frame:
        return [("uncalibrated", PDF_UNCALIBRATED), ("calibrated", "pdf")]
    return [("uncalibrated", "pdf")]


def calibration_rows(base: dict, frame: pd.DataFrame, grid, path, idx, ci_level: float,
                     final_crps: dict | None = None) -> list[dict]:
    """The table's rows of one model's test-set predictions `frame` (deepred.results.tables.test_set_predictions);
    `base` holds the row's identifying columns (test set, dataset, model, family). `final_crps`, when given,
    receives the per-object CRPS of the model's final PDFs (compare_with_members reads it)."""
    zp, zt = frame["z_pred"].to_numpy(float), frame["z_true"].to_numpy(float)
    n = len(zt)
    rows = []
    for stage, column in stages(frame, grid):
        pdf = pdf_matrix(frame, grid, path, column)
        res = {r["metric"]: r for r in M.evaluate(zp, zt, pdf, grid, list(PDF_METRICS), idx=idx, resamples=0,
                                                  ci_level=ci_level)}
        row = {**base, "stage": stage, "n": n, "nmad": M.nmad(zp, zt),
               "nmad_pdf_median": M.nmad(pdf_quantiles(pdf, grid, [0.5])[:, 0], zt)}
        for name in PDF_METRICS:
            row.update({name: res[name]["value"], f"{name}_ci_lo": res[name]["ci_lo"],
                        f"{name}_ci_hi": res[name]["ci_hi"]})
        row["ks_limit"] = KS_CRITICAL / np.sqrt(n)
        row["pit_uniform"] = bool(row["pit_ks"] < row["ks_limit"])
        ok = True
        for name, level in COVERAGE_LEVELS.items():
            row[f"{name}_tolerance"] = 2.0 * np.sqrt(level * (1.0 - level) / n)  # two binomial standard errors
            ok &= bool(abs(row[name] - level) <= row[f"{name}_tolerance"])
        row["coverage_ok"] = ok
        rows.append(row)
    if final_crps is not None and rows:  # the last stage is what the model's prediction files give
        final_crps[base["model"]] = M.crps(pdf, grid, zt)
    return rows


def compare_with_members(rows: list[dict], final_crps: dict, members: list[str], ensembles, idx,
                         ci_level: float) -> None:
    """Fill each ensemble's final row with its mean CRPS minus that of its best member (lowest test CRPS), and the
    paired bootstrap interval of the difference (the test set's resamples): below 0 is better."""
    present = [m for m in members if m in final_crps]
    if not present:
        return
    best = min(present, key=lambda m: (float(np.mean(final_crps[m])), m))
    alpha = 100 * (1 - ci_level) / 2
    finals = {r["model"]: r for r in rows}  # rows are in stage order: the last row per model is its final stage
    for name in ensembles:
        if name not in final_crps or name not in finals:
            continue
        diff = final_crps[name] - final_crps[best]
        lo, hi = (np.nan, np.nan) if idx is None else np.percentile(diff[idx].mean(axis=1), [alpha, 100 - alpha])
        finals[name].update(best_member=best, crps_minus_best_member=float(diff.mean()),
                            crps_minus_best_member_ci_lo=float(lo), crps_minus_best_member_ci_hi=float(hi))
