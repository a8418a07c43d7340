"""Where the run's time goes: the runtime table, from the rules' benchmark files and the scheduler's own record.

Every job of a rule with a `benchmark:` directive writes `results/benchmarks/<rule>/<wildcards>.tsv`
(Snakemake's benchmark format: `s` wall seconds, `cpu_time` user + system CPU seconds, `max_rss` MB, ...).
`runtime_table` sums them per rule: jobs, wall, CPU, the largest resident memory, and each rule's share of
the DAG's job wall time and CPU, so a user sees where the time goes and can size cluster resources
(`threads`, `mem_mb`, `runtime`). Files of jobs the current config no longer has (a model disabled since) are
left out: each wildcard part must name a dataset, test set or model of the config.

The scheduler (Snakemake's own process) cannot measure itself from inside a job; the Snakefile's `onsuccess`
appends its CPU to `results/benchmarks/scheduler.tsv` (`record_scheduler`), and the table carries the last
finished invocation's figures as its `snakemake (scheduler)` row.
"""

from __future__ import annotations

import csv
import os
import re
import resource
import time
from pathlib import Path

import pandas as pd

from deepred.core.model_names import enabled_networks

ONE_JOB = "all"  # the benchmark file name of a rule with a single job (results/benchmarks/tables/all.tsv)
SCHEDULER_FILE = "scheduler.tsv"
SCHEDULER_ROW = "snakemake (scheduler)"
_SCALE_POINT = re.compile(r"^n\d+$")  # the scale study's training-set sizes (results/benchmarks/scale_study/...)


def known_names(config: dict) -> set[str]:
    """Names a benchmark file's wildcard parts may hold under this config: its datasets, test sets, and the
    networks and baselines it enables."""
    baselines = {name for name, b in config["baselines"].items() if b.get("enabled")}
    tables = {spec["table"] for spec in config["test_sets"].values()}
    return ({ONE_JOB} | set(config["datasets"]) | set(config["test_sets"]) | tables | set(enabled_networks(config))
            | baselines)


def _current(parts: tuple[str, ...], known: set[str]) -> bool:
    return all(all(p in known or _SCALE_POINT.match(p) for p in part.split("__")) for part in parts)


def read_benchmarks(root: str | Path, known: set[str] | None = None) -> pd.DataFrame:
    """One row per job: rule, job (its wildcards), wall_s, cpu_s, max_rss_mb; with `known`, only the files of the
    config's current jobs (`known_names`), else every file (benchmarks/bench_workflow.py, any checkout)."""
    rows = []
    for tsv in sorted(Path(root).rglob("*.tsv")):
        rule, *parts = tsv.relative_to(root).with_suffix("").parts
        if not parts or (known is not None and not _current(tuple(parts), known)):
            continue
        with open(tsv) as fh:
            last = list(csv.DictReader(fh, delimiter="\t"))[-1:]  # one line per run of the job; the newest
        for r in last:
            rows.append({"rule": rule, "job": "/".join(parts), "wall_s": float(r["s"]),
                         "cpu_s": float(r.get("cpu_time") or "nan"), "max_rss_mb": float(r.get("max_rss") or "nan")})
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "cpu_s", "max_rss_mb"])


def runtime_table(jobs: pd.DataFrame, scheduler: dict | None = None) -> pd.DataFrame:
    """Per rule: jobs, wall and CPU seconds (sums), max RSS, shares of the DAG's job wall time and CPU; a total
    row, and the scheduler's own CPU (its share relative to the jobs' CPU) when it is known."""
    per = jobs.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"),
                                   max_rss_mb=("max_rss_mb", "max")).reset_index()
    total_wall, total_cpu = float(per["wall_s"].sum()), float(per["cpu_s"].sum())
    per["wall_share"] = per["wall_s"] / total_wall if total_wall else 0.0
    per["cpu_share"] = per["cpu_s"] / total_cpu if total_cpu else 0.0
    per = per.sort_values("wall_s", ascending=False, kind="stable")
    total = {"rule": "total (jobs)", "jobs": int(per["jobs"].sum()), "wall_s": total_wall, "cpu_s": total_cpu,
             "max_rss_mb": float(per["max_rss_mb"].max()) if len(per) else float("nan"), "wall_share": 1.0,
             "cpu_share": 1.0}
    rows = [per, pd.DataFrame([total])]
    if scheduler:
        cpu = float(scheduler["cpu_s"])
        share = cpu / total_cpu if total_cpu else float("nan")
        rows.append(pd.DataFrame([{"rule": SCHEDULER_ROW, "jobs": int(scheduler.get("jobs", 0)),
                                   "wall_s": float(scheduler["wall_s"]), "cpu_s": cpu, "max_rss_mb": float("nan"),
                                   "wall_share": float("nan"), "cpu_share": share}]))
    return pd.concat(rows, ignore_index=True)


def last_scheduler_record(root: str | Path) -> dict | None:
    """The newest line of results/benchmarks/scheduler.tsv (None before any finished invocation)."""
    path = Path(root) / SCHEDULER_FILE
    if not path.is_file():
        return None
    with open(path) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return rows[-1] if rows else None


def record_scheduler(root: str | Path, started: float, jobs: int) -> dict:
    """Append this (finishing) process's own CPU to results/benchmarks/scheduler.tsv; called by `onsuccess`."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    row = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": jobs, "wall_s": round(time.time() - started, 3),
           "cpu_s": round(own.ru_utime + own.ru_stime, 3), "max_rss_mb": round(own.ru_maxrss / 1024, 1)}
    path = Path(root) / SCHEDULER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with open(path, "a") as fh:
        if new:
            fh.write("\t".join(row) + "\n")
        fh.write("\t".join(str(v) for v in row.values()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return row
