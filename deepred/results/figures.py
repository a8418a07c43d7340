"""The study's figures (PNG for the report, PDF for papers), drawn with matplotlib's Agg backend.

Per test set: predicted-vs-true density panels (one per model, with the |dz| = 0.15 outlier lines),
NMAD versus true-redshift bins for every model on one axis, and PIT histograms of every model with PDFs, before
(outline) and after (filled) calibration.
For the study: a bar chart of R = NMAD(best DeepRed) / NMAD(best baseline) with the paper's values marked.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from deepred.core import metrics as M  # noqa: E402
from deepred.contracts.processed import ProcessedDataset, test_set_rows  # noqa: E402
from deepred.core.io import atomic_path  # noqa: E402
from deepred.pdfs.calibration_table import stages  # noqa: E402
from deepred.core.model_names import PHOTOMETRY_BASELINE  # noqa: E402
from deepred.contracts.predictions import pdf_matrix  # noqa: E402
from deepred.results.tables import model_family, table_models
from deepred.contracts.predictions import test_set_predictions  # noqa: E402

log = logging.getLogger("deepred.results.figures")

# Fixed metadata so that the same inputs give the same PDF bytes (no creation date).
_PDF_META = {"CreationDate": None, "Creator": "deepred", "Producer": None}
_PNG_META = {"Software": "deepred"}

LABELS = {"resnet": "ResNet", "efficientnet": "EfficientNet", "swin": "Swin", "mixer": "MLP-Mixer",
          "ensemble_stacked": "Ensemble (stacked)", "ensemble_mean": "Ensemble (mean)", "photoz": "PhotoZ",
          "netz": "NetZ", "a1": "A1", "a3": "A3", "hogsvr": "HOG+SVR", "photometry": "Photometry+GBT"}


def label(model: str) -> str:
    return LABELS.get(model, model)


def save(fig, png: str | Path, pdf: str | Path | None = None, dpi: int = 120) -> None:
    """Write PNG (and PDF) atomically, then close the figure."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata=_PNG_META)
    if pdf:
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata=_PDF_META)
    plt.close(fig)


def _style(model: str, config: dict, i: int) -> dict:
    ours = model_family(config, model).startswith("deepred")
    return {"color": plt.get_cmap("tab20")(i % 20), "ls": "-" if ours else "--", "marker": "o" if ours else "s"}


def load_test_set_predictions(config: dict, test_set: str, pred_paths: dict, processed_dir) -> dict:
    """{model: (frame, grid)} of the test set's rows, checked like the metrics step checks them."""
    ds = config["test_sets"][test_set]["dataset"]
    label_col = config["datasets"][ds]["label_column"]
    catalog = ProcessedDataset(processed_dir).catalog
    rows = test_set_rows(config, test_set, processed_dir)
    return {m: test_set_predictions(pred_paths[m], rows, catalog, label_col) for m in table_models(config)}


def density_figure(config: dict, test_set: str, preds: dict, png, pdf) -> None:
    """Predicted vs true redshift, one panel per model, log-density hexbins with the outlier lines."""
    models = list(preds)
    thr = config["metrics"]["outlier_threshold"]
    ncol = min(4, len(models))
    nrow = math.ceil(len(models) / ncol)
    allz = np.concatenate([np.r_[f["z_true"].to_numpy(), f["z_pred"].to_numpy()] for f, _ in preds.values()])
    lo, hi = np.percentile(allz, [0.5, 99.5])
    pad = 0.05 * (hi - lo)
    lim = (max(0.0, lo - pad), hi + pad)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.9 * ncol + 1.0, 2.9 * nrow + 0.5), squeeze=False, sharex=True,
                             sharey=True, layout="constrained")
    x = np.linspace(*lim, 50)
    hbs = []
    for ax, m in zip(axes.flat, models):
        f, _ = preds[m]
        zt, zp = f["z_true"].to_numpy(float), f["z_pred"].to_numpy(float)
        hb = ax.hexbin(zt, zp, gridsize=30, extent=(*lim, *lim), mincnt=1, cmap="viridis", linewidths=0)
        hbs.append(hb)
        ax.plot(x, x, color="k", lw=0.8)
        for sgn in (1, -1):
            ax.plot(x, x + sgn * thr * (1 + x), color="crimson", lw=0.8, ls="--")
        s = M.sample_arrays(zp, zt)
        nmad = M.metric_values("nmad", s, {})
        out = M.metric_values("outlier_frac", s, {"outlier_threshold": thr})
        ax.set_title(label(m), fontsize=10)
        ax.text(0.04, 0.96, f"NMAD {nmad:.4f}\noutliers {100 * out:.1f}%\nn = {len(zt)}", transform=ax.transAxes,
                va="top", fontsize=8, bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("true z")
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted z")
    # one colour scale for every panel, so densities compare across models
    vmax = max(2.0, max(float(h.get_array().max()) for h in hbs))
    for h in hbs:
        h.set_norm(LogNorm(vmin=1, vmax=vmax))
    fig.colorbar(hbs[-1], ax=axes, shrink=0.6, label="objects per hexagon")
    fig.suptitle(f"{test_set}: predicted vs true redshift (dashed: |dz| = {thr})")
    save(fig, png, pdf)


def nmad_vs_z_figure(config: dict, test_set: str, binned: pd.DataFrame, png, pdf) -> None:
    """NMAD in equal-count bins of true redshift, every model on one axis."""
    b = binned[(binned["test_set"] == test_set) & (binned["binned_by"] == "z_true")]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, m in enumerate(table_models(config)):
        d = b[b["model"] == m].sort_values("bin")
        if d.empty:
            continue
        st = _style(m, config, i)
        ax.plot(0.5 * (d["lo"] + d["hi"]), d["nmad"], label=label(m), color=st["color"], ls=st["ls"],
                marker=st["marker"], ms=4, lw=1.4)
    edges = np.unique(np.r_[b["lo"].to_numpy(), b["hi"].to_numpy()])
    for e in edges:
        ax.axvline(e, color="0.85", lw=0.6, zorder=0)
    ax.set_xlabel("true z (equal-count bins; grey lines: bin edges)")
    ax.set_ylabel("NMAD")
    ax.set_yscale("log")
    ax.set_title(f"{test_set}: NMAD versus redshift (solid: DeepRed, dashed: baselines)")
    ax.legend(fontsize=8, ncol=2, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, png, pdf)


def pit_figure(config: dict, test_set: str, preds: dict, png, pdf, n_bins: int = 20) -> None:
    """PIT histograms of the models with predictive distributions (flat = calibrated)."""
    pdf_models = [m for m, (_, g) in preds.items() if g is not None]
    ncol = max(1, min(3, len(pdf_models)))
    nrow = max(1, math.ceil(len(pdf_models) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.2 * nrow), squeeze=False, layout="constrained")
    if not pdf_models:
        axes[0, 0].text(0.5, 0.5, "no model with a predictive\ndistribution on this test set", ha="center",
                        va="center", transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
    for ax, m in zip(axes.flat, pdf_models):
        f, grid = preds[m]
        zt, ks = f["z_true"].to_numpy(float), {}
        for stage, column in stages(f, grid):
            dens = pdf_matrix(f, grid, m, column)  # (`pdf` is the figure's PDF file)
            u = M.pit(dens, grid, zt)
            ks[stage] = (float(M.ks_uniform(u)), float(np.mean(M.crps(dens, grid, zt))))
            if stage == "calibrated":
                ax.hist(u, bins=n_bins, range=(0, 1), density=True, color="steelblue", edgecolor="white",
                        label="calibrated")
            else:
                ax.hist(u, bins=n_bins, range=(0, 1), density=True, histtype="step", color="darkorange", lw=1.4,
                        label="uncalibrated", zorder=3)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        text = "\n".join(f"{s[:5]}. KS {k:.3f} CRPS {c:.4f}" for s, (k, c) in ks.items())
        ax.text(0.5, 0.97, text, transform=ax.transAxes, ha="center", va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
        ax.set_title(f"{label(m)} (n = {len(zt)}, KS limit {1.36 / np.sqrt(len(zt)):.3f})", fontsize=9)
        ax.set_xlabel("PIT")
        ax.set_ylabel("density")
    if pdf_models:
        axes.flat[0].legend(fontsize=7, frameon=False, loc="lower center")
    for ax in axes.flat[max(1, len(pdf_models)):]:
        ax.set_visible(False)
    fig.suptitle(f"{test_set}: PIT before (outline) and after (filled) calibration; dashed: uniform")
    save(fig, png, pdf)


def improvement_figure(improvement: pd.DataFrame, png, pdf) -> None:
    """R per test set with its bootstrap interval, the paper's published R as black markers and R against the
    photometric baseline (R_photometry) as open circles."""
    d = improvement.reset_index(drop=True)
    x = np.arange(len(d))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(d) + 2), 4.2))
    err = np.vstack([d["R"] - d["R_ci_lo"], d["R_ci_hi"] - d["R"]]).clip(min=0)
    err = np.where(np.isfinite(err), err, 0)
    ax.bar(x, d["R"], width=0.6, color="tab:blue", alpha=0.8, label="this run (95% bootstrap CI)",
           yerr=err, capsize=3, error_kw={"lw": 1})
    has_paper = np.isfinite(d["paper_R"].to_numpy(float))
    ax.scatter(x[has_paper], d.loc[has_paper, "paper_R"], marker="D", color="k", zorder=3, s=30,
               label="paper (arXiv 2602.11281)")
    if "R_photometry" in d:  # improvement.csv written before the photometric baseline has no such column
        ax.scatter(x, d["R_photometry"], marker="o", facecolors="none", edgecolors="tab:green", zorder=3, s=40,
                   label="vs photometry (R_photometry)")
    ax.axhline(1.0, color="crimson", ls="--", lw=1, label="R = 1: no gain over the best baseline")
    for xi, r in zip(x, d["R"]):  # a test set without a baseline (or network) has no R: say so at the axis
        ax.text(xi + 0.32 if np.isfinite(r) else xi, r if np.isfinite(r) else 0.05,
                f"{r:.2f}" if np.isfinite(r) else "no R", va="center", ha="left" if np.isfinite(r) else "center",
                fontsize=8)
    ticks = [f"{t}\n{label(o)}\nvs {label(b)}" for t, o, b in zip(d["test_set"], d["best_deepred"], d["best_baseline"])]
    ax.set_xticks(x, ticks, fontsize=8)
    ax.set_ylabel("R = NMAD(best DeepRed) / NMAD(best image baseline)")
    # the axis follows the values, not the widest interval (small test sets have very wide ones)
    shown = np.r_[d["R"], d["paper_R"], d.get("R_photometry", [])].astype(float)
    ax.set_ylim(0, max(1.2, float(shown[np.isfinite(shown)].max(initial=0)) * 1.25))
    ax.set_title("DeepRed's gain over the best baseline (lower is better)")
    ax.legend(fontsize=8, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, png, pdf)


def transfer_figure(transfer: pd.DataFrame, png, pdf) -> None:
    """NMAD heat maps, one per model: rows the training dataset, columns the evaluation dataset."""
    models = list(dict.fromkeys(transfer["model"]))
    evals = [c for c in transfer.columns if c not in ("model", "train_dataset")]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(3.4 * max(1, len(models)) + 1, 3.4), squeeze=False)
    vals = transfer[evals].to_numpy(float)
    finite = vals[np.isfinite(vals)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size and finite.min() > 0 else None
    for ax, m in zip(axes.flat, models):
        d = transfer[transfer["model"] == m]
        mat = d[evals].to_numpy(float)
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="magma_r", norm=norm)
        for (i, j), v in np.ndenumerate(mat):
            dark = np.isfinite(v) and norm is not None and norm(v) > 0.55  # white text on dark cells
            ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.3f}", ha="center", va="center", fontsize=7,
                    color="0.5" if not np.isfinite(v) else ("w" if dark else "k"),
                    fontweight="bold" if d["train_dataset"].iloc[i] == evals[j] else "normal")
        ax.set_xticks(range(len(evals)), evals, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(d)), d["train_dataset"], fontsize=7)
        ax.set_title(label(m), fontsize=10)
        ax.set_xlabel("evaluated on")
    axes[0, 0].set_ylabel("trained on")
    if models and norm is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="NMAD")
    fig.suptitle("Cross-survey transfer: test NMAD (bold: in-domain; n/a: bands or cutout do not match)")
    save(fig, png, pdf)


def scale_study_figure(table: pd.DataFrame, crossover: pd.DataFrame, config: dict, png, pdf) -> None:
    """Test NMAD against training systems, one panel per dataset, 95% bootstrap bars; photometry in black, and
    each curve's crossover with it marked (deepred.results.scale_study)."""
    from matplotlib.ticker import FixedLocator, LogLocator, NullFormatter, NullLocator

    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets) + 1.6, 4.4), squeeze=False,
                             constrained_layout=True)
    models = list(dict.fromkeys(table["model"]))
    for ax, ds in zip(axes.flat, datasets):
        d = table[table["dataset"] == ds]
        for i, model in enumerate(models):
            m = d[d["model"] == model].sort_values("n_train_systems")
            ours = model_family(config, model).startswith("deepred")
            style = ({"color": "k", "ls": "--", "marker": "s"} if model == PHOTOMETRY_BASELINE else
                     {"color": f"C{3 if ours else i}", "ls": "-" if ours else ":", "marker": "o" if ours else "^",
                      "lw": 2.2 if ours else 1.4})
            err = np.vstack([m["nmad"] - m["nmad_ci_lo"], m["nmad_ci_hi"] - m["nmad"]])
            ax.errorbar(m["n_train_systems"], m["nmad"], yerr=np.where(np.isfinite(err), err, 0), capsize=3,
                        label=label(model), **style)
        for row in crossover[crossover["dataset"] == ds].itertuples():
            if np.isfinite(row.crossover_n):
                ax.axvline(row.crossover_n, color="0.6", ls=":", lw=1)
                ax.annotate(f"{label(row.model)} = photometry\n~{row.crossover_n:,.0f}", (row.crossover_n, 0.98),
                            xycoords=("data", "axes fraction"), fontsize=7, ha="center", va="top")
        sizes = sorted(d["n_train_systems"].unique())
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{n:,}" for n in sizes])
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_xlabel("training systems (nested subsets of one split)")
        ax.set_title(f"{ds} (test n = {int(d['n_test'].iloc[0])})")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("test NMAD, 95% bootstrap interval (lower is better)")
    axes.flat[-1].legend(fontsize=8, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle("Scale study: do the pixels beat photometry with more training data?")
    save(fig, png, pdf)
