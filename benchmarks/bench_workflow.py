"""Benchmark the whole DAG: wall time of a full run, each job's time, and a no-op rerun.

Targets: the default config's whole DAG within 30 minutes on a 2-core CPU (issue 3); a no-op rerun of the
default target in under 5 seconds running no job (issue 2). Per-job times come from the rules' `benchmark:`
files under results/benchmarks/. Output: results/benchmarks/workflow.json.

    python benchmarks/bench_workflow.py [--configfile config.yaml] [--cores 2] [--skip-full] [-- --keep-going]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def snakemake(args: list[str], log: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, stdout=fh,
                              stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - t0
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed (exit {proc.returncode}); see {log}")
    return elapsed, text


def job_times(results: Path) -> dict[str, float]:
    out = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            out[str(tsv.relative_to(results / "benchmarks").with_suffix(""))] = float(rows[-1]["s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default=None, help="config to run (default: config.yaml)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--skip-full", action="store_true", help="only time the no-op rerun of a finished DAG")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "workflow.json"))
    ap.add_argument("snakemake_args", nargs="*", help="passed on to snakemake (after --), e.g. --keep-going")
    args = ap.parse_args()
    base = ["--cores", str(args.cores), "--profile", "profiles/default"]
    if args.configfile:
        base += ["--configfile", args.configfile]
    base += args.snakemake_args
    logdir = ROOT / "logs" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"cores": args.cores, "configfile": args.configfile or "config.yaml"}
    if not args.skip_full:
        wall, _ = snakemake(base, logdir / "full.log")
        result["full_run_wall_s"] = round(wall, 1)
        result["full_run_target_s"] = 1800
    noop, text = snakemake(base, logdir / "noop.log")
    result["noop_rerun_wall_s"] = round(noop, 2)
    result["noop_ran_no_job"] = "Nothing to be done" in text
    result["noop_target_s"] = 5
    result["job_seconds"] = job_times(ROOT / "results")
    result["sum_job_seconds"] = round(sum(result["job_seconds"].values()), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "job_seconds"}, indent=2))


if __name__ == "__main__":
    main()
