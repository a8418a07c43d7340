"""Run Snakemake in this process and record its own CPU apart from its jobs' (for benchmarks/bench_workflow.py).

At exit it writes a JSON: `scheduler_cpu_s` (user + system of this process, every thread: Snakemake's own work)
and `children_cpu_s` (every job process it waited for, and theirs), with the exit status. The same wrapper
measures any checkout, old or new, so the two figures compare.

    python benchmarks/snakemake_usage.py USAGE.json -- <snakemake arguments>
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        sys.exit(__doc__)
    out, args = Path(sys.argv[1]), sys.argv[3:]
    from snakemake.cli import main as snakemake_main

    t0, status = time.perf_counter(), 0
    try:
        snakemake_main(args)
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        record = {"exit": status, "wall_s": round(time.perf_counter() - t0, 2),
                  "scheduler_cpu_s": round(cpu_seconds(resource.RUSAGE_SELF), 2),
                  "children_cpu_s": round(cpu_seconds(resource.RUSAGE_CHILDREN), 2)}
        out.write_text(json.dumps(record) + "\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
