"""The SLURM profile and pre-flight, without a running cluster (dry runs and real failures in seconds).

The cluster tests (tests/workflow/test_slurm_cluster.py) submit real jobs; these check what a user on a login node
sees first: `snakemake --profile slurm ...` resolves at the repository root, takes account/partition from
the environment, keeps the executor plugin's traps out of the profile, and fails fast and clearly when
SLURM is unusable.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import yte

from deepred.workflow.slurm import copy_workflow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SLURM_TOOLS = {"sbatch", "srun", "salloc", "squeue", "sacct", "sacctmgr", "scontrol", "sinfo", "scancel", "sshare",
               "sstat", "sprio", "sreport", "sattach", "sbcast", "sdiag", "strigger", "scrontab"}
TARGET = "results/tables/kids_nmad.csv"  # the command users type: snakemake --profile slurm <this>


def _profile(name: str) -> dict:
    """A profile as Snakemake reads it (YTE-rendered)."""
    with open(REPO / "profiles" / name / "config.yaml") as fh:
        return yte.process_yaml(fh, require_use_yte=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the workflow (what a fresh clone holds): the checkout's own data/, results/ and .snakemake/
    are never read or written, so a finished `make run` cannot turn these dry runs into no-ops."""
    return copy_workflow(REPO, tmp_path_factory.mktemp("workflow"))


def _snakemake(workdir, args, env_update=None, drop_env=(), timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env.update(env_update or {})
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return res, time.monotonic() - t0


def _jobs(dry_run_output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job in a dry run's output."""
    jobs, rule = [], None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            jobs.append((rule, line.strip()))
            rule = None
    return jobs


@pytest.fixture(scope="module")
def literal_dry_run(workdir):
    """`snakemake --profile slurm -n results/tables/kids_nmad.csv` at the root, no account/partition set."""
    res, _ = _snakemake(workdir, ["--profile", "slurm", "-n", TARGET], drop_env=("SLURM_ACCOUNT", "SLURM_PARTITION"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def test_profile_name_resolves_at_repository_root(literal_dry_run, workdir):
    assert (REPO / "slurm").resolve() == (REPO / "profiles" / "slurm").resolve()
    assert (workdir / "slurm").resolve() == (workdir / "profiles" / "slurm").resolve()
    assert "Using profiles slurm" in literal_dry_run or "Using profile slurm" in literal_dry_run
    assert "workflow specific profile profiles/default" in literal_dry_run
    assert "This was a dry-run" in literal_dry_run


def test_gpu_rules_request_a_gpu_and_no_tasks(literal_dry_run):
    jobs = _jobs(literal_dry_run)
    rules = {r for r, _ in jobs}
    assert "train" in rules, f"no training job on the way to {TARGET}: {sorted(rules)}"
    for rule, res in jobs:
        if rule in ("train", "shap_explain"):
            assert re.search(r"\bgpu=1\b", res), f"{rule} job without gpu=1: {res}"
        if re.search(r"\bgpu=", res):
            assert not re.search(r"\btasks=", res), f"{rule} job sets tasks (duplicate runs on SLURM): {res}"
        assert "cpus_per_task" not in res, f"{rule}: cpus_per_task overrides threads: {res}"
        if rule != "all":
            assert re.search(r"\bruntime=\d+", res), f"{rule} job without a runtime: {res}"
    # unset $SLURM_ACCOUNT / $SLURM_PARTITION are left out, never passed on literally
    assert "slurm_account" not in literal_dry_run and "$SLURM" not in literal_dry_run
    assert "slurm_partition" not in literal_dry_run


def test_account_and_partition_come_from_the_environment(workdir):
    res, _ = _snakemake(
        workdir, ["--profile", "slurm", "-n", "data/processed/kids/catalog.parquet"],
        env_update={"SLURM_ACCOUNT": "astro123", "SLURM_PARTITION": "gpu-a100"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _jobs(res.stdout + res.stderr)
    assert jobs
    for rule, line in jobs:
        if rule != "all":
            assert "slurm_account=astro123" in line and "slurm_partition=gpu-a100" in line, line


def test_profiles_avoid_the_executor_traps():
    slurm = _profile("slurm")
    assert slurm["executor"] == "slurm"
    assert slurm["retries"] >= 1 and slurm["rerun-incomplete"] is True and slurm["keep-going"] is True
    assert slurm["slurm-logdir"] == "logs/slurm"
    for name in ("slurm", "slurm-ci"):
        prof = _profile(name)
        defaults = prof.get("default-resources", {})
        assert "cpus_per_task" not in defaults, f"profiles/{name}: cpus_per_task would override every rule's threads"
        per_rule = [("default-resources", defaults)] + list(prof.get("set-resources", {}).items())
        for rule, res in per_rule:
            assert "tasks" not in res, f"profiles/{name} {rule}: tasks on a GPU rule starts duplicate runs"
            if "runtime" in res:
                assert re.fullmatch(r"\d+(\.\d+)?[smhd]", str(res["runtime"])), (
                    f"profiles/{name} {rule}: runtime {res['runtime']!r} needs a unit (bare numbers were seconds "
                    "before Snakemake 9.20)"
                )
    # the workflow profile is merged over --profile slurm key by key: it must not undo cluster settings
    default = _profile("default")
    assert "cores" not in default, "cores in profiles/default would cap the SLURM run to that many cores"
    assert "default-resources" not in default, "would silently drop profiles/slurm's default-resources"
    for key, value in default.items():
        assert slurm.get(key, value) == value, f"profiles/default.{key}={value!r} overrides profiles/slurm's"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_sbatch_fails_fast_and_clearly(tmp_path, workdir):
    # this machine's PATH, minus every SLURM client program (they share /usr/bin with everything else)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d) or Path(d) == VENV_BIN:
            continue
        for tool in os.listdir(d):
            if tool not in SLURM_TOOLS and not (bindir / tool).exists():
                (bindir / tool).symlink_to(Path(d) / tool)
    res, took = _snakemake(
        workdir, ["--profile", "slurm", "data/processed/kids/catalog.parquet"],
        env_update={"PATH": f"{VENV_BIN}:{bindir}"},
        timeout=60,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "sbatch" in out and "not found on PATH" in out, out[-2000:]
    assert "--cores N" in out  # says how to run without SLURM
    assert took < 30, f"took {took:.0f} s"
    assert "has been submitted" not in out


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="needs the SLURM client (scontrol) installed")
def test_unreachable_controller_fails_fast_and_clearly(tmp_path, workdir):
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=nowhere\n"
        f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)\n"
        f"SlurmctldPort={_free_port()}\n"
        "AuthType=auth/munge\n"
        "NodeName=ghost NodeAddr=127.0.0.1 CPUs=1 State=UNKNOWN\n"
        "PartitionName=debug Nodes=ghost Default=YES State=UP\n"
    )
    res, took = _snakemake(
        workdir, ["--profile", "slurm", "data/processed/kids/catalog.parquet"], env_update={"SLURM_CONF": str(conf)},
        timeout=90,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "controller is unreachable" in out, out[-2000:]
    # the executor plugin itself spends MessageTimeout (10 s) twice in `scontrol show config` before our
    # pre-flight runs; the point is an answer instead of sbatch's retry loop
    assert took < 75, f"took {took:.0f} s"
    assert "has been submitted" not in out
