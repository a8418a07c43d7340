"""The configuration is validated before anything runs: typos, wrong types and bad values stop it clearly."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepred.contracts.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_fill(default_config):
    cfg = validate_config(copy.deepcopy(default_config))
    assert set(cfg["datasets"]) == {"des_deep", "des_wide", "desi_dot", "lsst_wide", "kids", "sdss"}
    assert len(cfg["test_sets"]) == 7


def test_every_key_of_config_yaml_has_a_comment():
    for n, line in enumerate((ROOT / "config.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if stripped.endswith(":"):
            continue  # a mapping header: its children carry the comments
        assert "#" in line, f"config.yaml line {n} has no comment: {line!r}"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(trainig={}), "unknown key 'trainig' (did you mean 'training'?)"),
        (lambda c: c["datasets"]["des_deep"].update(cutuot=45), "'cutuot' (did you mean 'cutout'?)"),
        (lambda c: c["datasets"]["des_deep"].update(cutout="45"), "config key 'datasets.des_deep.cutout': '45' is not of type 'integer'"),
        (lambda c: c["datasets"]["kids"].update(cutout=2), "config key 'datasets.kids.cutout': 2 is less than the minimum of 8"),
        (lambda c: c["datasets"]["sdss"].update(scaling="log"), "config key 'datasets.sdss.scaling': 'log' is not one of"),
        (lambda c: c["datasets"]["sdss"]["source"].update(preset="sdsss"), "'datasets.sdss.source.preset': 'sdsss' is not one of"),
        (lambda c: c["datasets"]["sdss"].update(splits={"train": 0.8, "val": 0.15, "test": 0.15}), "fractions sum to 1.1"),
        (lambda c: c["test_sets"]["sdss"].update(dataset="sdds"), "unknown dataset 'sdds'"),
        (lambda c: c.update(seed=-1), "config key 'seed': -1 is less than the minimum of 0"),
        (lambda c: c["ensemble"].update(cv_folds=1), "config key 'ensemble.cv_folds': 1 fold is no cross-validation"),
        (lambda c: c.update(scale_study={"datasets": ["sdss"], "models": ["resnte"], "train_systems": [100, 1000]}),
         "config key 'scale_study.models': 'resnte' is not an enabled network or the enabled photometric baseline "
         "(did you mean 'resnet'?)"),
        (lambda c: c.update(scale_study={"datasets": ["sdss"], "models": ["resnet"], "train_systems": [1000]}),
         "config key 'scale_study.train_systems': [1000] is too short"),
    ],
)
def test_bad_config_names_the_key(default_config, mutate, message):
    cfg = copy.deepcopy(default_config)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)


def test_unreadable_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: not valid YAML"):
        load_config(bad)


def test_snakemake_stops_before_any_job_on_a_typo(tmp_path, default_config):
    cfg = copy.deepcopy(default_config)
    cfg["trainig"] = {}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    assert "unknown key 'trainig' (did you mean 'training'?)" in out.stdout + out.stderr
