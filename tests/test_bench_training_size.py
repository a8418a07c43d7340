"""The training-size benchmark re-simulates a dataset at each size, trains every model on it and writes one row
per (size, model) with the test NMAD beside the training-median NMAD."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.workflow
def test_learning_curve_rows(tmp_path):
    out = tmp_path / "training_size.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_training_size.py"), "--config",
           str(ROOT / "config" / "ci.yaml"), "--dataset", "kids", "--sizes", "60", "100", "--models", "netz",
           "hogsvr", "--jobs", "1", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["n_systems"], r["model"]) for r in rows] == [(60, "netz"), (60, "hogsvr"), (100, "netz"),
                                                            (100, "hogsvr")]
    small, large = rows[0], rows[2]
    assert 0 < small["n_train"] < large["n_train"] <= 100
    for r in rows:
        assert 0 < r["test_nmad"] < 1 and r["half_median_target"] == r["training_median_nmad"] / 2
    # the simulated data went to --work-dir, one processed dataset per size
    assert sorted(p.name for p in (tmp_path / "work" / "data" / "processed").iterdir()) == ["kids_n100", "kids_n60"]


def test_unknown_dataset_is_named(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_training_size.py"), "--config",
           str(ROOT / "config" / "ci.yaml"), "--dataset", "sdss", "--out", str(tmp_path / "x.json")]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--dataset sdss: not in" in res.stderr and "known: kids" in res.stderr
