"""The scale study (deepred/results/scale_study.py, rules/scale_study.smk): nested training subsets, the crossover with
photometry, and the whole study run by Snakemake on a tiny simulation from config/scale_study.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deepred.contracts.processed import train_subset
from deepred.results.scale_study import crossover_n, crossovers

REPO = Path(__file__).resolve().parents[2]


def _rows(n_systems: int, copies: int = 1) -> pd.DataFrame:
    ids = [f"s{i:04d}" for i in range(n_systems) for _ in range(copies)]
    return pd.DataFrame({"system_id": ids, "object_id": [f"{s}_{k}" for k, s in enumerate(ids)]})


def test_train_subsets_are_nested_whole_systems_and_seeded():
    rows = _rows(200, copies=3)  # three images per system: a subset takes a system's rows together
    small, large = (train_subset(rows, n, 7, "des_deep") for n in (20, 80))
    assert small["system_id"].nunique() == 20 and large["system_id"].nunique() == 80
    assert len(small) == 60 and len(large) == 240
    assert set(small["system_id"]) < set(large["system_id"])  # a learning curve adds systems
    assert small.equals(train_subset(rows, 20, 7, "des_deep"))  # same seed and dataset: same systems
    assert not set(small["system_id"]) == set(train_subset(rows, 20, 7, "sdss")["system_id"])
    assert train_subset(rows, None, 7, "des_deep") is rows


def test_train_subset_larger_than_the_split_names_the_dataset():
    with pytest.raises(ValueError, match=r"dataset 'sdss' train split: 300 training systems asked for, the split "
                                         r"has 200"):
        train_subset(_rows(200), 300, 7, "sdss")


def test_crossover_interpolates_in_log_size_and_says_when_there_is_none():
    sizes = np.array([100, 1000])
    assert crossover_n(sizes, np.array([2.0, 0.5])) == pytest.approx(np.sqrt(100 * 1000))  # log R symmetric
    assert np.isnan(crossover_n(sizes, np.array([1.4, 1.1])))
    assert np.isnan(crossover_n(sizes, np.array([0.8, 0.7])))

    def table(model, ratios, lo, hi):
        return pd.DataFrame({"dataset": "d", "model": model, "n_train_systems": [100, 200, 400, 1000],
                             "R_photometry": ratios, "R_photometry_ci_lo": lo, "R_photometry_ci_hi": hi})

    t = pd.concat([table("resnet", [1.6, 1.2, 0.9, 0.7], [1.3, 1.0, 0.8, 0.6], [1.9, 1.4, 1.05, 0.85]),
                   table("a3", [1.5, 1.4, 1.3, 1.2], [1.2, 1.1, 1.0, 0.95], [1.8, 1.7, 1.6, 1.5]),
                   table("photometry", [1.0] * 4, [1.0] * 4, [1.0] * 4)])
    c = crossovers(t).set_index("model")
    assert "photometry" not in c.index  # no curve is compared with itself
    assert 200 < c.loc["resnet", "crossover_n"] < 400 and c.loc["resnet", "first_n_better"] == 1000
    assert c.loc["resnet", "verdict"].startswith("crosses photometry at about")
    assert np.isnan(c.loc["a3", "crossover_n"]) and np.isnan(c.loc["a3", "first_n_better"])
    assert c.loc["a3", "verdict"] == ("above photometry at every size (100-1,000 training systems): no crossover; "
                                      "its interval reaches 1 at the largest size")


def _tiny_study_config(path: Path) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "scale_study.yaml").read_text())
    cfg["datasets"] = {"des_deep_scale": cfg["datasets"]["des_deep_scale"]}
    cfg["datasets"]["des_deep_scale"]["source"]["n_systems"] = 150
    cfg["test_sets"] = {"des_deep_scale": cfg["test_sets"]["des_deep_scale"]}
    cfg["scale_study"] = {"datasets": ["des_deep_scale"], "models": ["resnet", "photometry"],
                          "train_systems": [40, 100]}
    cfg["architectures"]["resnet"]["epochs"] = 2
    for name in ("photoz", "a3"):
        cfg["baselines"][name]["enabled"] = False
    cfg["baselines"]["photometry"].update(max_iter=50, min_samples_leaf=[5], learning_rate=[0.1], max_leaf_nodes=[7])
    cfg["metrics"]["bootstrap_resamples"] = 50
    path.write_text(yaml.safe_dump(cfg))
    return cfg


@pytest.mark.workflow
def test_scale_study_runs_from_its_config_and_writes_table_crossover_and_figure(tmp_path):
    _tiny_study_config(tmp_path / "cfg.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "cfg.yaml",
           "--cores", "2", "scale_study"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/tables/scale_study.csv")
    assert list(zip(table["model"], table["n_train_systems"])) == [
        ("photometry", 40), ("photometry", 100), ("resnet", 40), ("resnet", 100)]
    assert (table["n_test"] == table["n_test"].iloc[0]).all() and table["n_test"].iloc[0] > 10  # shared test rows
    assert np.all(table["nmad_ci_lo"] <= table["nmad"]) and np.all(table["nmad"] <= table["nmad_ci_hi"])
    assert np.allclose(table.loc[table["model"] == "photometry", "R_photometry"], 1.0)
    net = table[table["model"] == "resnet"]
    assert list(net["n_train_rows"]) == [40, 100]  # one image per DES-deep system
    assert net["epochs_run"].between(1, 2).all() and (net["max_epochs"] == 2).all()
    r = net["R_photometry"].to_numpy()
    assert np.allclose(r, net["nmad"].to_numpy() / table.loc[table["model"] == "photometry", "nmad"].to_numpy())
    cross = pd.read_csv(tmp_path / "results/tables/scale_study_crossover.csv")
    assert list(cross["model"]) == ["resnet"] and cross["verdict"].str.contains("photometry").all()
    png = tmp_path / "results/figures/scale_study.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # the default config has no scale-study job: its DAG is unchanged by the study's rules
    assert not (tmp_path / "results/predictions").exists()
