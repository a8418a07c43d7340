"""End to end through Snakemake on loopback servers: SDSS frames and KiDS tiles -> cutouts -> shards -> a tiny
training -> tables, in a fresh working directory (the checkout's data/, results/ and logs/ are never touched)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from formats_kids import KIDS_BANDS, write_kids_dr4
from realformats import RangeServer
from survey_formats import SDSS_BANDS, sdss_archive, sources_of, write_sdss_frames

from deepred.fetch.download import pin_folder

REPO = Path(__file__).resolve().parents[2]


def _kids_targets(n_per_tile=12):
    import numpy as np

    rng = np.random.default_rng(4)
    rows = []
    for k, (ra0, dec0) in enumerate([(150.0, 0.5), (150.1, 0.5)]):
        for m in range(n_per_tile):
            rows.append({"ID": f"K{k}{m:02d}", "RA": ra0 + rng.uniform(-0.008, 0.008), "DEC": dec0 + rng.uniform(-0.008, 0.008),
                         "z": rng.uniform(0.1, 0.8), "grade": "ABC"[m % 3]})
    return pd.DataFrame(rows)


def _dataset(root, name, table, extra, source, bands, cutout, label_range):
    raw = root / "data" / "raw" / name
    raw.mkdir(parents=True, exist_ok=True)
    table.to_csv(raw / "targets.csv", index=False)
    for fname, df in extra.items():
        df.to_csv(raw / fname, index=False)
    files = [f for f in pin_folder(raw) if f["name"] in {"targets.csv", *extra}]
    return {"source": {"kind": "cutouts", "files": files, "targets": "targets.csv", **source}, "bands": list(bands),
            "cutout": cutout, "label_column": "z_lens", "label_range": list(label_range),
            "splits": {"train": 0.5, "val": 0.25, "test": 0.25}, "rows_per_shard": 16, "on_bad": "skip"}


@pytest.mark.workflow
def test_frames_and_tiles_to_tables(tmp_path):
    sdss_root, kids_root = tmp_path / "sas", tmp_path / "kids"
    fields, sdss_t = sdss_archive(sdss_root, n_fields=3, per_field=8, seed=3)
    write_sdss_frames(sdss_root, fields, sources_of(sdss_t), noise=0.5)
    kids_t = _kids_targets()
    ksrc = [{"ra": r.RA, "dec": r.DEC, "flux": 150 / (1 + r.z), "kind": "point"} for r in kids_t.itertuples()]
    tiles = write_kids_dr4(kids_root, [(150.0, 0.5), (150.1, 0.5)], ksrc, size=300, noise=0.2)
    work = tmp_path / "work"
    with RangeServer(sdss_root) as s_srv, RangeServer(kids_root) as k_srv:
        cfg = yaml.safe_load((REPO / "config.yaml").read_text())
        cfg["datasets"] = {
            "sdss": _dataset(work, "sdss", sdss_t[["objID", "ra", "dec", "z", "EBV", "run", "camcol", "field"]], {},
                             {"id_column": "objID", "columns": {"z_lens": "z", "ebv": "EBV"},
                              "provider": {"name": "sdss_frames", "base_url": s_srv.url}}, SDSS_BANDS, 32, (0.0, 0.4)),
            "kids": _dataset(work, "kids", kids_t, {"tiles.csv": tiles},
                             {"id_column": "ID", "ra_column": "RA", "dec_column": "DEC", "columns": {"z_lens": "z"},
                              "obj_class": "lens_candidate", "grade_column": "grade", "grades": {"high_prob": ["A"]},
                              "provider": {"name": "kids_tiles", "base_url": k_srv.url + "/tiles", "tiles": "tiles.csv",
                                           "tile_half_size_deg": 0.02}}, KIDS_BANDS, 32, (0.0, 4.0)),
        }
        cfg["test_sets"] = {"sdss": {"dataset": "sdss", "table": "sdss"},
                            "kids_general": {"dataset": "kids", "table": "kids", "query": "not high_prob_lens"}}
        cfg["architectures"] = {"resnet": {**cfg["architectures"]["resnet"], "epochs": 1, "batch_size": 8}}
        for b in cfg["baselines"].values():
            b["enabled"] = False
        cfg["ensemble"]["members"] = ["resnet"]
        cfg["ensemble"]["cv_folds"] = 0
        cfg["shap"]["models"] = []
        cfg["metrics"]["transfer_models"] = []
        cfg["metrics"]["bootstrap_resamples"] = 10
        cfg["download"] = {"retries": 1, "backoff_s": 0.0, "timeout_s": 10}
        (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        smk = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "cfg.yaml", "--cores", "2"]
        # on the login node: every image, once
        out = subprocess.run([*smk, "download_all"], cwd=work, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        s_paths = [r["path"] for r in s_srv.requests]
        assert len(s_paths) == len(set(s_paths)) == 15  # 3 fields x 5 bands
        assert len(k_srv.requests) == 26  # 2 tiles x 4 bands x (sci, wei, msk) + 2 catalogues
        # then everything else, offline: cutouts -> shards -> training -> tables
        out = subprocess.run([*smk, "results/tables/sdss_nmad.csv", "results/tables/kids_nmad.csv"], cwd=work,
                             capture_output=True, text=True, env={**env, "DEEPRED_OFFLINE": "1"}, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert len(s_srv.requests) == 15 and len(k_srv.requests) == 26
    for name, n in (("sdss", 24), ("kids", 24)):
        cat = pd.read_parquet(work / "data" / "processed" / name / "catalog.parquet")
        assert len(cat) + len(pd.read_parquet(work / "data" / "processed" / name / "rejects.parquet")) == n
    for table in ("sdss", "kids"):
        nmad = pd.read_csv(work / "results" / "tables" / f"{table}_nmad.csv")
        assert "resnet" in nmad.to_string()
    locks = {p.name for p in (work / "config" / "pins").glob("*.lock.yaml")}
    assert {"sdss.lock.yaml", "kids.lock.yaml"} <= locks
