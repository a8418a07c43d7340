"""Benchmark the whole DAG against a baseline commit, both measured in this one run of the benchmark.

Issue 30's targets: the default `make run` within 30 minutes on a quiet 2-core machine; Snakemake's own process
under 3% of the jobs' CPU; a no-op rerun under 2 s; `results/tables/kids_nmad.csv` planning no other dataset's
job, and its SLURM run submitting at least 4x fewer jobs. Each side (the baseline commit, default: the tree
the issue measured, and HEAD) is checked out with `git worktree` into a fresh folder and run with this
checkout's virtual environment (PYTHONPATH points at the side's own `deepred`). Per side:

- plan: `snakemake -n --profile slurm results/tables/kids_nmad.csv` on the default config: jobs, datasets,
  SLURM submissions it would make (group jobs + ungrouped jobs of rules that are not local);
- slurm (`--slurm`, needs scripts/slurm_local_up.sh): that literal command run through the real cluster, on
  config/ci.yaml with a second dataset added (as tests/workflow/test_slurm_cluster.py does): sbatch
  submissions counted from Snakemake's report, wall time;
- full (unless `--skip-full`): the default `make run` command (`snakemake --cores 2 --profile profiles/default`)
  from empty data and results: wall, the jobs' CPU per rule from their usage files (results/benchmarks/<rule>/),
  Snakemake's own CPU (benchmarks/snakemake_usage.py), then the no-op rerun (median of 3).

Figures are written per side with HEAD / baseline ratios, and every test NMAD of HEAD's run against the
baseline's value and its 95% bootstrap interval (issue 30: none may move outside it unless it improves). The
full runs go one after the other; run it on a quiet machine (the JSON keeps the load average at the start
and end of each run).
Output: results/benchmarks/workflow.json (`--out`).

    python benchmarks/bench_workflow.py [--baseline REF] [--slurm] [--skip-full] [--keep] [--cores 2]
    python benchmarks/bench_workflow.py --compare WORKDIR   # re-derive the summary of an earlier --keep run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from deepred.results.runtime import read_benchmarks

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "2622b91"  # the tree issue 30 measured: 134 planned jobs for kids_nmad.csv, make run 39 min 42 s
TABLE = "tables/kids_nmad.csv"  # the README's literal command's target, under the config's results_dir
USAGE = Path(__file__).resolve().parent / "snakemake_usage.py"


def checkout(ref: str, dest: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(dest), ref], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return dest


def snakemake(tree: Path, args: list[str], log: Path, usage: Path | None = None,
              env: dict | None = None) -> tuple[float, str]:
    """Run Snakemake in a side's tree (its own deepred first on the path); exit on failure."""
    cmd = [sys.executable, str(USAGE), str(usage), "--"] if usage else [sys.executable, "-m", "snakemake"]
    full_env = {**os.environ, "PYTHONPATH": str(tree), **(env or {})}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([*cmd, *args], cwd=tree, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} in {tree} failed (exit {proc.returncode}); see {log}")
    return elapsed, log.read_text()


def local_rules(tree: Path) -> set[str]:
    """Rules that run in Snakemake's own process: the `localrules:` directive and `localrule: True` flags."""
    names = set()
    for smk in [tree / "Snakefile", *sorted((tree / "rules").glob("*.smk"))]:
        text = smk.read_text()
        directive = re.search(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", text, flags=re.M)
        if directive:
            names |= set(re.findall(r"\w+", directive.group(1)))
        for block in re.split(r"^(?=rule \w+:)", text, flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^    localrule: True$", block, flags=re.M):
                names.add(m.group(1))
    return names


def planned(text: str, local: set[str]) -> dict:
    """A dry run's jobs, per rule and dataset, and the SLURM jobs they make: each group job is one, each
    ungrouped job of a rule that is not local another (a dry run does not print which jobs are local)."""
    grouped = re.findall(r"^    rule (\w+):$", text, flags=re.M)
    alone = re.findall(r"^rule (\w+):$", text, flags=re.M)
    datasets = set(re.findall(r"wildcards: .*?\bdataset=([\w-]+)", text))
    groups = len(re.findall(r"Group job \S+ \(jobs in lexicogr\. order\):", text))
    return {"jobs": len(grouped) + len(alone), "per_rule": dict(Counter(grouped + alone)),
            "datasets": sorted(datasets), "slurm_submissions": groups + sum(r not in local for r in alone)}


def plan_table(tree: Path, logdir: Path) -> dict:
    results = yaml.safe_load((tree / "config.yaml").read_text())["results_dir"]
    _, text = snakemake(tree, ["-n", "--profile", "slurm", f"{results}/{TABLE}"], logdir / "plan.log")
    return planned(text, local_rules(tree))


def slurm_table(tree: Path, logdir: Path) -> dict:
    """The literal command through the local SLURM, on config/ci.yaml with a copy of its dataset added."""
    cfg = yaml.safe_load((tree / "config" / "ci.yaml").read_text())
    (name, dataset), = cfg["datasets"].items()
    cfg["datasets"][f"{name}_copy"] = dict(dataset)
    cfg["test_sets"][f"{name}_copy"] = {"dataset": f"{name}_copy", "table": f"{name}_copy"}
    (tree / "two.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    args = [f"{cfg['results_dir']}/{TABLE}", "--profile", "slurm", "--profile", "profiles/slurm-ci",
            "--configfile", "two.yaml"]
    env = {"SLURM_ACCOUNT": os.environ.get("SLURM_LOCAL_ACCOUNT", "deepred")}
    _, plan_text = snakemake(tree, [*args, "-n"], logdir / "slurm_plan.log", env=env)
    wall, text = snakemake(tree, args, logdir / "slurm.log", env=env)
    submitted = re.findall(r"^Job \S+ has been submitted with SLURM jobid (\d+)", text, flags=re.M)
    return {"planned": planned(plan_text, local_rules(tree)), "sbatch_submissions": len(set(submitted)),
            "wall_s": round(wall, 1), "datasets": len(cfg["datasets"])}


def per_rule(results: Path) -> dict[str, dict]:
    """The jobs' usage records (Snakemake benchmark TSVs) under results/benchmarks/<rule>/ (an older tree's
    folders may be named by stage), summed per folder by the runtime table's own reader."""
    per = read_benchmarks(results / "benchmarks").groupby("rule").agg(
        jobs=("job", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
    return {rule: {"jobs": int(r.jobs), "wall_s": round(float(r.wall_s), 1), "cpu_s": round(float(r.cpu_s), 1)}
            for rule, r in per.iterrows()}


def full_run(tree: Path, cores: int, logdir: Path) -> dict:
    args = ["--cores", str(cores), "--profile", "profiles/default"]
    load_before = os.getloadavg()
    wall, _ = snakemake(tree, args, logdir / "full.log", usage=logdir / "full_usage.json")
    usage = json.loads((logdir / "full_usage.json").read_text())
    rules = per_rule(tree / "results")
    jobs_cpu = sum(r["cpu_s"] for r in rules.values())
    noops = []
    for i in range(3):
        seconds, text = snakemake(tree, args, logdir / f"noop{i}.log")
        if "Nothing to be done" not in text:
            sys.exit(f"the rerun of a finished DAG in {tree} ran jobs; see {logdir / f'noop{i}.log'}")
        noops.append(seconds)
    return {"wall_s": round(wall, 1), "jobs": sum(r["jobs"] for r in rules.values()),
            "jobs_cpu_s": round(jobs_cpu, 1), "children_cpu_s": usage["children_cpu_s"],
            "scheduler_cpu_s": usage["scheduler_cpu_s"],
            "per_rule": rules, "noop_rerun_s": [round(s, 2) for s in noops],
            "noop_rerun_median_s": round(statistics.median(noops), 2),
            "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}


def nmad_against_baseline(trees: dict[str, Path]) -> dict:
    """Every test NMAD of HEAD's full run against the baseline's value and its 95% bootstrap interval (the
    `*_nmad.csv` tables of both): `within`, `better` (below the interval) or `worse` (above it), per row."""
    def table(tree: Path) -> pd.DataFrame:  # the per-test-set tables (transfer_nmad.csv has no test_set)
        frames = [pd.read_csv(f) for f in sorted((tree / "results" / "tables").glob("*_nmad.csv"))]
        return pd.concat([f for f in frames if "test_set" in f]).drop_duplicates(["test_set", "model"])

    cols = ["test_set", "model", "nmad", "nmad_ci_lo", "nmad_ci_hi"]
    rows = table(trees["head"])[cols[:3]].merge(table(trees["baseline"])[cols], on=["test_set", "model"],
                                                  suffixes=("", "_baseline"))
    rows["reading"] = np.select([rows["nmad"] > rows["nmad_ci_hi"], rows["nmad"] < rows["nmad_ci_lo"]],
                                ["worse", "better"], "within")
    return {"rows": rows.round(5).to_dict(orient="records"), "count": rows["reading"].value_counts().to_dict(),
            "identical": int((rows["nmad"] == rows["nmad_baseline"]).sum())}


def summarize(result: dict, trees: dict[str, Path]) -> None:
    """Figures derived from the measurements: the scheduler's CPU as a share of its jobs' (the process tree's
    CPU, `children_cpu_s`: the same measure on both sides, whereas the per-rule usage files of an older tree
    may come from Snakemake's `benchmark:` sampling, which sees only a job's first 30 s), HEAD / baseline
    ratios, and the test NMAD comparison."""
    full = [result[side]["full"] for side in trees if "full" in result.get(side, {})]
    for f in full:
        f["scheduler_share"] = round(f["scheduler_cpu_s"] / f["children_cpu_s"], 4)
    result["head_over_baseline"] = ratios(result["head"], result["baseline"])
    if len(full) == 2:
        result["nmad_against_baseline"] = nmad_against_baseline(trees)


def ratios(new: dict, old: dict) -> dict:
    """HEAD / baseline for every number both sides have (per-rule figures: rules both sides ran)."""
    out = {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            sub = ratios(value, old[key])
            if sub:
                out[key] = sub
        elif isinstance(value, (int, float)) and isinstance(old.get(key), (int, float)) and old[key]:
            out[key] = round(value / old[key], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE, help=f"commit to compare with (default {BASELINE})")
    ap.add_argument("--head", default="HEAD", help="commit measured against it (default HEAD)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--slurm", action="store_true", help="run the literal command through the local SLURM")
    ap.add_argument("--skip-full", action="store_true", help="no full runs (plans, and SLURM if asked)")
    ap.add_argument("--keep", action="store_true", help="keep both checkouts (data, results, logs) afterwards")
    ap.add_argument("--compare", metavar="WORKDIR", help="derive the shares, ratios and NMAD comparison again from "
                    "--out's measurements and the checkouts an earlier --keep run left in WORKDIR")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "workflow.json"))
    args = ap.parse_args()
    if args.compare:
        result = json.loads(Path(args.out).read_text())
        summarize(result, {side: Path(args.compare) / side for side in ("baseline", "head")})
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["nmad_against_baseline"]["count"]))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_workflow_"))
    sides = {"baseline": args.baseline, "head": args.head}
    result: dict = {"cores": args.cores, "commits": {}, "workdir": str(work)}
    trees = {}
    for side, ref in sides.items():
        trees[side] = checkout(ref, work / side)
        result["commits"][side] = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                                                 capture_output=True, text=True).stdout.strip()
    steps = [("plan", plan_table)] + ([("slurm", slurm_table)] if args.slurm else [])
    steps += [] if args.skip_full else [("full", lambda tree, logdir: full_run(tree, args.cores, logdir))]
    for step, measure in steps:
        for side, tree in trees.items():
            logdir = work / "logs" / side / step
            logdir.mkdir(parents=True, exist_ok=True)
            print(f"[bench_workflow] {step} on {side} ({result['commits'][side]})", flush=True)
            result.setdefault(side, {})[step] = measure(tree, logdir)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # keep what is done so far
    summarize(result, trees)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for side in sides if not args.keep else ():
        subprocess.run(["git", "worktree", "remove", "--force", str(trees[side])], cwd=ROOT, capture_output=True)
    print(json.dumps({k: v for k, v in result.items() if k in ("commits", "head_over_baseline")}, indent=2))


if __name__ == "__main__":
    main()
