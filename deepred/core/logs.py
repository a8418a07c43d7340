"""Logging for workflow scripts: stderr goes to the rule's log file first thing, and the job's own resource
record (wall, CPU, max RSS) goes to its `usage` log when it ends."""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys
import time
from pathlib import Path

from deepred.core.io import atomic_path


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send stderr (and so warnings, tracebacks and progress lines) to `log_path`, line-buffered."""
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(log_path, "a", buffering=1)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    log = logging.getLogger("deepred")
    if os.environ.get("SLURM_JOB_ID"):  # which SLURM job and GPUs this ran with, for the record
        log.info(
            "SLURM job %s on %s, CUDA_VISIBLE_DEVICES=%s",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURMD_NODENAME", "?"),
            os.environ.get("CUDA_VISIBLE_DEVICES", "none"),
        )
    return log


def snakemake_log(snakemake) -> str | None:
    """The first log file of a Snakemake `script:` job, or None."""
    return str(snakemake.log[0]) if len(snakemake.log) else None


def start_job(snakemake) -> logging.Logger:
    """A workflow script's first call: log to the rule's first log file, and, when the rule names a `usage` log
    (rules/*.smk: `usage=P.benchmark(...)`), write the job's resource record there when the process exits."""
    log = setup_logging(snakemake_log(snakemake))
    usage = getattr(snakemake.log, "usage", None)
    if usage:
        atexit.register(write_usage, str(usage), _process_start())
    return log


def _process_start() -> float:
    """When this process started (epoch seconds): the interpreter's start-up and imports count as the job's."""
    import psutil  # Snakemake's own dependency; only jobs that record their usage need it

    return psutil.Process().create_time()


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (getrusage's ru_maxrss would carry the forking Snakemake's
    peak across exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_usage(path: str | Path, started: float) -> None:
    """The job's wall, CPU and peak memory in Snakemake's benchmark TSV columns (s, h:m:s, max_rss MB, cpu_time),
    measured by the job itself at exit: exact CPU from getrusage, and no sampling thread in the scheduler
    (Snakemake's `benchmark:` polls every job's process tree each second for its first 30 s, in the scheduler's
    own process)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = max(0.0, time.time() - started)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    rss_mb = _peak_rss_mb()
    hms = time.strftime("%H:%M:%S", time.gmtime(wall))
    with atomic_path(path) as tmp:
        tmp.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{wall:.4f}\t{hms}\t{rss_mb:.2f}\t{cpu:.4f}\n")
