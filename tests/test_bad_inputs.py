"""Bad input from a hostile but fair new user (issue 14): every case stops with an error that names the file or
config key and the problem, before any output is touched, and loses nothing computed earlier.

Workflow cases run real Snakemake in a copy of the workflow whose outputs are all in place (`--touch`, as
tests/results/test_tables_workflow.py does), so "nothing deleted" is checked against files Snakemake considers done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import make_tiny_raw, tiny_config
from deepred.core.model_names import pdf_models
from deepred.cli import main as cli_main
from deepred.contracts.config import ConfigError, validate_config
from deepred.contracts.processed import DataError, ProcessedDataset, damaged_shards, source_columns
from deepred.data.normalize import normalize
from deepred.contracts.raw import read_simulated
from deepred.core.io import atomic_path, write_text
from deepred.models.preflight import check_networks
from deepred.results.tables import NO_BASELINE, improvement_table
from deepred.workflow.slurm import copy_workflow
from own_cutouts import noise_cube
from workflow_copy import _jobs, _small_config, _smk, _state, edited, finished_copy  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ workflow copy
@pytest.fixture(scope="module")
def done(tmp_path_factory):
    return finished_copy(tmp_path_factory.mktemp("wf"))


# ------------------------------------------------------ 1. a config that can never train keeps the old model
@pytest.mark.parametrize("edit, key, hint", [
    (lambda c: c["architectures"]["resnet"].update(timm_name="resnet10x"), "architectures.resnet.timm_name",
     "did you mean resnet10t"),
    (lambda c: c["architectures"]["resnet"]["timm_kwargs"].update(drop_rte=0.1), "architectures.resnet'",
     "drop_rte"),
    (lambda c: c["architectures"]["resnet"].update(weights="weights/none.safetensors"),
     "architectures.resnet.weights", "weights/none.safetensors does not exist"),
])
def test_config_that_cannot_train_stops_before_the_model_is_deleted(done, edit, key, hint):
    wd, cfg = done
    models = wd / "results" / "models" / "resnet"
    before = _state(models)
    with edited(wd, cfg, edit):
        res = _smk(wd, check=False)  # a real run, not a dry run: Snakemake would delete outputs first
    err = res.stdout + res.stderr
    assert res.returncode != 0
    assert key in err and hint in err, err[-2000:]
    assert "Traceback" not in err
    assert _state(models) == before  # model.safetensors, model.json, history.csv: same bytes, same times


def test_network_check_names_every_bad_network_and_is_cached(tmp_path):
    cfg = validate_config(_small_config())
    check_networks(cfg, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("networks-ok-*"))) == 1  # the next call with this config skips the builds
    cfg["architectures"]["resnet"]["timm_name"] = "resnet10x"
    cfg["baselines"]["a1"]["channels"] = [6, 16, 32]  # schema would refuse it; the builder must too
    with pytest.raises(ConfigError) as exc:
        check_networks(cfg, cache_dir=tmp_path)
    assert "architectures.resnet.timm_name" in str(exc.value) and "resnet10t" in str(exc.value)
    assert len(list(tmp_path.glob("networks-ok-*"))) == 1  # a failed check is never cached


# ------------------------------------------------------------------------- 2. test-set queries and params
def test_query_typo_is_named_at_config_load(done):
    wd, cfg = done
    with edited(wd, cfg, lambda c: c["test_sets"]["kids_hpl"].update(query="high_prob_len")):
        res = _smk(wd, "-n", check=False)
    err = res.stdout + res.stderr
    assert res.returncode != 0
    assert "test_sets.kids_hpl.query" in err and "did you mean high_prob_lens" in err, err[-2000:]
    assert "UndefinedVariableError" not in err


def test_declared_columns_match_the_simulator():
    """The columns a query is checked against are the ones the simulator really writes (preset kids)."""
    from deepred.simulate import simulate_dataset

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        simulate_dataset("kids", 12, 1, Path(d) / "k", cutout=16)
        truth = pd.read_parquet(Path(d) / "k" / "truth.parquet")
    declared = source_columns({"kind": "simulate", "preset": "kids"})
    assert set(truth.columns) <= set(declared), set(truth.columns) - set(declared)


@pytest.mark.parametrize("edit, expected, pdf_test_sets", [
    # a query edit reruns that test set's metrics, figures, SHAP figures and qp PDF files, and the summaries on top
    (lambda c: c["test_sets"]["kids_hpl"].update(query="high_prob_lens and snr > 5"),
     {"metrics_test_set": 1, "figures_test_set": 1, "shap_figures": 1, "shap_table": 1, "nmad_table": 1, "tables": 1,
      "improvement_figure": 1, "runtime_table": 1, "all": 1}, 1),
    # a metrics option: every test set's metrics (and what reads them: the SHAP accuracy-vs-S/N intervals too), no
    # training, prediction or explanation
    (lambda c: c["metrics"].update(bootstrap_resamples=50),
     {"metrics_test_set": 3, "figures_test_set": 3, "shap_figures": 3, "shap_table": 1, "nmad_table": 2, "tables": 1,
      "improvement_figure": 1, "runtime_table": 1, "all": 1}, 0),
    # a figure option: the SHAP example grids only
    (lambda c: c["shap"].update(n_examples=4), {"shap_figures": 3, "runtime_table": 1, "all": 1}, 0),
    # the published R: the tables (and the figure that reads them) only
    (lambda c: c["metrics"]["paper_R"].update(des_deep=0.5),
     {"tables": 1, "improvement_figure": 1, "runtime_table": 1, "all": 1}, 0),
])
def test_config_edits_rerun_exactly_the_affected_jobs(done, edit, expected, pdf_test_sets):
    wd, cfg = done
    n_pdf = len(pdf_models(validate_config(json.loads(json.dumps(cfg)))))  # rules/pdfs.smk: one job per test set
    if pdf_test_sets and n_pdf:
        expected = {**expected, "pdfs_qp": pdf_test_sets}
    with edited(wd, cfg, edit):
        jobs = _jobs(_smk(wd, "-n"))
    assert jobs == expected


# ------------------------------------------------------------------------------------- 3. damaged shards
@pytest.fixture
def small_dataset(tmp_path) -> Path:
    cfg = tiny_config({"t": {"n": 120, "cutout": 24, "rows_per_shard": 40}}, data_dir=tmp_path)
    raw = make_tiny_raw(tmp_path / "raw" / "t", n=120, cutout=24)
    out = tmp_path / "processed" / "t"
    normalize(read_simulated(raw), "t", cfg["datasets"]["t"], out, seed=7, config=cfg)
    return out


def test_truncated_shard_is_named_by_readers_and_the_check(small_dataset):
    stats = json.loads((small_dataset / "stats.json").read_text())
    assert set(stats["shards"]) == {f"{k}_{i:05d}.npy" for k in ("images", "masks") for i in range(3)}
    shard = small_dataset / "shards" / "images_00001.npy"
    assert damaged_shards(small_dataset) == []
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size - 100)
    problems = damaged_shards(small_dataset)
    assert len(problems) == 1 and str(shard) in problems[0] and "truncated" in problems[0]
    assert f"snakemake -f {small_dataset / 'catalog.parquet'}" in problems[0]
    ds = ProcessedDataset(small_dataset)
    with pytest.raises(DataError, match=re.escape(str(shard))):
        ds.images(ds.catalog[ds.catalog["shard"] == 1])


def test_changed_shard_of_the_same_size_is_named(small_dataset):
    shard = small_dataset / "shards" / "images_00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: same size, other contents
    shard.write_bytes(bytes(data))
    assert damaged_shards(small_dataset) == []  # the DAG-time check is size-only (stat calls)
    ds = ProcessedDataset(small_dataset)
    with pytest.raises(DataError, match=re.escape(str(shard)) + ".*SHA-256"):
        ds.images(ds.catalog.iloc[:1])


def test_truncated_shard_stops_the_dry_run(done):
    wd, _ = done
    processed = wd / "data" / "processed" / "kids"
    stats = processed / "stats.json"
    saved = (stats.read_bytes(), stats.stat().st_mtime_ns)
    shard = processed / "shards" / "images_00000.npy"
    shard.write_bytes(b"short")
    stats.write_text(json.dumps({"shards": {"images_00000.npy": {"bytes": 4096, "sha256": "0" * 64}}}))
    try:
        res = _smk(wd, "-n", check=False)
    finally:
        stats.write_bytes(saved[0])
        os.utime(stats, ns=(saved[1], saved[1]))
        shard.unlink()
    err = res.stdout + res.stderr
    assert res.returncode != 0
    assert "data/processed/kids/shards/images_00000.npy: 5 bytes, stats.json records 4096" in err, err[-2000:]


# ----------------------------------------------------------------------- 4. raw band count vs metadata
def test_fewer_bands_than_the_metadata_lists(tmp_path):
    raw = make_tiny_raw(tmp_path / "raw", n=20, bands=("g", "r", "i"), cutout=16)
    meta = json.loads((raw / "meta.json").read_text())
    (raw / "meta.json").write_text(json.dumps(dict(meta, bands=["g", "r", "i", "z"])))
    with pytest.raises(DataError) as exc:
        read_simulated(raw)
    msg = str(exc.value)
    assert str(raw / "images.npy") in msg and str(raw / "meta.json") in msg and "4 bands" in msg


# ---------------------------------------------------------------- 5./6. deepred predict: ids, destinations
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset) -> Path:
    from deepred.training.train import train_model

    results = tmp_path_factory.mktemp("results")
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent, results_dir=results)
    cfg["training"]["epochs"] = 1
    train_model("netz", "tiny", cfg, tiny_dataset, results / "models" / "netz" / "tiny")
    return results


@pytest.mark.parametrize("ids, problem", [
    (["a", "b", "c"], "3 ids for the 5 cutouts"),
    (["a", "b", "c", "d", "e", "f"], "6 ids for the 5 cutouts"),
    (["a", "b", "c", "b", "e"], "1 duplicate id(s), e.g. b"),
])
def test_predict_ids_must_match_the_cube(trained, tmp_path, capsys, ids, problem):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "out.csv"
    rc = cli_main(["predict", "netz/tiny", str(noise_cube(tmp_path)), "--ids", str(ids_file), "-o", str(out),
                   "--results-dir", str(trained), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and f"deepred: error: {ids_file}: {problem}" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("make_dest, problem", [
    (lambda t: t / "a_file" / "out.csv", "a_file is not a directory"),
    (lambda t: t / "adir", "it is a directory"),
    (lambda t: Path("/sys/deepred-out.csv"), "Permission denied"),  # read-only even for root
])
def test_unwritable_destination_is_one_line(trained, tmp_path, capsys, make_dest, problem):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "adir").mkdir()
    dest = make_dest(tmp_path)
    rc = cli_main(["predict", "netz/tiny", str(noise_cube(tmp_path)), "-o", str(dest), "--format", "csv",
                   "--results-dir", str(trained), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"deepred: error: [Errno") and f"cannot write {dest}" in last and problem in last


# ----------------------------------------------------------------------------------- 7. umask and modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_outputs_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "t.txt", "x")
        with atomic_path(tmp_path / "m.bin") as tmp:
            tmp.write_bytes(b"y")
    finally:
        os.umask(old)
    for name in ("t.txt", "m.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode


# ------------------------------------------------------ 8./9. minimal configs, no baselines, module CLIs
def test_minimal_config_is_valid():
    cfg = validate_config({
        "datasets": {"d": {"source": {"kind": "simulate", "preset": "kids", "n_systems": 100}, "bands": ["g", "r"],
                           "cutout": 32, "label_column": "z_lens"}},
        "test_sets": {"d": {"dataset": "d", "table": "d"}},
    })
    assert cfg["ensemble"]["members"] == [] and cfg["shap"]["models"] == []


def test_disabled_model_in_a_list_is_named():
    cfg = _small_config()
    cfg["architectures"]["resnet"]["enabled"] = False
    cfg["baselines"]["a1"]["enabled"] = True
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    msg = str(exc.value)
    assert "'ensemble.members': 'resnet' is disabled" in msg and "'shap.models': 'resnet' is disabled" in msg


def test_no_baselines_still_makes_the_tables():
    nmad = pd.DataFrame({"test_set": ["t", "t"], "model": ["resnet", "ensemble_mean"], "n": [10, 10],
                         "family": ["deepred_backbone", "deepred_ensemble"], "nmad": [0.03, 0.04],
                         "best_baseline": [NO_BASELINE] * 2, "improvement": [np.nan] * 2,
                         "improvement_ci_lo": [np.nan] * 2, "improvement_ci_hi": [np.nan] * 2})
    table = improvement_table({"test_sets": {"t": {"dataset": "d"}}, "metrics": {"paper_R": {"t": 0.5}}}, nmad)
    row = table.iloc[0]
    assert row["best_deepred"] == "resnet" and row["best_baseline"] == NO_BASELINE and np.isnan(row["R"])


def test_no_baselines_config_plans_the_tables(tmp_path):
    wd = copy_workflow(REPO, tmp_path / "wf")
    cfg = _small_config()
    for b in cfg["baselines"].values():
        b["enabled"] = False
    (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    jobs = _jobs(_smk(wd, "-n"))
    assert jobs["tables"] == 1 and jobs["improvement_figure"] == 1 and "hogsvr" not in jobs


@pytest.mark.parametrize("module", [["deepred.fetch"], ["deepred.download"], ["deepred.cutouts", "fetch"]])
def test_module_cli_config_error_is_one_line(tmp_path, module):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": {}, "test_sets": {}, "tpyo": 1}))
    res = subprocess.run([sys.executable, "-m", *module, "--configfile", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "unknown key 'tpyo'" in res.stderr


# ------------------------------------------------------------------------ cases that already held
def test_config_typo_has_a_hint():
    cfg = _small_config()
    cfg["trainig"] = cfg.pop("training")
    with pytest.raises(ConfigError, match="'trainig' \\(did you mean 'training'\\?\\)"):
        validate_config(cfg)


def test_nan_pixels_name_the_file_and_object_and_write_nothing(tmp_path):
    raw = make_tiny_raw(tmp_path / "raw" / "t", n=80, cutout=24)
    images = np.load(raw / "images.npy")
    images[7, 2, 3, 3] = np.nan
    np.save(raw / "images.npy", images)
    cfg = tiny_config({"t": {"n": 80, "cutout": 24}}, data_dir=tmp_path)
    out = tmp_path / "processed" / "t"
    with pytest.raises(DataError, match=re.escape(str(raw / "images.npy")) + ": object obj00007: 1 non-finite"):
        normalize(read_simulated(raw), "t", cfg["datasets"]["t"], out, seed=7, config=cfg)
    assert not (out / "catalog.parquet").exists() and not (out / "shards").exists()


def test_corrupt_checkpoint_is_named(trained):
    from deepred.models.checkpoint import CheckpointError, load_trained

    model_dir = trained / "models" / "netz" / "tiny"
    copy = model_dir.parent / "tiny_corrupt"
    shutil.copytree(model_dir, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=re.escape(str(weights)) + ": SHA-256"):
        load_trained(copy)
