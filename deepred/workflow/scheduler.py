"""One pending re-evaluation timer in Snakemake's job scheduler, not one more per loop.

Snakemake 9's JobScheduler (snakemake/scheduling/job_scheduler.py, 9.27.1) enables its job rate limiter on every
real run (`--max-jobs-per-timespan` defaults to 100/1s) and ends every pass of its scheduling loop with
`_schedule_reevalutation(timespan)`: a new threading.Timer that, a second later, releases the semaphore the loop
waits on. Each release runs one more pass, which starts one more timer, so every wake-up that is not a timer (a job
finishing) adds a timer chain that never ends: after n jobs the loop runs about n times a second. Measured on the
default run: 133 timer threads alive at 135 of 250 jobs, and the scheduler's share of the jobs' CPU growing with
the run's progress (docs/speed.md).

`coalesce_reevaluation()` replaces that method so that at most one re-evaluation is pending: the rate limit is
still re-checked within `timespan` of any pass (the pending timer's callback clears the flag before it releases
the semaphore, so the pass it wakes starts the next one), and the timer is a daemon, so it cannot hold the process
open at exit. Called from rules/common.smk in the main Snakemake process only; the original method is kept as
`_deepred_original_reevaluation`.
"""

from __future__ import annotations

import threading

PATCHED = "_deepred_coalesced"


def coalesce_reevaluation(scheduler_cls=None) -> bool:
    """Patch JobScheduler._schedule_reevalutation (idempotent). False when this Snakemake has no such method
    (another version: left as it is)."""
    if scheduler_cls is None:
        from snakemake.scheduling.job_scheduler import JobScheduler as scheduler_cls  # Snakemake's, at parse time

    original = getattr(scheduler_cls, "_schedule_reevalutation", None)
    if original is None:
        return False
    if getattr(original, PATCHED, False):
        return True

    def schedule_reevaluation(self, delay) -> None:
        lock = self.__dict__.setdefault("_deepred_reevaluation_lock", threading.Lock())
        with lock:
            if self.__dict__.get("_deepred_reevaluation_pending"):
                return
            self._deepred_reevaluation_pending = True

        def fire():
            with lock:
                self._deepred_reevaluation_pending = False
            self._open_jobs.release()

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        timer.start()

    setattr(schedule_reevaluation, PATCHED, True)
    scheduler_cls._deepred_original_reevaluation = original
    scheduler_cls._schedule_reevalutation = schedule_reevaluation
    return True
