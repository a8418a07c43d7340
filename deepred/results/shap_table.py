"""The study's SHAP table (results/tables/shap_localization.csv): per test set, model and subset, the pointing
accuracy and mass inside with bootstrap intervals, beside the occlusion and shuffled-label controls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.processed import test_set_rows
from deepred.core.io import write_csv, write_json
from deepred.core.provenance import provenance
from deepred.core.seeds import derive_seed
from deepred.explain.controls import occlusion_summary, shuffled_summary
from deepred.explain.scoring import OCCLUSION_COLUMNS, SHUFFLED_COLUMNS, SUMMARY_COLUMNS, subsets, summarize
from deepred.results.tables import FLOAT_FORMAT

TABLE_COLUMNS = ["test_set", "dataset", "model", "method", "window_px", *SUMMARY_COLUMNS, "split_half_rho", "hq_snr",
                 "tolerance_px", "region_source", *OCCLUSION_COLUMNS, *SHUFFLED_COLUMNS]


def test_set_scores(per_image: pd.DataFrame, test_rows: pd.DataFrame) -> pd.DataFrame:
    """The explained images that belong to a test set (its query narrows the dataset's test split)."""
    return per_image[per_image["object_id"].isin(set(test_rows["object_id"].astype(str)))].reset_index(drop=True)


def _model_rows(config: dict, ts_name: str, dataset: str, model: str, sel: pd.DataFrame,
                occlusion: pd.DataFrame | None, shuffled: pd.DataFrame | None) -> pd.DataFrame:
    """The table rows of one (test set, model): localization, the occlusion control, the shuffled-label control."""
    shap_cfg, metrics_cfg = config["shap"], config.get("metrics", {})
    resamples = int(metrics_cfg.get("bootstrap_resamples", 200))
    level = float(metrics_cfg.get("ci_level", 0.95))
    hq = float(shap_cfg["hq_snr"])
    seed = derive_seed(config["seed"], "shap_table", ts_name, model)
    summary = summarize(sel, hq, resamples, seed, level)
    rho = sel["split_half_rho"] if "split_half_rho" in sel else pd.Series(np.nan, index=sel.index)
    summary["split_half_rho"] = [float(rho[m].median()) for m in subsets(sel, hq).values()]
    if occlusion is not None and len(occlusion):
        occl = occlusion_summary(occlusion, hq, resamples, derive_seed(seed, "occlusion"), level,
                                 float(shap_cfg["reliance_threshold"]))
        summary = summary.merge(occl, on="subset", how="left")
    if shuffled is not None and len(shuffled):
        summary = summary.merge(shuffled_summary(shuffled, hq, resamples, derive_seed(seed, "shuffled"), level),
                                on="subset", how="left")
    for col in (*OCCLUSION_COLUMNS, *SHUFFLED_COLUMNS):
        if col not in summary:
            summary[col] = "" if col in ("looks_at", "swap_uses_object") else np.nan
    summary.insert(0, "window_px", int(sel["window_px"].iloc[0]) if "window_px" in sel else 1)
    summary.insert(0, "method", str(sel["method"].iloc[0]) if "method" in sel else "expected_gradients")
    summary.insert(0, "model", model)
    summary.insert(0, "dataset", dataset)
    summary.insert(0, "test_set", ts_name)
    summary["hq_snr"] = hq
    summary["tolerance_px"] = int(shap_cfg["pointing_tolerance"])
    summary["region_source"] = "+".join(sorted(set(sel["region_source"])))
    return summary


def localization_table(config: dict, per_image_paths: dict[tuple[str, str], str | Path],
                       processed_dirs: dict[str, str | Path],
                       occlusion_paths: dict[tuple[str, str], str | Path] | None = None,
                       shuffled_paths: dict[tuple[str, str], str | Path] | None = None) -> pd.DataFrame:
    """One row per (test set, model, subset): pointing accuracy and mass inside with bootstrap intervals, the
    method, and the controls where given: occlusion (occlusion_paths: (model, dataset) -> occlusion.parquet) and
    the shuffled-label network's pointing accuracy (shuffled_paths: (model, dataset) -> its per_image.parquet).

    per_image_paths maps (model, dataset) to an explain job's per_image.parquet; processed_dirs maps a
    dataset to its processed folder (for the test sets' queries)."""
    occlusion_paths, shuffled_paths = occlusion_paths or {}, shuffled_paths or {}
    parts = []
    for ts_name, ts in config["test_sets"].items():
        ds = ts["dataset"]
        models = [m for m, d in per_image_paths if d == ds]
        if not models:
            continue
        rows = test_set_rows(config, ts_name, processed_dirs[ds])
        for model in models:
            sel = test_set_scores(pd.read_parquet(per_image_paths[(model, ds)]), rows)
            if sel.empty:
                continue  # the explain sample holds none of this test set's rows
            occl = shuf = None
            if (model, ds) in occlusion_paths:
                occl = test_set_scores(pd.read_parquet(occlusion_paths[(model, ds)]), rows)
            if (model, ds) in shuffled_paths:
                shuf = test_set_scores(pd.read_parquet(shuffled_paths[(model, ds)]), rows)
            parts.append(_model_rows(config, ts_name, ds, model, sel, occl, shuf))
    if not parts:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return pd.concat(parts, ignore_index=True)[TABLE_COLUMNS]


def write_localization_table(config: dict, per_image: list, processed_dirs: dict, out_csv, out_provenance) -> None:
    """Write the table (fixed float format, so identical inputs give identical bytes) and its provenance.
    per_image: [model, dataset, per_image path, occlusion path or None, shuffled per_image path or None]
    entries (the last two may be left off); processed_dirs: dataset -> processed folder."""
    entries = [list(e) + [None] * (5 - len(e)) for e in per_image]
    paths = {(m, d): p for m, d, p, _, _ in entries}
    occlusion = {(m, d): o for m, d, _, o, _ in entries if o}
    shuffled = {(m, d): s for m, d, _, _, s in entries if s}
    table = localization_table(config, paths, processed_dirs, occlusion, shuffled)
    write_csv(out_csv, table, float_format=FLOAT_FORMAT)
    write_json(out_provenance, provenance(config, [p for e in entries for p in e[2:] if p]))
