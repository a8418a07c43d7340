"""The DeepGraviLens archive path through Snakemake, against a loopback Zenodo, in a copy of the workflow's
working directory under tmp (never the checkout's data/, results/, logs/ or .snakemake/):

`snakemake --cores 4 download_all` (the config/paper.yaml command) reads the record JSON once, downloads
dataset.zip once for the four DeepGraviLens datasets, writes config/pins/deepgravilens.lock.yaml and extracts
each subset; a rerun makes zero HTTP requests; then normalize, a tiny training and the tables run on it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from realformats import ZenodoServer, write_dgl_folders, write_zip_of

from deepred.fetch.pins import Lock

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
REC = 7860294


def _snakemake(workdir: Path, *args, timeout=420):
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(workdir / "cfg.yaml"), *args],
        cwd=workdir, capture_output=True, text=True, timeout=timeout,
    )


def _config(api: str) -> dict:
    """config/paper.yaml's four DeepGraviLens datasets (archive, lock, files) on the loopback record, with
    config/ci.yaml's tiny resnet (1 epoch), no baselines, one test set and no SHAP or transfer."""
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    cfg.update({"data_dir": "data", "results_dir": "results"})
    cfg["download"] = {**paper["download"], "zenodo_api": api, "retries": 2, "backoff_s": 0.0, "timeout_s": 20}
    cfg["datasets"] = {}
    for d in ("des_deep", "des_wide", "desi_dot", "lsst_wide"):
        ds = copy.deepcopy(paper["datasets"][d])
        ds["source"]["files"] = [f for f in ds["source"]["files"] if f["name"].startswith(("GROUP_1_", "GROUP_2_"))]
        ds.update({"splits": {"train": 0.4, "val": 0.3, "test": 0.3}, "rows_per_shard": 64, "scaling": "asinh"})
        cfg["datasets"][d] = ds
    cfg["test_sets"] = {"des_deep": {"dataset": "des_deep", "table": "des_deep"}}
    cfg["architectures"] = {"resnet": cfg["architectures"]["resnet"]}
    cfg["ensemble"] = {"members": ["resnet"]}
    for b in cfg["baselines"].values():  # networks only: the tables need no baseline (no R without one)
        b["enabled"] = False
    cfg["training"].update({"epochs": 1, "patience": 1})
    cfg["metrics"].update({"transfer_models": [], "bootstrap_resamples": 10})
    cfg["shap"]["models"] = []
    cfg["hybrid"] = {"backbones": []}  # ci.yaml's hybrid is a mixer, not kept here
    return cfg


@pytest.mark.workflow
def test_download_all_locks_extracts_then_trains_and_tabulates(tmp_path):
    src = tmp_path / "zenodo_src" / "dataset"
    write_dgl_folders(src, systems_per_group=6)
    z = write_zip_of(src, tmp_path / "served" / "dataset.zip", top="dataset")  # with the optional top folder
    work = tmp_path / "work"
    work.mkdir()
    pins_before = sorted((ROOT / "config" / "pins").glob("*"))
    with ZenodoServer(tmp_path / "served") as srv:
        srv.publish(REC, {"dataset.zip": z, "models.zip": z})
        (work / "cfg.yaml").write_text(yaml.safe_dump(_config(srv.url + "/api")))
        out = _snakemake(work, "--cores", "4", "download_all")
        assert out.returncode == 0, out.stderr[-4000:]
        # one record read and one download, however many datasets extract from it
        assert [r["path"] for r in srv.requests] == [f"api/records/{REC}", f"api/records/{REC}/files/dataset.zip/content"]
        lock = Lock(work / "config" / "pins" / "deepgravilens.lock.yaml")
        assert lock.get("dataset.zip")["md5"] and lock.get("dataset.zip")["sha256"]
        assert len([n for n in lock.names() if n.startswith("dataset.zip!")]) == 16  # 4 subsets x 4 members
        for d, T in (("des_deep", 14), ("des_wide", 7), ("desi_dot", 14), ("lsst_wide", 14)):
            names = sorted(p.name for p in (work / "data" / "raw" / d).glob("GROUP_*"))
            assert names == sorted(f"GROUP_{k}_{r}_{T}.npy" for k in (1, 2) for r in ("ims", "mds"))
        log = (work / "logs" / "download" / "_archives" / f"zenodo-{REC}" / "dataset.zip.log").read_text()
        assert "recorded sha256 of dataset.zip" in log and "downloaded and verified" in log

        # rerun after success, with other download settings (not rerun triggers): nothing to do, zero requests
        n = len(srv.requests)
        cfg = yaml.safe_load((work / "cfg.yaml").read_text())
        cfg["download"].update({"retries": 5, "timeout_s": 30})
        (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        again = _snakemake(work, "--cores", "4", "download_all")
        assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
        assert len(srv.requests) == n

        # normalize, a tiny training and the tables, all from the extracted, lock-verified members
        run = _snakemake(work, "--cores", "2", "results/tables/tables.provenance.json", "results/tables/des_deep_nmad.csv")
        assert run.returncode == 0, run.stderr[-6000:]
        assert len(srv.requests) == n  # nothing after the download touched the network
    cat = pd.read_parquet(work / "data" / "processed" / "des_deep" / "catalog.parquet")
    assert len(cat) == 2 * 6 * 8 - 16 and cat.groupby("system_id")["split"].nunique().max() == 1
    tables = sorted(p.name for p in (work / "results" / "tables").glob("*.csv"))
    assert "des_deep_nmad.csv" in tables
    text = (work / "results" / "tables" / "des_deep_nmad.csv").read_text()
    assert "resnet" in text and "ensemble_stacked" in text
    assert sorted((ROOT / "config" / "pins").glob("*")) == pins_before  # the checkout's locks are untouched
