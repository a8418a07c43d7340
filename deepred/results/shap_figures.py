"""SHAP figures per test set: example cutouts with their attribution maps and object regions (one figure
per model), and pointing accuracy versus signal-to-noise (all explained models on one axis)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from deepred.contracts.processed import ProcessedDataset, test_set_rows
from deepred.core.seeds import derive_seed
from deepred.explain.attributions import load_explained
from deepred.explain.scoring import accuracy_vs_snr
from deepred.results.figures import label, plt, save
from deepred.results.shap_table import test_set_scores
from deepred.results.tables import quantile_edges

log = logging.getLogger("deepred.results.shap_figures")


def colour_composite(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] from the three reddest bands (reddest as red) of a scaled (bands, H, W) cutout."""
    img = np.asarray(image, dtype=float)
    idx = [min(k, len(img) - 1) for k in range(len(img) - 1, len(img) - 4, -1)] if len(img) >= 3 else [0] * 3
    rgb = np.stack([img[i] for i in idx], axis=-1)
    lo, hi = np.percentile(rgb, 1), np.percentile(rgb, 99.5)
    return np.clip((rgb - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def pick_examples(per_image: pd.DataFrame, n: int) -> np.ndarray:
    """Row positions of n examples spread over class groups and the S/N range (deterministic)."""
    order = per_image.sort_values(["class_group", "snr", "object_id"]).index.to_numpy()
    if len(order) <= n:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, n).round().astype(int))]


def examples_figure(per_image: pd.DataFrame, images: np.ndarray, attr: np.ndarray, regions: np.ndarray,
                    title: str, png: str | Path, n_examples: int) -> None:
    """Top row: colour composites with the object region outlined; bottom row: band-summed SHAP maps
    (red raises the redshift estimate, blue lowers it; occlusion maps: white to red, |change|) with the region
    and the |SHAP| peak marked (green: inside, orange: within the pointing tolerance, magenta: elsewhere)."""
    pos = pick_examples(per_image, n_examples)
    ncol = max(len(pos), 1)
    fig, axes = plt.subplots(2, ncol, figsize=(1.9 * ncol, 4.3), squeeze=False)
    for j, i in enumerate(pos):
        row = per_image.iloc[i]
        shap_map = attr[i].sum(axis=0)
        vmax = float(np.abs(shap_map).max()) or 1.0
        top, bottom = axes[0, j], axes[1, j]
        top.imshow(colour_composite(images[i]), origin="lower")
        if row.get("method") == "occlusion":  # |change of z| where a window is refilled: no sign
            bottom.imshow(shap_map, origin="lower", cmap="Reds", vmin=0, vmax=vmax)
        else:
            bottom.imshow(shap_map, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        for ax, colour in ((top, "white"), (bottom, "black")):
            ax.contour(regions[i].astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            colour_peak = "lime" if row["hit"] else ("orange" if row.get("hit_tol", False) else "magenta")
            ax.plot(row["peak_x"], row["peak_y"], marker="x", color=colour_peak, ms=7, mew=2)
            ax.set_xticks([])
            ax.set_yticks([])
        top.set_title(f"{row['class_group']}\nS/N {row['snr']:.0f}", fontsize=8)
        verdict = "hit" if row["hit"] else ("near" if row.get("hit_tol", False) else "miss")
        bottom.set_title(f"{verdict}, in {row['mass_inside']:.0%}", fontsize=8)
    if not len(pos):  # none of the explained cutouts is in this test set: say so instead of failing
        for ax in axes.flat:
            ax.axis("off")
        axes[0, 0].text(0.5, 0.5, "no explained cutouts", ha="center", va="center", transform=axes[0, 0].transAxes)
    fig.suptitle(title, fontsize=10)
    save(fig, png)


def accuracy_snr_figure(config: dict, test_set: str, per_image_by_model: dict[str, pd.DataFrame],
                        png: str | Path, n_bins: int = 4) -> pd.DataFrame:
    """Pointing accuracy (bootstrap intervals) in equal-count S/N bins, one line per model; the chance level
    (mean region share), the high-quality threshold and the paper's 95% are drawn for reference."""
    hq = float(config["shap"]["hq_snr"])
    resamples = int(config.get("metrics", {}).get("bootstrap_resamples", 200))
    pooled = np.concatenate([f["snr"].to_numpy(float) for f in per_image_by_model.values()] or [np.array([])])
    edges = quantile_edges(pooled, n_bins)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    parts = []
    for k, (model, f) in enumerate(per_image_by_model.items()):
        if len(edges) < 2 or f.empty:
            continue
        b = accuracy_vs_snr(f, edges, resamples, derive_seed(config["seed"], "shap_snr", test_set, model))
        b.insert(0, "model", model)
        parts.append(b)
        ok = b["n"] > 0
        x = b.loc[ok, "snr_mid"].to_numpy()
        y = b.loc[ok, "pointing_acc"].to_numpy()
        err = np.abs(np.vstack([y - b.loc[ok, "pointing_lo"], b.loc[ok, "pointing_hi"] - y]))
        ax.errorbar(x * (1 + 0.03 * k), y, yerr=err, marker="o", capsize=2, label=label(model))
    chance = np.mean([f["region_frac"].mean() for f in per_image_by_model.values() if not f.empty] or [np.nan])
    ax.axhline(0.95, color="grey", ls="--", lw=0.8, label="paper: 95% (high quality)")
    ax.axhline(chance, color="grey", ls=":", lw=0.8, label="chance (region share)")
    ax.axvline(hq, color="k", ls="-.", lw=0.6, label=f"high quality: S/N >= {hq:g}")
    if np.nanmin(pooled, initial=np.inf) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short log range
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("signal-to-noise")
    ax.set_ylabel("pointing-game accuracy (strict)")
    ax.set_title(f"SHAP localization vs S/N: {test_set}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    save(fig, png)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def shap_figures(config: dict, test_set: str, shap_dirs: dict[str, str | Path], processed_dir: str | Path,
                 example_pngs: dict[str, str | Path], snr_png: str | Path) -> None:
    """All SHAP figures of one test set, from the explain jobs of its dataset (shap_dirs: model -> folder)."""

    ds = ProcessedDataset(processed_dir)
    rows = test_set_rows(config, test_set, processed_dir)
    keep_ids = set(rows["object_id"].astype(str))
    by_model = {}
    for model, folder in shap_dirs.items():
        ex = load_explained(folder)
        pi = ex["per_image"]
        sel = pi["object_id"].isin(keep_ids).to_numpy()
        sub = pi[sel].reset_index(drop=True)
        by_model[model] = test_set_scores(pi, rows)
        cat = ds.catalog.set_index("object_id").loc[sub["object_id"]].reset_index()
        images = ds.images(cat) if len(cat) else np.empty((0,))
        acc = sub["hit"].mean() if len(sub) else float("nan")
        method = str(pi["method"].iloc[0]).replace("_", " ") if "method" in pi and len(pi) else "expected gradients"
        title = f"{label(model)} on {test_set} ({method}): pointing {acc:.0%} of {len(sub)} explained cutouts"
        examples_figure(sub, images, ex["attributions"][sel], ex["regions"][sel], title, example_pngs[model],
                        int(config["shap"]["n_examples"]))
    accuracy_snr_figure(config, test_set, by_model, snr_png)
    log.info("%s: SHAP figures for %s", test_set, ", ".join(shap_dirs))
