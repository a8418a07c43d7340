"""Logging for workflow scripts: stderr goes to the rule's log file first thing."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


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
