"""The scale study: test NMAD against the number of training systems, for chosen models on chosen datasets, set
against the photometric baseline trained on the same systems.

One job per (dataset, model, size) trains on a nested subset of the dataset's training split
(deepred.contracts.processed.train_subset: a size's systems include every smaller size's), early-stops on the whole
validation split and predicts the whole test split, so every point of every curve is measured on the same test
rows and one paired bootstrap per dataset gives intervals to the NMADs and to their ratios.
`build_scale_tables` writes results/tables/scale_study.csv (one row per point) and scale_study_crossover.csv
(where each curve crosses the photometric one); deepred.results.figures.scale_study_figure draws them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.predictions import read_predictions
from deepred.core import metrics as M
from deepred.core.io import write_csv
from deepred.core.model_names import PHOTOMETRY_BASELINE
from deepred.core.seeds import derive_seed
from deepred.predict.splits import predict_model
from deepred.results.tables import FLOAT_FORMAT

log = logging.getLogger("deepred.results.scale_study")

TEST_SPLIT = ("test",)  # each point predicts the whole test split; the val split early-stops the networks
POINT_COLUMNS = ["dataset", "model", "n_train_systems", "n_train_rows", "n_test", "nmad", "nmad_ci_lo", "nmad_ci_hi",
                 "R_photometry", "R_photometry_ci_lo", "R_photometry_ci_hi", "epochs_run", "best_epoch",
                 "max_epochs", "stopped_early", "fit_seconds"]
CROSSOVER_COLUMNS = ["dataset", "model", "sizes", "R_smallest", "R_largest", "crossover_n", "first_n_better",
                     "verdict"]


def fit_point(model: str, dataset: str, n_systems: int, config: dict, processed_dir, model_dir, predictions_path,
              threads: int | None = None) -> None:
    """Train `model` on `n_systems` training systems of `dataset` and write its test-split predictions."""
    # imported here, not at the top: 3425 ms (measured, torch and timm) spared where this is not called
    from deepred.baselines.photometry import train_photometry
    from deepred.training.train import train_model

    if model == PHOTOMETRY_BASELINE:
        train_photometry(dataset, config, processed_dir, model_dir, train_systems=n_systems)
    else:
        train_model(model, dataset, config, processed_dir, model_dir, threads=threads, train_systems=n_systems)
    predict_model(model_dir, processed_dir, predictions_path, splits=TEST_SPLIT)


def point_record(meta_path) -> dict:
    """How a point was fitted, from its model.json: training rows, epochs (networks) and fit seconds."""
    meta = json.loads(Path(meta_path).read_text())
    if "hyper" in meta:  # the photometric baseline (deepred.baselines.photometry): trees, no epochs
        hyper = meta["hyper"]
        return {"n_train_rows": int(hyper["n_train"]), "epochs_run": np.nan, "best_epoch": np.nan,
                "max_epochs": np.nan, "stopped_early": np.nan, "fit_seconds": float(sum(hyper["timing_s"].values()))}
    return {"n_train_rows": int(meta["n_train"]), "epochs_run": int(meta["epochs_run"]),
            "best_epoch": int(meta["best_epoch"]), "max_epochs": int(meta["training"]["epochs"]),
            "stopped_early": bool(meta["stopped_early"]), "fit_seconds": float(meta["wall_seconds_this_run"])}


def _test_frame(path) -> pd.DataFrame:
    df, _ = read_predictions(path)
    return df.set_index(df["object_id"].astype(str)).sort_index()


def _dataset_points(dataset: str, points: list[dict], resamples: int, seed: int, ci_level: float) -> pd.DataFrame:
    """The rows of one dataset: NMAD per point and its ratio to photometry's at the same size, one paired
    bootstrap over the shared test rows."""
    frames = {(p["model"], p["n_systems"]): _test_frame(p["predictions"]) for p in points}
    ids = next(iter(frames.values())).index
    for (model, n), frame in frames.items():
        if not frame.index.equals(ids):
            raise ValueError(f"scale study '{dataset}': {model} at n={n} predicts other test rows than the first "
                             "point; every point must predict the same test split (rebuild it)")
    z_true = next(iter(frames.values()))["z_true"].to_numpy(float)
    idx = M.bootstrap_indices(len(ids), resamples, derive_seed(seed, "scale_study", dataset)) if resamples else None
    alpha = 100 * (1 - ci_level) / 2
    values, boots = {}, {}
    for key, frame in frames.items():
        s = M.sample_arrays(frame["z_pred"].to_numpy(float), z_true)
        values[key] = M.metric_values("nmad", s, {})
        boots[key] = M.metric_values("nmad", s, {}, idx) if idx is not None else None
    rows = []
    for p in points:
        key, phot = (p["model"], p["n_systems"]), (PHOTOMETRY_BASELINE, p["n_systems"])
        row = {"dataset": dataset, "model": p["model"], "n_train_systems": p["n_systems"], "n_test": len(ids),
               "nmad": values[key], **_interval(boots[key], alpha, "nmad")}
        if phot in values:
            ratio = None if boots[key] is None else boots[key] / boots[phot]
            row.update(R_photometry=values[key] / values[phot], **_interval(ratio, alpha, "R_photometry"))
        rows.append({**row, **point_record(p["meta"])})
    return pd.DataFrame(rows)


def _interval(boot, alpha: float, name: str) -> dict:
    lo, hi = (np.nan, np.nan) if boot is None else np.percentile(boot, [alpha, 100 - alpha])
    return {f"{name}_ci_lo": float(lo), f"{name}_ci_hi": float(hi)}


def scale_table(points: list[dict], resamples: int, seed: int, ci_level: float = 0.95) -> pd.DataFrame:
    """One row per (dataset, model, size) of `points` ({dataset, model, n_systems, predictions, meta}), sorted."""
    if not points:
        raise ValueError("the config has no scale_study section: run it with --configfile config/scale_study.yaml")
    parts = [_dataset_points(ds, [p for p in points if p["dataset"] == ds], resamples, seed, ci_level)
             for ds in dict.fromkeys(p["dataset"] for p in points)]
    table = pd.concat(parts, ignore_index=True).reindex(columns=POINT_COLUMNS)
    return table.sort_values(["dataset", "model", "n_train_systems"], kind="stable").reset_index(drop=True)


def crossover_n(sizes: np.ndarray, ratios: np.ndarray) -> float:
    """The training size at which R (model NMAD / photometry NMAD) first falls from above 1 to below it, by
    linear interpolation of log R in log N between the two sizes around it; NaN when it never does."""
    for i in range(1, len(sizes)):
        if ratios[i - 1] >= 1 > ratios[i]:
            x0, x1 = np.log(sizes[i - 1]), np.log(sizes[i])
            y0, y1 = np.log(ratios[i - 1]), np.log(ratios[i])
            return float(np.exp(x0 + (0 - y0) * (x1 - x0) / (y1 - y0)))
    return float("nan")


def _verdict(sizes: np.ndarray, ratios: np.ndarray, lo: np.ndarray, cross: float) -> str:
    span = f"{sizes[0]:,}-{sizes[-1]:,} training systems"
    if np.all(ratios < 1):
        return f"below photometry at every size ({span})"
    if np.all(ratios >= 1):
        tie = "; its interval reaches 1 at the largest size" if lo[-1] <= 1 else ""
        return f"above photometry at every size ({span}): no crossover{tie}"
    if np.isfinite(cross):
        back = " (back above it at a larger size)" if ratios[-1] >= 1 else ""
        return f"crosses photometry at about {cross:,.0f} training systems{back}"
    return f"below photometry at the smaller sizes only ({span})"


def crossovers(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and model (photometry excepted): R at the smallest and largest size, the crossover size, the
    first size whose R interval lies wholly below 1, and a verdict in words."""
    rows = []
    for (dataset, model), d in table[table["model"] != PHOTOMETRY_BASELINE].groupby(["dataset", "model"], sort=False):
        d = d.dropna(subset=["R_photometry"]).sort_values("n_train_systems")
        if d.empty:
            continue
        sizes, ratios = d["n_train_systems"].to_numpy(int), d["R_photometry"].to_numpy(float)
        lo, hi = d["R_photometry_ci_lo"].to_numpy(float), d["R_photometry_ci_hi"].to_numpy(float)
        better = sizes[hi < 1]
        cross = crossover_n(sizes, ratios)
        rows.append({"dataset": dataset, "model": model, "sizes": " ".join(map(str, sizes)),
                     "R_smallest": ratios[0], "R_largest": ratios[-1], "crossover_n": cross,
                     "first_n_better": float(better[0]) if len(better) else np.nan,
                     "verdict": _verdict(sizes, ratios, lo, cross)})
    return pd.DataFrame(rows, columns=CROSSOVER_COLUMNS)


def build_scale_tables(points: list[dict], config: dict, table_path, crossover_path) -> tuple[pd.DataFrame,
                                                                                                 pd.DataFrame]:
    """Write scale_study.csv and scale_study_crossover.csv (fixed float format: they compare as text)."""

    m = config["metrics"]
    table = scale_table(points, int(m["bootstrap_resamples"]), int(config["seed"]), float(m["ci_level"]))
    cross = crossovers(table)
    write_csv(table_path, table, float_format=FLOAT_FORMAT)
    write_csv(crossover_path, cross, float_format=FLOAT_FORMAT)
    for row in cross.itertuples():
        log.info("scale study %s/%s: R %.2f -> %.2f; %s", row.dataset, row.model, row.R_smallest, row.R_largest,
                 row.verdict)
    return table, cross
