"""Every file kind the DAG writes gets the mode the user's umask gives (weights and checkpoints included)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deepred.workflow.slurm import copy_workflow

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.workflow
@pytest.mark.parametrize("umask", [0o027, 0o022])
def test_every_output_file_gets_the_umask_mode(tmp_path, umask):
    wd = copy_workflow(REPO, tmp_path / "wf")
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/ci.yaml"],
                         cwd=wd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                         preexec_fn=lambda: os.umask(umask))
    assert res.returncode == 0, res.stderr[-3000:]
    files = [p for root in ("data/ci", "results/ci", "logs") for p in (wd / root).rglob("*")
             if p.is_file() and not p.is_symlink()]
    kinds = {p.suffix for p in files}
    assert {".safetensors", ".parquet", ".npy", ".json", ".csv", ".png", ".pdf", ".hdf5", ".tsv"} <= kinds, kinds
    wrong = sorted(f"{p.relative_to(wd)}: {oct(stat.S_IMODE(p.stat().st_mode))}" for p in files
                   if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~umask)
    assert wrong == [], wrong[:20]
