"""The GPU check (benchmarks/bench_gpu.py): without CUDA it skips with one line and a JSON saying so; its
--device cpu --smoke mode runs every section's real code path at toy sizes and writes the JSON a GPU run writes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "benchmarks" / "bench_gpu.py")
CI = str(ROOT / "config" / "ci.yaml")


def test_smoke_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, SCRIPT, "--device", "cpu", "--smoke", "--config", CI, "--dataset", "kids", "--model",
           "netz", "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    rec = json.loads(out.read_text())
    assert rec["finished"] and rec["smoke"] and rec["environment"]["device"] == "cpu"
    # every enabled network of the config, at each distinct input shape of its datasets
    assert set(rec["networks"]) == {"resnet", "mixer", "netz", "hybrid_mixer"}  # not the hybrid's controls
    for shapes in rec["networks"].values():
        assert list(shapes) == ["4x32"] and shapes["4x32"]["train_images_per_s"] > 0
    workers = rec["loader"]["workers"]
    assert set(workers) == {"0", "1"}  # ci.yaml's num_workers 0, and one worker process
    for w in workers.values():
        assert w["images_per_s"] > 0 and set(w["over_training"]) == {"resnet/4x32", "mixer/4x32", "netz/4x32",
                                                                                   "hybrid_mixer/4x32"}
    e2e = rec["end_to_end"]
    assert e2e["model"] == "netz" and e2e["dataset_rows"]["test"] > 0
    assert set(e2e["runs"]) == {"cpu_fp32", "cpu_amp"}
    for run in e2e["runs"].values():
        assert run["epochs_run"] == 2 and 0 < run["test_nmad"] < 1
    # on the CPU the trainer ignores AMP: both runs are the same deterministic computation, to the bit
    checks = e2e["checks"]
    assert checks["cpu_amp_vs_cpu_fp32"]["max"] == 0.0 and checks["same_weights_device_vs_cpu"]["max"] == 0.0
    assert checks["all_ok"]


def _bench_gpu():
    """The script as a module, for the answers that come before any work (no subprocess: no second torch import)."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the check would run")
def test_without_cuda_it_skips_with_one_line(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    _bench_gpu().main(["--out", str(out)])
    assert capsys.readouterr().out.startswith("no CUDA device: skipped")
    assert "no CUDA device" in json.loads(out.read_text())["skipped"]


def test_cpu_needs_smoke(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench_gpu().main(["--device", "cpu", "--out", str(tmp_path / "x.json")])
    assert exc.value.code != 0 and "--device cpu runs only with --smoke" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
