"""Prediction files -> metrics per test set -> the study's tables (CSV, byte-identical for identical inputs).

Two steps, so that a change to one dataset's models reruns only that dataset's metrics:
1. `test_set_metrics` (one job per test set) reads every model's prediction file for the test set, checks it
   against the catalogue, and evaluates every metric with a paired bootstrap (one set of resample indices per
   test set, shared by all models, so improvements and ratios get intervals too). It writes
   results/metrics/{test_set}/{metrics,nmad,binned,calibration}.csv.
2. `build_tables` stacks those into results/tables/: {table}_nmad.csv per `table` group, summary.csv (long form),
   improvement.csv (the paper's headline R beside the published one), binned_{z,snr}.csv and pdf_calibration.csv
   (PDFs before and after calibration: deepred.pdfs.calibration_table).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from deepred.contracts.predictions import pdf_matrix, test_set_predictions
from deepred.contracts.processed import DataError, ProcessedDataset, test_set_rows
from deepred.core import metrics as M
from deepred.core.io import write_csv
from deepred.core.model_names import (
    ENSEMBLES,
    HYBRID_FAMILY,
    PHOTOMETRY_BASELINE,
    PHOTOMETRY_FAMILY,
    ensemble_members,
    image_baselines,
    model_family,
    table_models,
)
from deepred.core.seeds import derive_seed
from deepred.pdfs.calibration_table import COLUMNS as CALIBRATION_COLUMNS
from deepred.pdfs.calibration_table import calibration_rows, compare_with_members
from deepred.workflow.paths import METRIC_KINDS  # the per-test-set files of metrics_test_set
from deepred.workflow.plan import STUDY_TABLES, nmad_table_names, table_names, table_test_sets

log = logging.getLogger("deepred.results.tables")

FLOAT_FORMAT = "%.6g"  # fixed precision: the CSVs compare as text


# ----------------------------------------------------------------------------------------------------
# Which models the tables hold: deepred.core.model_names.table_models, in its row order
# ----------------------------------------------------------------------------------------------------


NO_BASELINE = "no baseline"  # best_baseline of a config with every baseline disabled (no R is computed)
NO_DEEPRED = "no DeepRed model"


# ----------------------------------------------------------------------------------------------------
# Reading and checking prediction files
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# Step 1: one test set
# ----------------------------------------------------------------------------------------------------


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-count bin edges (rounded to 4 significant digits for readable tables), deduplicated."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return np.array([])
    edges = np.quantile(v, np.linspace(0, 1, n_bins + 1))
    edges = np.array([float(f"{e:.4g}") for e in edges])
    edges[0], edges[-1] = min(edges[0], v.min()), max(edges[-1], v.max())
    edges = np.unique(edges)
    return edges if len(edges) > 1 else np.array([edges[0], edges[0]])  # a constant column is one bin


def binned_rows(sel_by_model: dict, values: np.ndarray, edges: np.ndarray, by: str, base: dict, config: dict):
    rows = []
    thr = config["metrics"]["outlier_threshold"]
    k = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2) if len(edges) > 1 else None
    for model, (zp, zt) in sel_by_model.items():
        for b in range(len(edges) - 1):
            m = (k == b) & np.isfinite(values)
            if not m.any():
                continue
            s = M.sample_arrays(zp[m], zt[m])
            rows.append({**base, "model": model, "family": model_family(config, model), "binned_by": by, "bin": b,
                         "lo": edges[b], "hi": edges[b + 1], "n": int(m.sum()),
                         "nmad": M.metric_values("nmad", s, {}),
                         "outlier_frac": M.metric_values("outlier_frac", s, {"outlier_threshold": thr})})
    return rows


def _evaluate_models(config, test_set, pred_paths, rows, catalog, label, idx):
    """Every metric of every table model on the test-set rows: (long rows, NMAD, bootstrap NMADs, points, PDF
    calibration rows)."""
    mcfg = config["metrics"]
    params = {"outlier_threshold": mcfg["outlier_threshold"]}
    base = {"test_set": test_set, "dataset": config["test_sets"][test_set]["dataset"]}
    long_rows, nmad_boot, nmad_val, point, pdf_rows, final_crps = [], {}, {}, {}, [], {}
    for model in table_models(config):
        path = pred_paths[model]
        sel, grid = test_set_predictions(path, rows, catalog, label)
        pdf = pdf_matrix(sel, grid, path) if grid is not None else None
        zp, zt = sel["z_pred"].to_numpy(float), sel["z_true"].to_numpy(float)
        try:
            res = M.evaluate(zp, zt, pdf, grid, mcfg["metrics"], idx=idx, resamples=0,
                             outlier_threshold=mcfg["outlier_threshold"], ci_level=mcfg["ci_level"])
        except M.MetricError as exc:
            raise DataError(f"{path}: {exc}") from exc
        fam = model_family(config, model)
        long_rows += [{**base, "model": model, "family": fam, **r} for r in res]
        pdf_rows += calibration_rows({**base, "model": model, "family": fam}, sel, grid, path, idx, mcfg["ci_level"],
                                     final_crps)
        s = M.sample_arrays(zp, zt)
        nmad_val[model] = M.metric_values("nmad", s, params)
        nmad_boot[model] = M.metric_values("nmad", s, params, idx) if idx is not None else None
        point[model] = (zp, zt)
    compare_with_members(pdf_rows, final_crps, ensemble_members(config), ENSEMBLES, idx, mcfg["ci_level"])
    return long_rows, nmad_val, nmad_boot, point, pdf_rows


def _training_median_nmad(catalog, rows, label, processed_dir) -> float:
    """The floor every model must clear: the training split's median label predicted for every test object."""
    train_labels = catalog.loc[(catalog["split"] == "train").to_numpy(), label].to_numpy(float)
    if not len(train_labels):
        raise DataError(f"{processed_dir}: no training rows; the training-median reference needs them")
    return M.nmad(np.full(len(rows), np.median(train_labels)), rows[label].to_numpy(float))


def _paired_improvement(nmad_val, nmad_boot, ref, model, alpha, prefix) -> dict:
    """{prefix, prefix_ci_lo, prefix_ci_hi}: the model's improvement over `ref` with its paired-bootstrap interval."""
    out = dict.fromkeys((prefix, f"{prefix}_ci_lo", f"{prefix}_ci_hi"), np.nan)
    if ref is None:
        return out
    out[prefix] = M.improvement(nmad_val[ref], nmad_val[model])
    if nmad_boot[model] is not None:
        bb = nmad_boot[ref]
        imp = np.where(bb > 0, (bb - nmad_boot[model]) / np.where(bb > 0, bb, 1), np.nan)
        out[f"{prefix}_ci_lo"], out[f"{prefix}_ci_hi"] = np.nanpercentile(imp, [alpha, 100 - alpha])
    return out


def _nmad_rows(config, test_set, n, nmad_val, nmad_boot, median_nmad) -> list[dict]:
    """NMAD with its interval and the paired-bootstrap improvement over the best image baseline (every baseline but
    photometry) and, in improvement_photometry*, over the photometric baseline, per model."""
    ts = config["test_sets"][test_set]
    alpha = 100 * (1 - config["metrics"]["ci_level"]) / 2
    bases = image_baselines(config)
    best_base = min(bases, key=lambda m: (nmad_val[m], m)) if bases else None
    phot = PHOTOMETRY_BASELINE if PHOTOMETRY_BASELINE in nmad_val else None
    nm = []
    for model in table_models(config):
        r = {"test_set": test_set, "dataset": ts["dataset"], "table": ts["table"], "model": model,
             "family": model_family(config, model), "n": n,
             "nmad": nmad_val[model], "nmad_ci_lo": np.nan, "nmad_ci_hi": np.nan, "best_baseline": best_base or NO_BASELINE,
             "improvement": np.nan, "improvement_ci_lo": np.nan, "improvement_ci_hi": np.nan,
             "median_nmad": median_nmad, "nmad_over_median": nmad_val[model] / median_nmad if median_nmad else np.nan}
        if nmad_boot[model] is not None:
            r["nmad_ci_lo"], r["nmad_ci_hi"] = np.percentile(nmad_boot[model], [alpha, 100 - alpha])
        r.update(_paired_improvement(nmad_val, nmad_boot, best_base, model, alpha, "improvement"))
        r.update(_paired_improvement(nmad_val, nmad_boot, phot, model, alpha, "improvement_photometry"))
        nm.append(r)
    return nm


def bootstrap_seed(config: dict, test_set: str) -> int:
    """The seed of a test set's bootstrap indices, one draw shared by every model (and by hybrid_controls.csv)."""
    return derive_seed(config["seed"], "bootstrap", test_set)


def test_set_metrics(config: dict, test_set: str, pred_paths: dict[str, str | Path], processed_dir: str | Path):
    """Evaluate every model on one test set. Returns (metrics_long, nmad, binned, calibration) DataFrames."""
    mcfg = config["metrics"]
    dataset = config["test_sets"][test_set]["dataset"]
    label = config["datasets"][dataset]["label_column"]
    catalog = ProcessedDataset(processed_dir).catalog
    rows = test_set_rows(config, test_set, processed_dir)
    absent = [m for m in table_models(config) if m not in pred_paths]
    if absent:
        raise DataError(f"test set '{test_set}': no prediction file given for models {absent}")
    seed = bootstrap_seed(config, test_set)
    idx = M.bootstrap_indices(len(rows), mcfg["bootstrap_resamples"], seed) if mcfg["bootstrap_resamples"] else None
    long_rows, nmad_val, nmad_boot, point, pdf_rows = _evaluate_models(config, test_set, pred_paths, rows, catalog,
                                                                       label, idx)
    median_nmad = _training_median_nmad(catalog, rows, label, processed_dir)
    nmad = pd.DataFrame(_nmad_rows(config, test_set, len(rows), nmad_val, nmad_boot, median_nmad))

    # Binned: equal-count bins of true redshift and of the catalogue's signal-to-noise
    base = {"test_set": test_set, "dataset": dataset}
    zt = rows[label].to_numpy(float)
    binned = binned_rows(point, zt, quantile_edges(zt, mcfg["z_bins"]), "z_true", base, config)
    if "snr" in rows.columns:
        snr = rows["snr"].to_numpy(float)
        binned += binned_rows(point, snr, quantile_edges(snr, mcfg["snr_bins"]), "snr", base, config)
    else:
        log.warning("test set %s: catalogue has no 'snr' column; no SNR-binned rows", test_set)
    return pd.DataFrame(long_rows), nmad, pd.DataFrame(binned), pd.DataFrame(pdf_rows, columns=CALIBRATION_COLUMNS)


def write_test_set_metrics(config, test_set, pred_paths, processed_dir, out_metrics, out_nmad, out_binned,
                           out_calibration) -> None:
    long_df, nmad, binned, calibration = test_set_metrics(config, test_set, pred_paths, processed_dir)
    write_csv(out_metrics, long_df, float_format=FLOAT_FORMAT)
    write_csv(out_nmad, nmad, float_format=FLOAT_FORMAT)
    write_csv(out_binned, binned, float_format=FLOAT_FORMAT)
    write_csv(out_calibration, calibration, float_format=FLOAT_FORMAT)
    log.info("test set %s: %d models, %d objects", test_set, nmad["model"].nunique(), int(nmad["n"].iloc[0]))


# ----------------------------------------------------------------------------------------------------
# Step 2: the study's tables
# ----------------------------------------------------------------------------------------------------


def _read_all(paths: dict[str, str | Path]) -> pd.DataFrame:
    frames = []
    for ts, p in paths.items():
        df = pd.read_csv(p)
        if df.empty:
            continue
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def improvement_table(config: dict, nmad: pd.DataFrame) -> pd.DataFrame:
    """Per test set: DeepRed's best image-only model vs the best image baseline (every baseline but photometry),
    R = NMAD ratio, the paper's R, and R_photometry = the same ratio against the photometric baseline; then the best
    hybrid (images + photometry, not part of the paper's R) and R_hybrid_photometry, its ratio against photometry."""
    mcfg = config["metrics"]
    paper = mcfg.get("paper_R", {})
    out = []
    for ts in config["test_sets"]:
        d = nmad[nmad["test_set"] == ts].set_index("model")
        ours = d[d["family"].str.startswith("deepred") & (d["family"] != HYBRID_FAMILY)]
        hybrids = d[d["family"] == HYBRID_FAMILY]
        theirs = d[d["family"].str.startswith("baseline") & (d["family"] != PHOTOMETRY_FAMILY)]
        phot = d[d["family"] == PHOTOMETRY_FAMILY]
        row = {"test_set": ts, "dataset": config["test_sets"][ts]["dataset"], "n": int(d["n"].iloc[0]),
               "best_deepred": NO_DEEPRED, "best_deepred_nmad": np.nan, "best_baseline": NO_BASELINE,
               "best_baseline_nmad": np.nan, "improvement": np.nan, "improvement_ci_lo": np.nan,
               "improvement_ci_hi": np.nan, "R": np.nan, "R_ci_lo": np.nan, "R_ci_hi": np.nan,
               "paper_R": paper.get(ts, np.nan), "photometry_nmad": np.nan, "R_photometry": np.nan,
               "R_photometry_ci_lo": np.nan, "R_photometry_ci_hi": np.nan}
        if not ours.empty:
            bo = min(ours.index, key=lambda m: (ours.loc[m, "nmad"], m))
            row.update(best_deepred=bo, best_deepred_nmad=ours.loc[bo, "nmad"])
        if not theirs.empty:
            bb = min(theirs.index, key=lambda m: (theirs.loc[m, "nmad"], m))
            row.update(best_baseline=bb, best_baseline_nmad=theirs.loc[bb, "nmad"])
        if not ours.empty and not theirs.empty:  # a config without baselines (or networks) has no ratio
            no, nb = row["best_deepred_nmad"], row["best_baseline_nmad"]
            same = d.loc[bo, "best_baseline"] == bb
            row.update(improvement=d.loc[bo, "improvement"] if same else M.improvement(nb, no),
                       improvement_ci_lo=d.loc[bo, "improvement_ci_lo"], improvement_ci_hi=d.loc[bo, "improvement_ci_hi"],
                       # R = 1 - improvement, so its interval is the mirrored improvement interval
                       R=no / nb if nb else np.nan,
                       R_ci_lo=1 - d.loc[bo, "improvement_ci_hi"], R_ci_hi=1 - d.loc[bo, "improvement_ci_lo"])
        if not phot.empty:
            row["photometry_nmad"] = nph = phot["nmad"].iloc[0]
        if not ours.empty and not phot.empty:
            row.update(R_photometry=row["best_deepred_nmad"] / nph if nph else np.nan,
                       R_photometry_ci_lo=1 - d.loc[bo, "improvement_photometry_ci_hi"],
                       R_photometry_ci_hi=1 - d.loc[bo, "improvement_photometry_ci_lo"])
        row.update(_best_hybrid(hybrids, row["photometry_nmad"]))
        out.append(row)
    return pd.DataFrame(out)




def _best_hybrid(hybrids: pd.DataFrame, photometry_nmad: float) -> dict:
    """improvement.csv's hybrid columns: the best hybrid and its paired ratio against photometry (NaN: none)."""
    row = {"best_hybrid": "", "best_hybrid_nmad": np.nan, "R_hybrid_photometry": np.nan,
           "R_hybrid_photometry_ci_lo": np.nan, "R_hybrid_photometry_ci_hi": np.nan}
    if hybrids.empty:
        return row
    bh = min(hybrids.index, key=lambda m: (hybrids.loc[m, "nmad"], m))
    nh = hybrids.loc[bh, "nmad"]
    row.update(best_hybrid=bh, best_hybrid_nmad=nh)
    if photometry_nmad == photometry_nmad and photometry_nmad:  # not NaN, not zero
        row.update(R_hybrid_photometry=nh / photometry_nmad,
                   R_hybrid_photometry_ci_lo=1 - hybrids.loc[bh, "improvement_photometry_ci_hi"],
                   R_hybrid_photometry_ci_hi=1 - hybrids.loc[bh, "improvement_photometry_ci_lo"])
    return row


def study_paths(config: dict, metrics_dir: str | Path, tables_dir: str | Path) -> tuple[dict, dict]:
    """(metric_files, outputs) for build_tables outside the workflow (tests, benchmarks), where no rule
    declares the paths: {kind: {test_set: metrics_dir/test_set/kind.csv}}, {table name: tables_dir/name.csv}."""
    files = {kind: {ts: Path(metrics_dir) / ts / f"{kind}.csv" for ts in config["test_sets"]} for kind in METRIC_KINDS}
    return files, {n: Path(tables_dir) / f"{n}.csv" for n in table_names(config)}


def write_nmad_table(config: dict, table: str, nmad_files: dict[str, str | Path], output: str | Path) -> None:
    """`{table}_nmad`: the NMAD rows of the table's own test sets (`nmad_files[test_set]`), nothing else."""
    wanted = table_test_sets(config, table)
    if sorted(nmad_files) != sorted(wanted):
        raise ValueError(f"table '{table}' is made of test sets {wanted}, given {sorted(nmad_files)}")
    nmad = _read_all(_existing({ts: Path(p) for ts, p in nmad_files.items()}, "nmad"))
    write_csv(output, nmad[nmad["table"] == table].drop(columns=["table"]), float_format=FLOAT_FORMAT)


def _existing(files: dict[str, Path], kind: str) -> dict[str, Path]:
    for ts, p in files.items():
        if not p.exists():
            raise DataError(f"{p}: per-test-set {kind} file missing (run the metrics rule for '{ts}')")
    return files


def build_tables(config: dict, files: dict[str, dict[str, str | Path]], outputs: dict[str, str | Path]) -> None:
    """Stack the per-test-set CSVs (`files[kind][test_set]`) into the study's tables (`outputs[name]`, any of
    table_names: the workflow asks for the STUDY_TABLES here and each `{table}_nmad` from write_nmad_table)."""
    unknown = set(outputs) - set(table_names(config))
    if unknown or not outputs:
        raise ValueError(f"tables to write {sorted(outputs)}: not among the config's {sorted(table_names(config))}")
    files = {kind: _existing({ts: Path(p) for ts, p in files[kind].items()}, kind) for kind in METRIC_KINDS}
    for table in nmad_table_names(config):
        if f"{table}_nmad" in outputs:
            write_nmad_table(config, table, {ts: files["nmad"][ts] for ts in table_test_sets(config, table)},
                             outputs[f"{table}_nmad"])
    study = set(STUDY_TABLES) & set(outputs)
    if not study:
        return
    if study != set(STUDY_TABLES):
        raise ValueError(f"the study tables {list(STUDY_TABLES)} are written together; given only {sorted(study)}")
    long_df = _read_all(files["metrics"])
    nmad = _read_all(files["nmad"])
    binned = _read_all(files["binned"])
    write_csv(outputs["summary"], long_df, float_format=FLOAT_FORMAT)
    write_csv(outputs["improvement"], improvement_table(config, nmad), float_format=FLOAT_FORMAT)
    for by, name in (("z_true", "binned_z"), ("snr", "binned_snr")):
        write_csv(outputs[name], binned[binned["binned_by"] == by] if not binned.empty else binned,
                  float_format=FLOAT_FORMAT)
    write_csv(outputs["pdf_calibration"], _read_all(files["calibration"]), float_format=FLOAT_FORMAT)
