"""Benchmark the whole DAG: wall time of a full run, job time and CPU per rule, the scheduler's CPU, a no-op rerun.

Targets: the default config's whole DAG within 30 minutes on a 2-core CPU; the scheduler (Snakemake's own
process) under 3% of the jobs' CPU; a no-op rerun of the default target in under 2 seconds running no job
(issue 30). Per-rule figures come from the jobs' own usage records (results/benchmarks/<rule>/..., summed in
results/tables/runtime.csv), the scheduler's from results/benchmarks/scheduler.tsv (deepred.results.runtime).
Output: results/benchmarks/workflow.json.

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


def scheduler_share(results: Path) -> dict:
    """Per-rule jobs/wall/CPU of the runtime table, and the newest scheduler record against the jobs' CPU."""
    from deepred.results.runtime import last_scheduler_record

    table = results / "tables" / "runtime.csv"
    if not table.is_file():
        return {}
    with open(table) as fh:
        rows = {r["rule"]: r for r in csv.DictReader(fh)}
    out = {"per_rule": {k: {c: float(r[c]) for c in ("jobs", "wall_s", "cpu_s")} for k, r in rows.items()}}
    record = last_scheduler_record(results / "benchmarks")
    if record and "total (jobs)" in rows:
        cpu = float(record["cpu_s"])
        out.update(scheduler_cpu_s=cpu, jobs_cpu_s=float(rows["total (jobs)"]["cpu_s"]),
                   scheduler_share=round(cpu / float(rows["total (jobs)"]["cpu_s"]), 4), scheduler_target_share=0.03)
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
    result["noop_target_s"] = 2
    result["job_seconds"] = job_times(ROOT / "results")
    result["sum_job_seconds"] = round(sum(result["job_seconds"].values()), 1)
    result.update(scheduler_share(ROOT / "results"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "job_seconds"}, indent=2))


if __name__ == "__main__":
    main()
