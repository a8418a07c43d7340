"""Workflow-level checks of the metrics and SHAP stages: editing one model's settings reruns only that model's
jobs and what depends on them (Snakemake's `params` rerun trigger), never the other models' training."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "cfg.yaml",
             "--cores", "1"]


def _small_config(path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["datasets"] = {k: cfg["datasets"][k] for k in ("des_deep", "des_wide")}
    cfg["test_sets"] = {k: cfg["test_sets"][k] for k in ("des_deep", "des_wide")}
    cfg["architectures"] = {k: cfg["architectures"][k] for k in ("resnet", "efficientnet")}
    cfg["ensemble"]["members"] = ["resnet", "efficientnet"]
    for name, b in cfg["baselines"].items():
        b["enabled"] = name in ("a1", "hogsvr")
    cfg["shap"]["models"] = []
    cfg["metrics"]["transfer_models"] = ["resnet"]
    cfg["hybrid"]["backbones"] = []
    path.write_text(yaml.safe_dump(cfg))
    return cfg


def _smk(cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def _job_counts(out: str) -> dict[str, int]:
    block = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def _fake_outputs(cwd) -> str:
    """Every output as an empty file (then --touch: Snakemake records each job's params as if it had run);
    returns the --summary it read them from."""
    summary = _smk(cwd, "--summary")
    for line in summary.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 5 or parts[2] in ("all",):
            continue
        p = cwd / parts[0]
        if p.name == "shards":
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("{}" if p.name == "stats.json" else "")  # the DAG reads stats.json's shard records
    return summary


@pytest.mark.workflow
def test_changing_one_model_reruns_only_its_jobs(tmp_path):
    cfg = _small_config(tmp_path / "cfg.yaml")
    summary = _fake_outputs(tmp_path)
    # every test set's calibration metrics and the PDF calibration table are outputs (rules/metrics.smk)
    assert "results/tables/pdf_calibration.csv" in summary
    assert all(f"results/metrics/{ts}/calibration.csv" in summary for ts in cfg["test_sets"])
    _smk(tmp_path, "--touch")
    assert "Nothing to be done" in _smk(tmp_path, "-n")

    cfg["architectures"]["resnet"]["timm_kwargs"] = {"drop_rate": 0.1}  # one model's settings change
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = _smk(tmp_path, "-n")
    jobs = _job_counts(out)
    # resnet on both datasets, its ensembles, its transfer predictions, and the summaries built on them
    assert jobs.pop("train") == 2 and "predict" not in jobs  # each training job writes its predictions
    assert all(f"models/resnet/{d}" in out for d in ("des_deep", "des_wide"))
    assert "models/efficientnet" not in re.sub(r"input:.*", "", out)  # efficientnet is only read, not retrained
    assert jobs.pop("ensemble") == 2 and jobs.pop("transfer_predict") == 2
    assert jobs.pop("metrics_test_set") == 2 and jobs.pop("figures_test_set") == 2
    summaries = ("tables", "improvement_figure", "transfer_table", "runtime_table", "all")
    assert {k: jobs[k] for k in summaries} == dict.fromkeys(summaries, 1)
    assert jobs.pop("nmad_table") == 2  # des_deep_nmad and des_wide_nmad: one job per table
    for untouched in ("simulate", "normalize", "hogsvr"):
        assert untouched not in jobs

    # the HOG+SVR grid is a rerun trigger too: refit on both datasets, retrain nothing
    _smk(tmp_path, "--touch")
    cfg["baselines"]["hogsvr"]["C"] = [1.0, 1000.0]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    jobs = _job_counts(_smk(tmp_path, "-n"))
    assert jobs.pop("hogsvr") == 2 and jobs.pop("metrics_test_set") == 2
    for untouched in ("simulate", "normalize", "train", "predict", "ensemble", "transfer_predict"):
        assert untouched not in jobs, jobs

    # the calibration settings refit every model's calibration: its fitting jobs rerun (same weights), data do not
    _smk(tmp_path, "--touch")
    cfg["calibration"]["pit_knots"] = 5
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    jobs = _job_counts(_smk(tmp_path, "-n"))
    assert jobs.pop("train") == 6 and jobs.pop("hogsvr") == 2 and jobs.pop("ensemble") == 2  # 3 networks x 2 sets
    for untouched in ("simulate", "normalize"):
        assert untouched not in jobs, jobs


@pytest.mark.workflow
def test_an_attribution_setting_reruns_only_the_explain_jobs_of_its_method(tmp_path):
    """shap.method_per_model gives EfficientNet occlusion maps: an occlusion knob reruns its two explain jobs, an
    expected-gradient knob ResNet's two, and neither retrains anything."""
    cfg = _small_config(tmp_path / "cfg.yaml")
    cfg["shap"]["models"] = ["resnet", "efficientnet"]
    cfg["shap"]["method_per_model"] = {"efficientnet": "occlusion"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    _fake_outputs(tmp_path)
    _smk(tmp_path, "--touch")
    assert "Nothing to be done" in _smk(tmp_path, "-n")
    for key, value, model in (("occlusion_map_stride_px", 4, "efficientnet"), ("nsamples", 16, "resnet")):
        _smk(tmp_path, "--touch")
        cfg["shap"][key] = value
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        out = _smk(tmp_path, "-n")
        jobs = _job_counts(out)
        assert jobs.pop("shap_explain") == 2, (key, jobs)
        assert all(f"results/shap/{model}/{d}/per_image.parquet" in out for d in ("des_deep", "des_wide"))
        assert "train" not in jobs and "predict" not in jobs, (key, jobs)
