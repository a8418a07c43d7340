"""The download path inside the workflow: config/paper.yaml validates and dry-runs the whole real-data DAG,
and a real Snakemake run fetches a Pasquet-form SDSS set from a loopback HTTP server, verifies it and
normalizes it through rules/download.smk -> rule normalize."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from realformats import RangeServer, file_specs, write_sdss

from deepred.contracts.config import load_config
from deepred.workflow.slurm import copy_workflow

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _snakemake(*args, cwd=ROOT, timeout=240):
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def test_paper_config_is_complete_and_real():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    kinds = {d: ds["source"]["kind"] for d, ds in cfg["datasets"].items()}
    assert kinds == {
        "des_deep": "deepgravilens", "des_wide": "deepgravilens", "desi_dot": "deepgravilens",
        "lsst_wide": "deepgravilens", "kids": "cutouts", "sdss": "cutouts",  # cut from tiles / frames (deepred/cutouts)
    }
    assert len(cfg["test_sets"]) == 7
    assert cfg["datasets"]["des_wide"]["source"]["files"][0]["name"].endswith("_7.npy")  # DES-wide: 7 epochs


@pytest.mark.workflow
def test_paper_config_dry_run_shows_the_real_data_dag(tmp_path):
    targets = ["results/tables/kids_nmad.csv", "data/processed/kids/catalog.parquet",
               "data/processed/sdss/catalog.parquet"]
    # in a copy of the workflow: never the checkout's own .snakemake/ (tests/conftest.py)
    workdir = copy_workflow(ROOT, tmp_path / "wf")
    out = _snakemake("--configfile", "config/paper.yaml", "-n", *targets, cwd=workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, flags=re.M))
    assert int(counts["download"]) >= 3  # target tables (kids, sdss) + the KiDS tile list
    assert int(counts["cutout_images"]) == 2 and int(counts["cutouts"]) == 2  # tiles / frames, then the cutouts
    assert "simulate" not in counts


@pytest.mark.workflow
def test_workflow_downloads_verifies_and_normalizes_sdss(tmp_path):
    archive = tmp_path / "archive"
    write_sdss(archive, 60)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    with RangeServer(archive) as srv:
        cfg["data_dir"] = "data"
        cfg["datasets"] = {
            "sdss": {
                "source": {"kind": "sdss", "cube": "cube.npy", "labels": "labels.csv", "files": file_specs(archive, srv.url)},
                "bands": ["u", "g", "r", "i", "z"], "cutout": 64, "label_column": "z_lens", "label_range": [0.0, 0.4],
                "splits": {"train": 0.5, "val": 0.25, "test": 0.25}, "rows_per_shard": 32,
            }
        }
        cfg["test_sets"] = {"sdss": {"dataset": "sdss", "table": "sdss"}}
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        out = _snakemake(
            "--directory", str(tmp_path), "--configfile", str(tmp_path / "cfg.yaml"), "--cores", "1",
            "data/processed/sdss/catalog.parquet",
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert sorted(r["path"] for r in srv.requests) == ["cube.npy", "labels.csv"]
    log = (tmp_path / "logs" / "download" / "sdss" / "cube.npy.log").read_text()
    assert "downloaded and verified" in log
    assert len(pd.read_parquet(tmp_path / "data" / "processed" / "sdss" / "catalog.parquet")) == 60
