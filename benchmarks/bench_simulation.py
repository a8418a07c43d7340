"""Simulator throughput per preset, in cutouts per second per core (target: >= 150 for the 45x45x4 presets).

Usage: python benchmarks/bench_simulation.py [--n 1000] [--out results/benchmarks/simulation.json]
Runs single-threaded (one core); CPU time is the per-core figure, wall time is also reported.
The SED tables are built once before timing (as in a pipeline job they cost ~1 s per process).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepred.core.io import write_json  # noqa: E402
from deepred.simulate import draw_catalog, get_preset, presets, simulate_dataset  # noqa: E402

TARGET = 150.0
CUTOUTS = {"sdss": 64}


def bench(preset: str, n: int, workdir: Path) -> dict:
    p = get_preset(preset)
    bands = ["g", "r", "i", "z"] if p.population == "deepgravilens" else list(p.bands)
    cutout = CUTOUTS.get(preset, 45)
    draw_catalog(preset, 16, 0, bands)  # warm the magnitude tables
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    simulate_dataset(preset, n, 20260211, workdir / preset, bands, cutout)
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    row = {
        "preset": preset, "n": n, "bands": bands, "cutout": cutout,
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "cutouts_per_s_per_core": round(n / cpu, 1), "cutouts_per_s_wall": round(n / wall, 1),
    }
    if p.population == "deepgravilens":
        row["meets_target"] = bool(n / cpu >= TARGET)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="systems per preset")
    ap.add_argument("--presets", nargs="*", default=sorted(presets()), help="presets to time")
    ap.add_argument("--out", default="results/benchmarks/simulation.json", help="JSON output")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(name, args.n, Path(tmp)) for name in args.presets]
    result = {
        "benchmark": "simulation", "target_cutouts_per_s_per_core_45x45x4": TARGET,
        "machine": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
        "results": rows,
    }
    write_json(args.out, result)
    import json

    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
