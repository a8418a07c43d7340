"""Pre-flight check before Snakemake submits anything to SLURM.

Without it, a missing `sbatch`, a dead controller or a wrong account shows up only after the executor
plugin's first status-check delay, as a bare "No such file or directory: 'sacct'" or a hang in
`sbatch` retries. Here each becomes one clear message within seconds (rules/slurm.smk calls `preflight`
from `onstart`, i.e. after the DAG is built and before the first submission).

Command line (e.g. on a login node): `python -m deepred.workflow.slurm [--account A] [--partition P]`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path


class SlurmPreflightError(RuntimeError):
    """SLURM is not usable from here; the message says what is wrong and what to do."""


LOCAL_HINT = "To run without SLURM: `snakemake --cores N <target>` (local CPU, profiles/default)."


# What a scratch copy of the workflow needs to run on its own (the SLURM tests and overhead benchmark).
WORKFLOW_PATHS = ("Snakefile", "rules", "workflow_scripts", "deepred", "profiles", "config", "config.yaml", "envs")


def copy_workflow(repo: Path, dest: Path) -> Path:
    """Copy the workflow files of `repo` into `dest`, with the root `slurm` profile link as in the repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_PATHS:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    os.symlink("profiles/slurm", dest / "slurm")  # what makes `--profile slurm` resolve at the root
    return dest


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _user_accounts(timeout: float) -> set[str] | None:
    """Accounts the current user may submit to; None when accounting cannot be asked (no slurmdbd)."""
    if shutil.which("sacctmgr") is None:
        return None
    try:
        res = _run(["sacctmgr", "-n", "-P", "-s", "list", "user", getpass.getuser(), "format=account"], timeout)
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        return None
    accounts = {line.strip().lower() for line in res.stdout.splitlines() if line.strip()}
    return accounts or None


def preflight(account: str | None = None, partition: str | None = None, timeout: float = 8.0) -> list[str]:
    """Check that jobs can be submitted; return info lines, raise SlurmPreflightError otherwise.

    `account`/`partition` default to $SLURM_ACCOUNT / $SLURM_PARTITION (what profiles/slurm passes on).
    """
    account = (account if account is not None else os.environ.get("SLURM_ACCOUNT", "")).strip() or None
    partition = (partition if partition is not None else os.environ.get("SLURM_PARTITION", "")).strip() or None
    info = []

    missing = [tool for tool in ("sbatch", "scontrol") if shutil.which(tool) is None]
    if missing:
        raise SlurmPreflightError(
            f"SLURM pre-flight: {' and '.join(missing)} not found on PATH, so `--profile slurm` cannot submit "
            "jobs from this machine. Run on the cluster's login node (or load its slurm module). " + LOCAL_HINT
        )

    try:
        ping = _run(["scontrol", "ping"], timeout)
        answer = ((ping.stdout + ping.stderr).strip().splitlines() or [""])[0]
        up = ping.returncode == 0 and " is UP" in answer
    except subprocess.TimeoutExpired:
        answer, up = f"no answer within {timeout:g} s", False
    if not up:
        raise SlurmPreflightError(
            f"SLURM pre-flight: the controller is unreachable (`scontrol ping`: {answer or 'no output'}). "
            "Check that slurmctld runs and that this machine's slurm.conf (SLURM_CONF) points to it. " + LOCAL_HINT
        )
    info.append(answer)

    if partition:
        try:
            res = _run(["sinfo", "-h", "-o", "%R"], timeout)
            known = {p.strip() for p in res.stdout.split()}
        except (subprocess.TimeoutExpired, FileNotFoundError):
            known = set()
        if known and partition not in known:
            raise SlurmPreflightError(
                f"SLURM pre-flight: partition '{partition}' (resource slurm_partition; profiles/slurm sets it from $SLURM_PARTITION) does not exist; "
                f"partitions here: {', '.join(sorted(known))}. Set SLURM_PARTITION to one of them, or unset it "
                "to use the cluster's default partition."
            )
        info.append(f"partition {partition}")

    if account:
        accounts = _user_accounts(timeout)
        if accounts is None:
            info.append(f"account {account} (not checked: no accounting database answers here)")
        elif account.lower() not in accounts:
            raise SlurmPreflightError(
                f"SLURM pre-flight: account '{account}' (resource slurm_account; profiles/slurm sets it from $SLURM_ACCOUNT) is not an account of user "
                f"'{getpass.getuser()}'; your accounts: {', '.join(sorted(accounts))}. Set SLURM_ACCOUNT to one "
                "of them, or unset it to let the executor plugin pick your default account."
            )
        else:
            info.append(f"account {account}")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepred.workflow.slurm", description=__doc__.splitlines()[0])
    ap.add_argument("--account", default=None, help="default: $SLURM_ACCOUNT")
    ap.add_argument("--partition", default=None, help="default: $SLURM_PARTITION")
    ap.add_argument("--timeout", type=float, default=8.0, help="seconds per SLURM command")
    args = ap.parse_args(argv)
    try:
        info = preflight(args.account, args.partition, args.timeout)
    except SlurmPreflightError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("SLURM pre-flight ok: " + "; ".join(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
