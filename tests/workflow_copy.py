"""A small copy of the workflow, finished as far as Snakemake knows: the fixture of the bad-input tests.

Every output of a two-dataset config exists (placeholder bytes) and is up to date, so a dry run shows exactly
which jobs an edit would rerun, and a test can check that nothing finished was lost.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from deepred.workflow.slurm import copy_workflow

REPO = Path(__file__).resolve().parent.parent


def _small_config() -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["datasets"] = {k: cfg["datasets"][k] for k in ("des_deep", "kids")}
    cfg["test_sets"] = {k: cfg["test_sets"][k] for k in ("des_deep", "kids_general", "kids_hpl")}
    cfg["architectures"] = {"resnet": cfg["architectures"]["resnet"]}
    cfg["ensemble"]["members"] = ["resnet"]
    for name, b in cfg["baselines"].items():
        b["enabled"] = name in ("a1", "hogsvr")
    cfg["shap"]["models"] = ["resnet"]
    cfg["metrics"]["transfer_models"] = []
    return cfg


def _smk(wd: Path, *args, check=True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "cfg.yaml", "--cores", "1", *args],
                         cwd=wd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _jobs(res: subprocess.CompletedProcess) -> dict[str, int]:
    out = res.stdout + res.stderr
    if "Nothing to be done" in out:
        return {}
    block = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def finished_copy(folder: Path) -> tuple[Path, dict]:
    """(workdir, config): every output of the small config exists and is up to date for Snakemake."""
    wd = copy_workflow(REPO, folder)
    cfg = _small_config()
    (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    for line in _smk(wd, "--summary").stdout.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 5:
            continue
        p = wd / parts[0]
        if p.name == "shards":
            p.mkdir(parents=True, exist_ok=True)
        else:  # non-empty: a deletion or rewrite shows in the bytes; stats.json must be JSON (damaged_shards)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"{}" if p.name == "stats.json" else b"x")
    _smk(wd, "--touch")
    assert "Nothing to be done" in (_smk(wd, "-n").stdout + _smk(wd, "-n").stderr)
    return wd, cfg


@contextlib.contextmanager
def edited(wd: Path, cfg: dict, edit):
    """cfg.yaml with `edit(config)` applied, restored afterwards."""
    changed = json.loads(json.dumps(cfg))
    edit(changed)
    (wd / "cfg.yaml").write_text(yaml.safe_dump(changed))
    try:
        yield
    finally:
        (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))


def _state(folder: Path) -> dict:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


