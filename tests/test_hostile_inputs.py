"""Hostile input, second round (issue 27): what a config, a model file or a command-line path can do.

Each test asserts the one-line message (file or key, and the problem) and that nothing finished was lost (the
bytes and mtimes of the outputs before and after).
"""

from __future__ import annotations

import copy
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from own_cutouts import noise_cube, train_tiny
from workflow_copy import _smk, _state, edited, finished_copy

from deepred.cli import main as cli_main
from deepred.contracts.config import ConfigError, load_config, validate_config
from deepred.contracts.query import query_structure_problem, run_query
from deepred.contracts.weights import safetensors_problem

REPO = Path(__file__).resolve().parent.parent
HOSTILE = "high_prob_lens or @Path('pwned').touch()"


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    return finished_copy(tmp_path_factory.mktemp("wf"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset) -> Path:
    return train_tiny(tmp_path_factory.mktemp("results"), tiny_dataset, models=("netz",), epochs=1)


def _ci() -> dict:
    return yaml.safe_load((REPO / "config" / "ci.yaml").read_text())


# ------------------------------------------------------------------------- a query is data, never code
@pytest.mark.parametrize("query, problem", [
    (HOSTILE, "'@' (a reference to program variables) is not allowed"),
    ("__import__('os').system('touch pwned')", "call"),
    ("snr.clip(0) > 1", "call"),
    ("`snr` > 1", "backquoted names are not allowed"),
])
def test_a_query_that_is_code_is_refused_before_evaluation(query, problem):
    assert problem in query_structure_problem(query)
    with pytest.raises(ValueError, match="not allowed"):
        run_query(__import__("pandas").DataFrame({"snr": [1.0]}), query)


def test_plain_queries_still_work():
    import pandas as pd

    frame = pd.DataFrame({"snr": [1.0, 9.0], "obj_class": ["lens", "galaxy"], "high_prob_lens": [True, False]})
    assert list(run_query(frame, "snr > 5 and obj_class in ['galaxy']").index) == [1]
    assert list(run_query(frame, "~high_prob_lens | (snr < 2)").index) == [0, 1]
    assert query_structure_problem("name == 'a@b'") is None  # '@' inside a string is data


def test_hostile_query_runs_nothing_in_a_dry_run(done):
    wd, cfg = done
    before = _state(wd / "results")
    with edited(wd, cfg, lambda c: c["test_sets"]["kids_hpl"].update(query=HOSTILE)):
        res = _smk(wd, "-n", check=False)
    err = res.stdout + res.stderr
    assert res.returncode != 0 and "test_sets.kids_hpl.query" in err and "'@'" in err
    assert not (wd / "pwned").exists() and _state(wd / "results") == before


def test_hostile_query_runs_nothing_in_deepred_info(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _ci()
    cfg["test_sets"]["kids_hpl"]["query"] = HOSTILE
    (tmp_path / "hostile.yaml").write_text(yaml.safe_dump(cfg))
    rc = cli_main(["info", "resnet/kids", "--config", "hostile.yaml"])
    err = capsys.readouterr().err
    assert rc != 0 and "test_sets.kids_hpl.query" in err and "Traceback" not in err
    assert not (tmp_path / "pwned").exists()


# -------------------------------------------------------------- model files verified before any deletion
def test_corrupt_local_weights_stop_the_dry_run_and_keep_the_model(done, tmp_path):
    wd, cfg = done
    bad = tmp_path / "resnet.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    before = _state(wd / "results")
    with edited(wd, cfg, lambda c: c["architectures"]["resnet"].update(weights=str(bad))):
        res = _smk(wd, "-n", check=False)
    err = res.stdout + res.stderr
    assert res.returncode != 0 and "architectures.resnet.weights" in err and str(bad) in err
    assert "not a safetensors file" in err and _state(wd / "results") == before


def test_safetensors_header_check_finds_truncation(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(path))
    assert safetensors_problem(path) is None
    path.write_bytes(path.read_bytes()[:-5])
    assert "truncated" in safetensors_problem(path)


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o022, 0o644)])
def test_weights_and_resume_checkpoints_get_the_umask_mode(tmp_path, umask, mode):
    import torch

    from deepred.models.checkpoint import save_checkpoint

    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "last.safetensors", {"w": torch.zeros(2)}, {"state": {}})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "last.safetensors").stat().st_mode) == mode


# ------------------------------------------------------------------------ deepred predict's own paths
def test_a_blank_line_inside_the_ids_file_is_refused(trained, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n\nc\nd\ne\n\n")
    out = tmp_path / "out.csv"
    rc = cli_main(["predict", "netz/tiny", str(noise_cube(tmp_path)), "--ids", str(ids), "-o", str(out),
                   "--results-dir", str(trained), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and f"{ids}: line 3 is blank" in err and not out.exists()


@pytest.mark.parametrize("target", ["input", "card", "weights"])
def test_output_onto_a_file_the_command_reads_is_refused(trained, tmp_path, capsys, target):
    cube = noise_cube(tmp_path)
    model = trained / "models" / "netz" / "tiny"
    dest = {"input": cube, "card": model / "model.json", "weights": model / "model.safetensors"}[target]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (cube, model / "model.json")}
    rc = cli_main(["predict", "netz/tiny", str(cube), "-o", str(dest), "--format", "csv",
                   "--results-dir", str(trained), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and f"-o {dest}: that is" in err and "which this command reads" in err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before


@pytest.mark.parametrize("content, problem", [
    (b"\x00\xff\xfe binary", "not a text file"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_deepred_info_on_a_broken_card_is_one_line(trained, tmp_path, capsys, content, problem):
    import shutil

    folder = tmp_path / "models" / "netz" / "tiny"
    shutil.copytree(trained / "models" / "netz" / "tiny", folder)
    (folder / "model.json").write_bytes(content)
    rc = cli_main(["info", str(folder)])
    err = capsys.readouterr().err
    assert rc != 0 and problem in err and "Traceback" not in err


# --------------------------------------------------------------------------- config values, at load
@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(results_dir=""), "config key 'results_dir': empty"),
    (lambda c: c.update(data_dir="$DEEPRED_UNSET_VAR/x"), "$DEEPRED_UNSET_VAR is not set"),
    (lambda c: c.update(data_dir="/"), "the filesystem root"),
    (lambda c: c["architectures"].update(truth=copy.deepcopy(c["architectures"]["resnet"])),
     "'truth' is reserved"),
    (lambda c: c["architectures"].update(netz=copy.deepcopy(c["architectures"]["resnet"])), "'netz' is reserved"),
])
def test_config_values_that_name_paths_or_models_are_checked(edit, message):
    cfg = _ci()
    edit(cfg)
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    assert message in str(exc.value)


def test_home_and_variables_are_expanded_not_taken_literally(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    cfg = _ci()
    cfg.update(data_dir="$HOME/deepred-data", results_dir="~/deepred-results")
    validate_config(cfg)
    assert (cfg["data_dir"], cfg["results_dir"]) == ("/home/someone/deepred-data", "/home/someone/deepred-results")


def test_a_validation_split_too_small_to_calibrate_is_refused_at_load():
    cfg = _ci()
    cfg["datasets"]["kids"]["source"]["n_systems"] = 40
    with pytest.raises(ConfigError, match=r"datasets.kids.splits.val': 0.2 of 40 systems is about 8; the val split "
                                          r"needs at least 10"):
        validate_config(cfg)


def test_every_model_disabled_is_refused_at_load():
    cfg = {"datasets": _ci()["datasets"], "test_sets": _ci()["test_sets"],
           "architectures": {}, "baselines": {b: {"enabled": False} for b in
                                              ("photoz", "netz", "a1", "a3", "hogsvr", "photometry")}}
    with pytest.raises(ConfigError, match="every model is disabled"):
        validate_config(cfg)


def test_duplicate_keys_name_the_file_and_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text((REPO / "config" / "ci.yaml").read_text() + "\nseed: 8\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+:1: duplicate key 'seed' \(first on line 6"):
        load_config(path)


def test_duplicate_keys_stop_snakemake_naming_the_file(done):
    wd, cfg = done
    text = (wd / "cfg.yaml").read_text()
    before = _state(wd / "results")
    try:
        (wd / "cfg.yaml").write_text(text + "\nseed: 99\n")
        res = _smk(wd, "-n", check=False)
    finally:
        (wd / "cfg.yaml").write_text(text)
    err = res.stdout + res.stderr
    assert res.returncode != 0 and "cfg.yaml:" in err and "duplicate key 'seed'" in err
    assert _state(wd / "results") == before


def test_a_tab_in_the_config_names_the_file_and_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 1\ndatasets:\n\tkids: {}\n")
    with pytest.raises(ConfigError, match=rf"{path}:3:1: .*tab"):
        load_config(path)


def test_python_m_fetch_names_the_duplicate(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 1\nseed: 2\ndatasets: {}\ntest_sets: {}\n")
    res = subprocess.run([sys.executable, "-m", "deepred.fetch", "--configfile", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0 and f"{path}:2:1: duplicate key 'seed'" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------- values that pass the schema but fail in a later job
def test_a_band_the_preset_lacks_stops_the_dry_run_and_keeps_the_raw_data(done):
    wd, cfg = done
    before = _state(wd / "data")
    with edited(wd, cfg, lambda c: c["datasets"]["kids"].update(bands=["u", "g", "r", "z"])):
        res = _smk(wd, "-n", check=False)
    err = res.stdout + res.stderr
    assert res.returncode != 0 and "datasets.kids.bands" in err and "preset 'kids' has no band z" in err
    assert _state(wd / "data") == before


def test_a_label_column_the_source_does_not_write_is_named_at_load():
    cfg = _ci()
    cfg["datasets"]["kids"]["label_column"] = "z_len"
    with pytest.raises(ConfigError, match=r"datasets.kids.label_column': 'z_len' is not a column of the simulate "
                                          r"source \(did you mean 'z_lens'\?\)"):
        validate_config(cfg)


# ------------------------------------------------------------------ images that are not images
@pytest.mark.parametrize("fill, reason", [
    (0.0, "band(s) g blank (every pixel 0)"),
    (3.5, "band(s) g constant"),
    (1e30, "|pixel| above 1e+07 in band(s) g (1e+30)"),
])
def test_blank_constant_or_absurd_bands_are_refused(fill, reason):
    from deepred.contracts.pixels import pixel_problem

    image = np.random.default_rng(0).normal(size=(2, 8, 8))
    assert pixel_problem(image, ["g", "r"]) is None
    image[0] = fill if fill != 1e30 else image[0]
    if fill == 1e30:
        image[0, 3, 3] = fill
    assert reason in pixel_problem(image, ["g", "r"])


def test_zero_filled_pixels_at_the_centre_are_no_data():
    from deepred.contracts.pixels import pixel_problem

    image = np.random.default_rng(1).normal(size=(2, 16, 16))
    image[1, :, 6:9] = 0.0  # a coadd gap across the object
    assert "band(s) r exactly 0 in the central 5x5 px" in pixel_problem(image, ["g", "r"])
    image[1, :, 6:9] = 1.0
    image[1, 0, 0] = 0.0  # a zero in a corner is a pixel like any other
    assert pixel_problem(image, ["g", "r"]) is None


def test_normalization_refuses_a_blank_band_naming_the_object(tmp_path):
    from deepred.contracts.processed import DataError
    from deepred.data.normalize import normalize
    from deepred.data.sources import open_source
    from deepred.simulate import simulate_dataset

    cfg = _ci()
    cfg["datasets"]["kids"]["source"]["n_systems"] = 60
    validate_config(cfg)
    raw = tmp_path / "raw" / "kids"
    simulate_dataset("kids", 60, 7, raw, bands=["u", "g", "r", "i"], cutout=32)
    images = np.load(raw / "images.npy", mmap_mode="r+")
    images[3, 1] = 0.0  # a survey's zero-filled plane
    images.flush()
    cfg["data_dir"] = str(tmp_path)
    with pytest.raises(DataError, match=r"object \S+: band\(s\) g blank \(every pixel 0\)"):
        normalize(open_source(cfg, "kids"), "kids", cfg["datasets"]["kids"], tmp_path / "out", seed=7, config=cfg)
    cfg["datasets"]["kids"]["on_bad"] = "skip"
    stats = normalize(open_source(cfg, "kids"), "kids", cfg["datasets"]["kids"], tmp_path / "out", seed=7, config=cfg)
    import pandas as pd

    rejects = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert stats["n_rejected"] == 1 and "blank" in rejects["reason"].iloc[0]


def test_predict_rejects_a_blank_cutout_instead_of_predicting_it(trained, tmp_path, capsys):
    cube = noise_cube(tmp_path, n=3)
    data = np.load(cube)
    data[1] = 0.0
    data[2, 0, 5, 5] = 1e30
    np.save(cube, data)
    out = tmp_path / "z.csv"
    rc = cli_main(["predict", "netz/tiny", str(cube), "-o", str(out), "--format", "csv",
                   "--results-dir", str(trained), "--no-progress"])
    assert rc == 0
    import pandas as pd

    assert list(pd.read_csv(out)["object_id"].astype(str)) == ["0"]
    rejects = pd.read_csv(out.with_name("z.rejects.csv"))
    assert "blank" in rejects["reason"].iloc[0] and "|pixel| above" in rejects["reason"].iloc[1]


def test_a_tab_in_config_yaml_stops_snakemake_naming_the_file_and_line(tmp_path):
    from deepred.workflow.slurm import copy_workflow

    wd = copy_workflow(REPO, tmp_path / "wf")
    text = (wd / "config.yaml").read_text().splitlines()
    line = next(i for i, s in enumerate(text) if s.startswith("  des_deep:"))
    text[line] = "\t" + text[line].lstrip()
    (wd / "config.yaml").write_text("\n".join(text) + "\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=wd, capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    err = res.stdout + res.stderr
    assert res.returncode != 0 and f"config.yaml:{line + 1}:1:" in err and "not tabs" in err, err[-1500:]
