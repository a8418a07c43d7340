"""The conda environment for cluster users pins exactly what pyproject.toml pins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_conda_env_matches_pyproject_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "deepred.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(deps) == sorted(p for p in pip if "==" in p)


def test_lock_file_agrees_with_pyproject_pins():
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, ver = line.split("==")
            lock[name.lower().replace("_", "-")] = ver.strip()
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, ver = dep.split("==")
        assert lock.get(name.lower().replace("_", "-")) == ver, f"{dep} differs from requirements.lock"
