"""deepred.results.tables: real Parquet prediction files (synthesized here) -> per-test-set metrics -> study tables."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_config

from deepred.results import tables as T
from deepred.contracts.processed import DataError

# Scatter per model: DeepRed's models are better than the baselines, the stacked ensemble best of all.
SCATTER = {"resnet": 0.05, "efficientnet": 0.04, "swin": 0.06, "mixer": 0.07, "ensemble_stacked": 0.03,
           "ensemble_mean": 0.035, "photoz": 0.08, "netz": 0.09, "a1": 0.12, "a3": 0.11, "hogsvr": 0.15,
           "photometry": 0.045, "hybrid_resnet": 0.04}  # better than every image baseline: best_baseline and R must not pick it


def gaussians(grid, mu, sig):
    p = np.exp(-0.5 * ((grid[None] - mu[:, None]) / sig) ** 2)
    return p / p.sum(1, keepdims=True)


def write_pred(path, catalog, model, scatter, seed=0, pdf_grid=None):
    """A prediction file in the contract (val + test rows), PDFs as Gaussians on pdf_grid: the calibrated ones of
    the right width, the uncalibrated ones a third as wide (an overconfident network's)."""
    rows = catalog[catalog["split"].isin(["val", "test"])]
    rng = np.random.default_rng([zlib.crc32(model.encode()), seed])  # the same draws in every process
    zt = rows["z_lens"].to_numpy(float)
    zp = zt + scatter * (1 + zt) * rng.standard_normal(len(zt))
    df = pd.DataFrame({"object_id": rows["object_id"].astype(str).to_numpy(), "split": rows["split"].astype(str),
                       "z_true": zt, "z_pred": zp})
    table = pa.Table.from_pandas(df, preserve_index=False)
    if pdf_grid is not None:
        sig = scatter * (1 + zt)[:, None]
        p = gaussians(pdf_grid, zp, sig)
        for name, v in (("z_mean", (p * pdf_grid).sum(1)), ("z_median", zp), ("z_mode", zp),
                        ("z_lo68", zp - sig[:, 0]), ("z_hi68", zp + sig[:, 0])):
            table = table.append_column(name, pa.array(v))
        table = table.append_column("pdf", pa.array(list(p), type=pa.list_(pa.float64())))
        table = table.append_column("pdf_uncalibrated", pa.array(list(gaussians(pdf_grid, zp, sig / 3)),
                                                                 type=pa.list_(pa.float64())))
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"deepred_pdf_grid": json.dumps(pdf_grid.tolist()).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def study_config(tiny_dataset, results):
    cfg = tiny_config({"tiny": {}}, results_dir=results, data_dir=tiny_dataset.parent.parent)
    cfg["test_sets"] = {
        "tiny_general": {"dataset": "tiny", "table": "tiny", "query": "not high_prob_lens"},
        "tiny_hpl": {"dataset": "tiny", "table": "tiny", "query": "high_prob_lens"},
    }
    cfg["metrics"]["bootstrap_resamples"] = 50
    cfg["metrics"]["paper_R"] = {"tiny_general": 0.84, "tiny_hpl": 0.73}
    return cfg


def write_all_preds(cfg, catalog, pred_dir, seed=0):
    grid = np.linspace(0, 2, 81)
    return {m: write_pred(Path(pred_dir) / m / "tiny.parquet", catalog, m, SCATTER[m], seed,
                          grid if m == "photoz" else None) for m in T.table_models(cfg)}


def run_study(cfg, processed, preds, out):
    out = Path(out)
    for ts in cfg["test_sets"]:
        d = out / "metrics" / ts
        T.write_test_set_metrics(cfg, ts, preds, processed, d / "metrics.csv", d / "nmad.csv", d / "binned.csv",
                                 d / "calibration.csv")
    files, outputs = T.study_paths(cfg, out / "metrics", out / "tables")
    T.build_tables(cfg, files, outputs)
    return outputs


def test_tables_end_to_end(tiny_dataset, tmp_path):
    cfg = study_config(tiny_dataset, tmp_path / "results")
    cat = pd.read_parquet(tiny_dataset / "catalog.parquet")
    preds = write_all_preds(cfg, cat, tmp_path / "preds")
    written = run_study(cfg, tiny_dataset, preds, tmp_path / "a")
    assert set(written) == {"tiny_nmad", "summary", "improvement", "binned_z", "binned_snr", "pdf_calibration"}

    nm = pd.read_csv(written["tiny_nmad"])
    assert sorted(nm["test_set"].unique()) == ["tiny_general", "tiny_hpl"]  # one table, both test sets
    assert len(nm) == 2 * len(SCATTER)
    assert (nm["nmad_ci_lo"] <= nm["nmad"]).all() and (nm["nmad"] <= nm["nmad_ci_hi"]).all()
    n_hpl = int(cat.query("split == 'test' and high_prob_lens").shape[0])
    assert (nm.loc[nm["test_set"] == "tiny_hpl", "n"] == n_hpl).all()
    g = nm[nm["test_set"] == "tiny_general"].set_index("model")
    bb = g.loc["photoz":"hogsvr", "nmad"].idxmin()
    assert (g["best_baseline"] == bb).all()
    assert g.loc[bb, "improvement"] == pytest.approx(0.0)
    assert g.loc["resnet", "improvement"] == pytest.approx(1 - g.loc["resnet", "nmad"] / g.loc[bb, "nmad"], rel=1e-4)
    # the training-median reference, recomputed by hand from the catalogue
    gen = cat[(cat["split"] == "test") & ~cat["high_prob_lens"]]
    z = gen["z_lens"].to_numpy(float)
    dz = (np.median(cat.loc[cat["split"] == "train", "z_lens"]) - z) / (1 + z)
    floor = 1.4826 * np.median(np.abs(dz - np.median(dz)))
    assert g["median_nmad"].to_numpy() == pytest.approx(floor, rel=1e-4)
    assert g["nmad_over_median"].to_numpy() == pytest.approx(g["nmad"].to_numpy() / floor, rel=1e-4)

    summ = pd.read_csv(written["summary"])
    assert list(summ.columns) == ["test_set", "dataset", "model", "family", "metric", "value", "ci_lo", "ci_hi", "n"]
    assert set(summ.loc[summ["model"] == "photoz", "metric"]) >= {"crps", "pit_ks", "nmad"}
    assert "crps" not in set(summ.loc[summ["model"] == "resnet", "metric"])

    # PDFs before and after calibration: the overconfident uncalibrated PDFs cover far less than 68%
    cal = pd.read_csv(written["pdf_calibration"]).set_index(["test_set", "stage"])
    assert set(cal["model"]) == {"photoz"} and len(cal) == 4  # two stages on two test sets
    gen = cal.loc["tiny_general"]
    assert gen.loc["uncalibrated", "coverage_68"] < min(0.5, gen.loc["calibrated", "coverage_68"])
    assert gen.loc["calibrated", "pit_ks"] < gen.loc["uncalibrated", "pit_ks"]
    assert gen.loc["calibrated", "crps"] < gen.loc["uncalibrated", "crps"]
    assert (gen["nmad"] == nm.set_index(["test_set", "model"]).loc[("tiny_general", "photoz"), "nmad"]).all()
    n_gen = gen.loc["uncalibrated", "n"]
    assert gen.loc["uncalibrated", "ks_limit"] == pytest.approx(1.36 / np.sqrt(n_gen), rel=1e-5)
    for name in ("pit_ks", "crps", "coverage_68", "coverage_95"):  # (a resampled KS need not bracket the KS)
        assert (cal[f"{name}_ci_lo"] <= cal[f"{name}_ci_hi"]).all(), name
    cov = summ[(summ["model"] == "photoz") & (summ["metric"] == "coverage_95")].set_index("test_set")["value"]
    assert cov.to_dict() == pytest.approx(cal.xs("calibrated", level="stage")["coverage_95"].to_dict())

    imp = pd.read_csv(written["improvement"]).set_index("test_set")
    for ts in ("tiny_general", "tiny_hpl"):
        d = nm[nm["test_set"] == ts].set_index("model")
        ours = d[d["family"].str.startswith("deepred")]["nmad"]
        assert imp.loc[ts, "best_deepred"] == ours.idxmin()
        assert imp.loc[ts, "R"] == pytest.approx(ours.min() / imp.loc[ts, "best_baseline_nmad"], rel=1e-4)
        assert imp.loc[ts, "R_ci_lo"] <= imp.loc[ts, "R"] <= imp.loc[ts, "R_ci_hi"]
        # photometry: its own family, apart from the image baselines, and its own R
        assert d.loc["photometry", "family"] == "baseline_photometry" and imp.loc[ts, "best_baseline"] != "photometry"
        assert imp.loc[ts, "photometry_nmad"] == d.loc["photometry", "nmad"]
        assert imp.loc[ts, "R_photometry"] == pytest.approx(ours.min() / d.loc["photometry", "nmad"], rel=1e-4)
        assert imp.loc[ts, "R_photometry_ci_lo"] <= imp.loc[ts, "R_photometry"] <= imp.loc[ts, "R_photometry_ci_hi"]
        assert d.loc["resnet", "improvement_photometry"] == pytest.approx(
            1 - d.loc["resnet", "nmad"] / d.loc["photometry", "nmad"], rel=1e-4)
    assert imp.loc["tiny_hpl", "paper_R"] == 0.73
    assert set(summ.loc[summ["model"] == "photometry", "family"]) == {"baseline_photometry"}

    bz = pd.read_csv(written["binned_z"])
    assert set(bz["model"]) == set(SCATTER) and bz["bin"].nunique() == cfg["metrics"]["z_bins"]
    per = bz[(bz["test_set"] == "tiny_general") & (bz["model"] == "resnet")]
    assert per["n"].sum() == int(nm.loc[(nm["test_set"] == "tiny_general"), "n"].iloc[0])
    assert len(pd.read_csv(written["binned_snr"])) > 0

    # same predictions -> byte-identical CSVs
    again = run_study(cfg, tiny_dataset, preds, tmp_path / "b")
    for name, p in written.items():
        assert Path(p).read_bytes() == Path(again[name]).read_bytes(), name


def _break(path, how):
    df = pd.read_parquet(path)
    if how == "drop_column":
        df = df.drop(columns=["z_pred"])
    elif how == "nan":
        df.loc[df.index[df["split"] == "test"][0], "z_pred"] = np.nan
    elif how == "foreign_id":
        df.loc[df.index[0], "object_id"] = "not_in_catalog"
    elif how == "missing_test_row":
        df = df.drop(index=df.index[df["split"] == "test"][0])
    elif how == "wrong_truth":
        df["z_true"] = df["z_true"] + 0.1
    df.to_parquet(path, index=False)


@pytest.mark.parametrize(
    "how, match",
    [
        ("drop_column", r"missing columns \['z_pred'\]"),
        ("nan", "NaN/inf values in 'z_pred'"),
        ("foreign_id", "absent from the catalogue"),
        ("missing_test_row", "have no test prediction"),
        ("wrong_truth", "z_true differs from the catalogue"),
    ],
)
def test_bad_prediction_file_names_file(tiny_dataset, tmp_path, how, match):
    cfg = study_config(tiny_dataset, tmp_path / "results")
    cat = pd.read_parquet(tiny_dataset / "catalog.parquet")
    preds = write_all_preds(cfg, cat, tmp_path / "preds")
    _break(preds["netz"], how)
    with pytest.raises(DataError, match=match) as err:
        T.test_set_metrics(cfg, "tiny_general", preds, tiny_dataset)
    assert str(preds["netz"]) in str(err.value)


def test_missing_model_is_an_error(tiny_dataset, tmp_path):
    cfg = study_config(tiny_dataset, tmp_path / "results")
    cat = pd.read_parquet(tiny_dataset / "catalog.parquet")
    preds = write_all_preds(cfg, cat, tmp_path / "preds")
    preds["swin"].unlink()
    with pytest.raises(DataError, match=r"swin/tiny.parquet: prediction file missing"):
        T.test_set_metrics(cfg, "tiny_hpl", preds, tiny_dataset)
    del preds["swin"]
    with pytest.raises(DataError, match=r"no prediction file given for models \['swin'\]"):
        T.test_set_metrics(cfg, "tiny_hpl", preds, tiny_dataset)
    # a per-test-set metrics file missing stops the table step, naming it
    with pytest.raises(DataError, match="tiny_general/metrics.csv: per-test-set metrics file missing"):
        T.build_tables(cfg, *T.study_paths(cfg, tmp_path / "nowhere", tmp_path / "tables"))


def test_figures(tiny_dataset, tmp_path):
    from deepred.results import figures as F

    cfg = study_config(tiny_dataset, tmp_path / "results")
    cat = pd.read_parquet(tiny_dataset / "catalog.parquet")
    preds = write_all_preds(cfg, cat, tmp_path / "preds")
    written = run_study(cfg, tiny_dataset, preds, tmp_path / "r")
    out = tmp_path / "fig"
    ts = "tiny_general"
    loaded = F.load_test_set_predictions(cfg, ts, preds, tiny_dataset)
    assert loaded["photoz"][1] is not None and loaded["resnet"][1] is None
    F.density_figure(cfg, ts, loaded, out / "density.png", out / "density.pdf")
    F.nmad_vs_z_figure(cfg, ts, pd.read_csv(written["binned_z"]), out / "nmad_z.png", out / "nmad_z.pdf")
    F.pit_figure(cfg, ts, loaded, out / "pit.png", out / "pit.pdf")
    F.pit_figure(cfg, ts, {m: v for m, v in loaded.items() if v[1] is None}, out / "nopit.png", None)
    F.improvement_figure(pd.read_csv(written["improvement"]), out / "imp.png", out / "imp.pdf")
    for name in ("density", "nmad_z", "pit", "imp"):
        png, pdf = (out / f"{name}.png").read_bytes(), (out / f"{name}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
        assert pdf.startswith(b"%PDF"), name
    # the PDF carries no creation time: redrawing gives the same bytes
    F.improvement_figure(pd.read_csv(written["improvement"]), out / "imp2.png", out / "imp2.pdf")
    assert (out / "imp.pdf").read_bytes() == (out / "imp2.pdf").read_bytes()
    # transfer heat map with an n/a cell
    tr = pd.DataFrame({"model": ["resnet", "resnet"], "train_dataset": ["a", "b"], "a": [0.03, np.nan],
                       "b": [0.05, 0.04]})
    F.transfer_figure(tr, out / "transfer.png", out / "transfer.pdf")
    assert (out / "transfer.png").stat().st_size > 5_000


def test_ensemble_crps_is_compared_with_its_best_member_by_a_paired_bootstrap():
    from deepred.pdfs.calibration_table import compare_with_members
    from deepred.core.metrics import bootstrap_indices

    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 0.01, 300)
    crps = {"resnet": base, "swin": base + 0.004, "ensemble_stacked": base - 0.002 + rng.normal(0, 1e-4, 300),
            "ensemble_mean": base + 0.001}
    rows = [{"model": m, "stage": s} for m in crps for s in ("uncalibrated", "calibrated")]
    compare_with_members(rows, crps, ["resnet", "swin"], ("ensemble_stacked", "ensemble_mean"),
                         bootstrap_indices(300, 200, 0), 0.95)
    final = {r["model"]: r for r in rows if r["stage"] == "calibrated"}
    assert all("best_member" not in r for r in rows if r["stage"] == "uncalibrated")  # only the final PDFs
    assert "best_member" not in final["resnet"]  # members are not compared with themselves
    st, mean = final["ensemble_stacked"], final["ensemble_mean"]
    assert st["best_member"] == mean["best_member"] == "resnet"  # the lowest test CRPS, not the first listed
    assert st["crps_minus_best_member"] == pytest.approx(-0.002, abs=2e-5)
    assert st["crps_minus_best_member_ci_hi"] < 0 < mean["crps_minus_best_member_ci_lo"]  # better / worse, tested
