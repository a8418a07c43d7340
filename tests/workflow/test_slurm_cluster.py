"""The workflow through a real SLURM cluster (scripts/slurm_local_up.sh): end to end, reruns, faults.

Skipped, with the reason, where no cluster answers; DEEPRED_REQUIRE_SLURM=1 (set by .ci/run) turns the
skip into a failure. Every run is `snakemake --profile slurm --profile profiles/slurm-ci` on config/ci.yaml
in a copy of the workflow (own .snakemake state, data and logs), under `timeout -k` since Snakemake
ignores SIGTERM; what happened is read back from sacct (state, ReqTRES/AllocTRES, the rule in the job
comment) and from the rule and SLURM logs.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
import yaml
from workflow_copy import _state  # every file's bytes and mtime

from deepred.contracts.config import validate_config
from deepred.core.model_names import enabled_networks
from deepred.workflow.paths import SHAP_FILES, Layout
from deepred.workflow.slurm import copy_workflow

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[2]
PROFILE_ARGS = ["--profile", "slurm", "--profile", "profiles/slurm-ci"]
ACCOUNT = os.environ.get("SLURM_LOCAL_ACCOUNT", "deepred")  # created by scripts/slurm_local_up.sh


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "no SLURM client (sbatch) on PATH; bring up the local cluster with scripts/slurm_local_up.sh (root)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "`scontrol ping` did not answer within 15 s"
    if " is UP" not in ping.stdout:
        return f"SLURM controller not up: {(ping.stdout + ping.stderr).strip()}"
    acct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, text=True, timeout=15)
    if acct.returncode != 0:
        return f"sacct does not work (accounting off?): {acct.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("DEEPRED_REQUIRE_SLURM") == "1":
            pytest.fail(f"DEEPRED_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


class Submission(NamedTuple):
    """One rule run inside a SLURM job (a group job, profiles/slurm `groups`, runs several)."""

    rule: str
    wildcards: dict
    jobid: str
    log: str
    group: str | None  # the profile's group name, None for a job of its own


class Run:
    """One Snakemake invocation through SLURM and what it submitted."""

    def __init__(self, workdir: Path, args: list[str], timeout: int, env: dict | None = None):
        cmd = ["timeout", "-k", "15", str(timeout), sys.executable, "-m", "snakemake", *args]
        full_env = {**os.environ, "SLURM_ACCOUNT": ACCOUNT, **(env or {})}
        full_env.pop("SLURM_PARTITION", None)
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=workdir, env=full_env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        self.seconds = time.monotonic() - t0
        self.rc, self.out, self.workdir = res.returncode, res.stdout + res.stderr, workdir
        self.jobs, self.local = _submitted(_without_shown_logs(self.out))
        ids = sorted({j.jobid for j in self.jobs})
        if ids:  # leave nothing behind after a timeout or failure
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
        self.sacct = _sacct(ids)

    def explain(self) -> str:
        return f"rc={self.rc} after {self.seconds:.0f} s\n" + self.out[-4000:]

    def of_rule(self, rule: str) -> list[Submission]:
        return [j for j in self.jobs if j.rule == rule]


def _rule_blocks(text: str) -> tuple[dict[str, dict], list[dict]]:
    """Snakemake's job blocks ("rule X:" / "localrule X:", then jobid and wildcards lines) in a log:
    {jobid: block} and the blocks in order; each block is {rule, wildcards, local}."""
    by_id, blocks, current = {}, [], None
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^(local)?rule (\w+):$", s)
        if m:
            current = {"rule": m.group(2), "wildcards": {}, "local": bool(m.group(1))}
            blocks.append(current)
        elif current is not None and s.startswith("jobid:"):
            by_id[s.split(":", 1)[1].strip()] = current
        elif current is not None and s.startswith("wildcards:"):
            current["wildcards"] = dict(kv.split("=", 1) for kv in s.split(":", 1)[1].strip().split(", "))
    return by_id, blocks


def _without_shown_logs(out: str) -> str:
    """Snakemake's report without the failed jobs' logs it shows (profile: show-failed-logs), whose inner
    Snakemake's own rule blocks (a SLURM job's "localrule train:") are not jobs of this run."""
    return re.sub(r"^[ \t]*Logfile [^\n]*:\n[ \t]*(=+)\n.*?^[ \t]*\1$", "", out, flags=re.M | re.S)


def _group_jobs(out: str) -> list[tuple[str, list[dict]]]:
    """The group jobs Snakemake announced, in order: (group, member blocks). Each is a
    "Group job <group> (jobs in lexicogr. order):" header followed by its members' indented rule blocks."""
    groups, current = [], None
    for line in out.splitlines():
        header = re.search(r"Group job (\S+) \(jobs in lexicogr\. order\):$", line)
        if header:
            current = (header.group(1), [])
            groups.append(current)
        elif current is not None and (re.match(r"^(local)?rule \w+:$|^Job \S+ has been submitted|^Execute ",
                                               line)):
            current = None
        elif current is not None:
            current[1].append(line)
    return [(name, _rule_blocks("\n".join(lines))[1]) for name, lines in groups]


def _submitted(out: str) -> tuple[list[Submission], list[dict]]:
    """What Snakemake's own report says it submitted (one Submission per rule run in a SLURM job) and the
    jobs it ran itself (the Snakefile's localrules). A group job is submitted under a UUID; Snakemake
    announces a batch of jobs, then submits them in that order; a group's SLURM log folder,
    logs/slurm/group_<group>_<member rules>, tells which announced group a submission is. An attempt that
    SLURM killed early still counts every member: each attempt is submitted as the whole group."""
    by_id, blocks = _rule_blocks(out)
    announced = _group_jobs(out)
    jobs = []
    for line in out.splitlines():
        m = re.match(r"^Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", line.strip())
        if not m:
            continue
        jobid, log = m.group(2), m.group(3)
        if m.group(1) in by_id:
            members, group = [by_id[m.group(1)]], None
        else:
            folder = Path(log).parent.name
            match = next(i for i, (name, blocks_) in enumerate(announced)
                         if folder == "_".join(["group", name, *sorted({b["rule"] for b in blocks_})]))
            group, members = announced.pop(match)
        jobs += [Submission(b["rule"], b["wildcards"], jobid, log, group) for b in members]
    return jobs, [b for b in blocks if b["local"]]


def _sacct(ids: list[str], wait_s: float = 30.0) -> dict[str, dict]:
    """sacct records of these jobs (waits until slurmdbd has all of them in a final state)."""
    if not ids:
        return {}
    fields = ["JobID", "JobName", "Comment", "State", "ReqTRES", "AllocTRES", "Elapsed", "Timelimit"]
    deadline = time.monotonic() + wait_s
    while True:
        res = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-j", ",".join(ids), "-o", ",".join(fields)],
            capture_output=True, text=True, timeout=30,
        )
        rows = {}
        for line in res.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == len(fields):
                rows[parts[0]] = dict(zip(fields, parts))
        pending = [i for i in ids if rows.get(i, {}).get("State", "PENDING") in ("PENDING", "RUNNING", "COMPLETING")]
        if not pending or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def _config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config" / "ci.yaml").read_text())


@pytest.fixture(scope="module")
def e2e(cluster, tmp_path_factory):
    """The whole CI study (config/ci.yaml, default target) through SLURM."""
    workdir = copy_workflow(REPO, tmp_path_factory.mktemp("slurm_e2e"))
    run = Run(workdir, [*PROFILE_ARGS, "--configfile", "config/ci.yaml"], timeout=480)
    assert run.rc == 0, run.explain()
    return run


def test_end_to_end_runs_every_job_as_a_slurm_job(e2e):
    cfg = _config(e2e.workdir)
    results = e2e.workdir / cfg["results_dir"]
    for table in {ts["table"] for ts in cfg["test_sets"].values()}:
        assert (results / "tables" / f"{table}_nmad.csv").stat().st_size > 0
    assert (results / "tables" / "shap_localization.csv").stat().st_size > 0
    for model in ("hogsvr", "photometry", "ensemble_stacked", "ensemble_mean", *cfg["architectures"]):
        for dataset in cfg["datasets"]:
            assert (results / "predictions" / model / f"{dataset}.parquet").exists(), (model, dataset)

    assert e2e.jobs, e2e.explain()
    assert len({(j.rule, str(j.wildcards)) for j in e2e.jobs}) == len(e2e.jobs)
    for job in e2e.jobs:
        rec = e2e.sacct.get(job.jobid)
        assert rec is not None, f"SLURM job {job.jobid} ({job.rule} {job.wildcards}) unknown to sacct"
        assert rec["State"] == "COMPLETED", rec
        # the executor plugin names the rule, or the group and its rules, there
        expected = f"rule_{job.rule}" if job.group is None else "rule_" + Path(job.log).parent.name[len("group_"):]
        assert rec["Comment"].startswith(expected), (job, rec)
        assert rec["JobName"] == e2e.sacct[e2e.jobs[0].jobid]["JobName"]  # one run, one job name (its UUID)
    # the profile's groups: a dataset's preparation is one SLURM job, a network's training (which writes its
    # predictions) and its SHAP explanation another
    groups = {j.group for j in e2e.jobs}
    assert {"prepare", "model"} <= groups, groups
    for job in e2e.of_rule("shap_explain"):
        trained = [t for t in e2e.of_rule("train") if t.wildcards == job.wildcards]
        assert trained and trained[0].jobid == job.jobid, f"{job} did not run in its training's SLURM job"
    # every other job ran in the main Snakemake process: only the rules that declare `localrule: True`
    blocks = [b for f in [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")] for b in
              re.split(r"^(?=rule \w+:)", f.read_text(), flags=re.M)]
    declared = {re.match(r"rule (\w+):", b).group(1) for b in blocks if b.startswith("rule ")
                and re.search(r"^    localrule: True$", b, re.M)}
    assert {"all", "tables", "download", "archive"} <= declared, declared
    ran_locally = {b["rule"] for b in e2e.local}
    assert "tables" in ran_locally and ran_locally <= declared, (ran_locally, declared)
    assert not {j.rule for j in e2e.jobs} & declared


def test_training_jobs_ran_with_the_gpu_request(e2e):
    cfg = _config(e2e.workdir)
    networks = enabled_networks(validate_config(copy.deepcopy(cfg)))  # backbones, neural baselines, hybrids
    assert "hybrid_mixer_shuffled" in networks
    trained = {(j.wildcards["model"], j.wildcards["dataset"]): (j.jobid, j.log) for j in e2e.of_rule("train")}
    assert set(trained) == {(m, d) for m in networks for d in cfg["datasets"]}
    for (model, dataset), (jobid, slurm_log) in trained.items():
        rec = e2e.sacct[jobid]
        assert "gres/gpu=1" in rec["ReqTRES"] and "gres/gpu=1" in rec["AllocTRES"], rec
        # the rule's own log says which SLURM job it ran in, and that SLURM handed it a GPU
        rule_log = (e2e.workdir / "logs" / "train" / model / f"{dataset}.log").read_text()
        assert re.search(rf"SLURM job {jobid} on \S+, CUDA_VISIBLE_DEVICES=\d", rule_log), rule_log[-1500:]
        # the executor's per-job log under logs/slurm/ is kept and shows the job step ran the rule
        assert Path(slurm_log).is_relative_to(e2e.workdir / "logs" / "slurm")
        assert "rule train:" in Path(slurm_log).read_text()
    for job in e2e.of_rule("shap_explain"):
        assert "gres/gpu=1" in e2e.sacct[job.jobid]["AllocTRES"]
    for rule in ("simulate", "normalize", "hogsvr"):
        for job in e2e.of_rule(rule):
            assert "gres/gpu" not in e2e.sacct[job.jobid]["AllocTRES"], (rule, e2e.sacct[job.jobid])


def test_rerun_after_one_architecture_changes_submits_only_its_jobs(e2e, timelimit_run):
    # timelimit_run (started in the background) shares the cluster with this rerun, to save wall time
    cfg_path = e2e.workdir / "config" / "ci.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    changed = "mixer"
    cfg["architectures"][changed]["timm_kwargs"]["embed_dim"] += 16
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = Run(e2e.workdir, [*PROFILE_ARGS, "--configfile", "config/ci.yaml"], timeout=300)
    assert run.rc == 0, run.explain()
    submitted = [(j.rule, j.wildcards) for j in run.jobs]
    # the mixer and the hybrids built on it (ci.yaml's hybrid.backbones), whose section is the mixer's
    models = {changed} | {m for m in enabled_networks(validate_config(copy.deepcopy(cfg))) if m.startswith(
        f"hybrid_{changed}")}
    trained = sorted((wc["model"], wc["dataset"]) for rule, wc in submitted if rule == "train")
    assert trained == sorted((m, d) for m in models for d in cfg["datasets"]), submitted
    for rule, wc in submitted:
        assert rule not in ("simulate", "normalize", "hogsvr", "photometry", "photometry_features"), submitted
        if "model" in wc:
            assert wc["model"] in models, f"{rule} {wc} resubmitted though only {changed} changed"
    assert all(run.sacct[j.jobid]["State"] == "COMPLETED" for j in run.jobs), run.sacct


def test_one_table_submits_only_its_own_datasets_jobs(cluster, tmp_path):
    """The README's literal command for one table (`snakemake --profile slurm results/tables/kids_nmad.csv`), on
    the CI config with a second dataset: the table's dataset only, in a few SLURM jobs, nothing of the other."""
    workdir = copy_workflow(REPO, tmp_path / "wf")
    cfg = _config(workdir)
    cfg["datasets"]["kids_copy"] = dict(cfg["datasets"]["kids"])
    cfg["test_sets"]["kids_copy"] = {"dataset": "kids_copy", "table": "kids_copy"}
    (workdir / "two.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    args = [*PROFILE_ARGS, "--configfile", "two.yaml"]
    plan = subprocess.run([sys.executable, "-m", "snakemake", *args, "-n"], cwd=workdir, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    whole = [b for b in _rule_blocks(plan.stdout + plan.stderr)[1] if not b["local"]]
    run = Run(workdir, [f"{cfg['results_dir']}/tables/kids_nmad.csv", *args], timeout=420)  # --configfile takes several
    assert run.rc == 0, run.explain()
    assert {j.wildcards.get("dataset") for j in run.jobs if "dataset" in j.wildcards} == {"kids"}, run.jobs
    assert not any("kids_copy" in str(j.wildcards) for j in run.jobs)
    submissions = {j.jobid for j in run.jobs}
    # the whole DAG's cluster jobs (ungrouped, as one `tables` job asking for every test set made the literal
    # command plan them) against the SLURM jobs this command submitted
    print(f"kids_nmad.csv: {len(submissions)} SLURM jobs for {len(run.jobs)} rule runs; "
          f"the whole two-dataset DAG: {len(whole)} cluster jobs")
    assert len(whole) >= 2 * len(submissions), (len(whole), len(submissions))
    assert all(run.sacct[j]["State"] == "COMPLETED" for j in submissions), run.sacct


def test_invalid_account_is_refused_before_any_submission(cluster, tmp_path):
    workdir = copy_workflow(REPO, tmp_path / "wf")
    run = Run(workdir, [*PROFILE_ARGS, "--configfile", "config/ci.yaml"], timeout=120,
              env={"SLURM_ACCOUNT": "no_such_account_xyz"})
    assert run.rc != 0
    assert "account 'no_such_account_xyz'" in run.out and "your accounts:" in run.out, run.explain()
    assert not run.jobs, "jobs were submitted with an invalid account"
    assert run.seconds < 90, f"took {run.seconds:.0f} s"


TIMEOUT_MODEL, TIMEOUT_DATASET = "resnet", "kids"


def _epoch_wall_seconds(train_log: Path) -> float:
    """Wall seconds per epoch (training, validation, checkpoint write) from a rule log's timestamps."""
    stamps = [
        time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        for line in train_log.read_text().splitlines()
        if re.search(r" epoch \d+/\d+ ", line)
    ]
    assert len(stamps) >= 3, f"{train_log}: fewer than three epoch lines"
    return max((stamps[-1] - stamps[1]) / (len(stamps) - 2), 0.01)  # epoch 1 carries one-off costs


@pytest.fixture(scope="module")
def timelimit_run(e2e, tmp_path_factory):
    """Train one network and explain it, as the profile's `model` group (one SLURM job runs the training and
    then its SHAP explanation), under a 1-minute SLURM time limit per attempt, so that SLURM kills the group
    mid-training.

    SLURM keeps time limits in whole minutes and enforces them every ~30 s: a kill lands 60-95 s into a job.
    A group's time limit is the sum of its members' runtimes (Snakemake's GroupResources): the explanation's
    is set to 0 so the group's is the training's minute. The epochs are sized from the end-to-end run's
    epoch times for ~280 s of training, so the first attempt is killed even if training alone runs 2-3x
    faster than during that run (measured once: 140 s of estimated work finished inside the first minute);
    each retry resumes from the checkpoint and trains ~1 minute more, until one finishes and explains (up to
    8 retries: a slower machine only costs attempts)."""
    cfg = _config(e2e.workdir)
    workdir = copy_workflow(REPO, tmp_path_factory.mktemp("slurm_timelimit"))
    shutil.copytree(e2e.workdir / cfg["data_dir"], workdir / cfg["data_dir"])  # no need to simulate again
    epoch_s = _epoch_wall_seconds(e2e.workdir / "logs" / "train" / TIMEOUT_MODEL / f"{TIMEOUT_DATASET}.log")
    epochs = max(50, int(280.0 / epoch_s))
    cfg["architectures"][TIMEOUT_MODEL]["epochs"] = epochs
    cfg["training"]["patience"] = epochs  # no early stop: the run must outlast the limit
    (workdir / "config" / "ci.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert TIMEOUT_MODEL in cfg["shap"]["models"]
    target = Layout(cfg).shap_file(SHAP_FILES[0], TIMEOUT_MODEL, TIMEOUT_DATASET)
    data_before = _state(workdir / cfg["data_dir"])
    args = [target, *PROFILE_ARGS, "--configfile", "config/ci.yaml", "--retries", "8", "--set-resources",
            "train:runtime=1m", "train:mem_mb=3000", "shap_explain:runtime=0", "shap_explain:mem_mb=3000"]
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("run", Run(workdir, args, timeout=900)))
    thread.start()
    yield {"thread": thread, "box": box, "workdir": workdir, "epochs": epochs, "cfg": cfg,
           "data_before": data_before}
    thread.join()


def test_group_killed_by_the_time_limit_is_reported_and_rerun_as_a_unit(timelimit_run):
    timelimit_run["thread"].join()
    run = timelimit_run["box"]["run"]
    assert run.rc == 0, run.explain()
    # every attempt is one SLURM job of the `model` group, submitted with both members
    attempts = sorted({j.jobid for j in run.jobs}, key=int)
    for jobid in attempts:
        members = sorted((j.rule, j.group, str(j.wildcards)) for j in run.jobs if j.jobid == jobid)
        wc = str({"model": TIMEOUT_MODEL, "dataset": TIMEOUT_DATASET})
        assert members == [("shap_explain", "model", wc), ("train", "model", wc)], members
    states = [run.sacct[j]["State"] for j in attempts]
    assert len(attempts) >= 2 and set(states[:-1]) == {"TIMEOUT"} and states[-1] == "COMPLETED", (
        f"expected timed-out attempts, then a completed one: {states}\n" + run.explain()
    )
    for jobid in attempts:
        rec = run.sacct[jobid]
        assert rec["Timelimit"] == "00:01:00" and "gres/gpu=1" in rec["AllocTRES"], rec
    # Snakemake reports each failure as the group's, naming both members, and resubmits the group (its UUID)
    reports = re.findall(r"^ +message: Error in group model\n((?: {4,}.*\n)+)", _without_shown_logs(run.out),
                         flags=re.M)
    restarts = re.findall(r"^Trying to restart job (\S+)\.$", run.out, flags=re.M)
    assert len(reports) == len(attempts) - 1 and len(restarts) == len(attempts) - 1, (len(reports), restarts)
    for report in reports:
        assert set(re.findall(r"^ +rule (\w+):$", report, flags=re.M)) == {"train", "shap_explain"}, report
    assert len(set(restarts)) == 1, f"the retries were not one group job: {restarts}"
    # SLURM's own word, in the kept log under logs/slurm/, for the first attempt (sized to outlast the limit).
    # A later attempt may finish its epochs just as SLURM's ~30 s enforcement sweep comes due: sacct then
    # says TIMEOUT but the log has no cancel line, and the next attempt only finalizes (resumes after E of E).
    first_log = Path(next(j.log for j in run.jobs if j.jobid == attempts[0]))
    assert first_log.parent.name == "group_model_shap_explain_train", first_log
    assert re.search(rf"JOB {attempts[0]} ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT", first_log.read_text())

    workdir, epochs, cfg = timelimit_run["workdir"], timelimit_run["epochs"], timelimit_run["cfg"]
    # the last attempt ran both members: Snakemake starts a retried job's rule logs afresh
    for rule_log in (f"train/{TIMEOUT_MODEL}/{TIMEOUT_DATASET}.log", f"shap/{TIMEOUT_MODEL}/{TIMEOUT_DATASET}.log"):
        assert f"SLURM job {attempts[-1]} " in (workdir / "logs" / rule_log).read_text(), rule_log
    log = (workdir / "logs" / "train" / TIMEOUT_MODEL / f"{TIMEOUT_DATASET}.log").read_text()
    m = re.search(rf"resuming from \S+ after epoch (\d+) of {epochs}", log)
    assert m, "the retry did not resume from the checkpoint:\n" + log[-3000:]
    assert 1 <= int(m.group(1)) <= epochs
    # nothing lost: the history has every epoch exactly once, trained by more than one attempt, the first
    # attempt's epochs first; the inputs are untouched (same bytes, same times); the explanation is the final weights'
    layout = Layout(cfg)
    model_dir = workdir / layout.model_dir(TIMEOUT_MODEL, TIMEOUT_DATASET)
    hist = pd.read_csv(model_dir / "history.csv")
    assert hist["epoch"].tolist() == list(range(1, epochs + 1))
    trained_by = hist["trained_by"].tolist()
    assert trained_by[0] == f"slurm:{attempts[0]}", trained_by
    assert set(trained_by) <= {f"slurm:{jobid}" for jobid in attempts}, trained_by
    assert len(set(trained_by)) >= 2, f"one attempt trained every epoch: {set(trained_by)}"
    assert (model_dir / "model.safetensors").stat().st_size > 0
    assert _state(workdir / cfg["data_dir"]) == timelimit_run["data_before"]
    shap_dir = workdir / layout.shap_dir(TIMEOUT_MODEL, TIMEOUT_DATASET)
    assert all((shap_dir / name).stat().st_size > 0 for name in SHAP_FILES)
    assert (shap_dir / SHAP_FILES[0]).stat().st_mtime_ns >= (model_dir / "model.safetensors").stat().st_mtime_ns
