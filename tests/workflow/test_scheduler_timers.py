"""deepred/workflow/scheduler.py: Snakemake's scheduling loop keeps one pending re-evaluation timer instead of
starting one more per pass (each pass woken by a job would otherwise add a timer chain that runs forever)."""

from __future__ import annotations

import threading
import time

from snakemake.scheduling.job_scheduler import JobScheduler

from deepred.workflow.scheduler import coalesce_reevaluation


class _Loop:
    """The two things the method touches: the semaphore the loop waits on, and the method itself."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)

    def _schedule_reevalutation(self, delay):
        threading.Timer(delay, lambda: self._open_jobs.release()).start()  # Snakemake 9.27.1's body


def _releases(loop, seconds: float) -> int:
    n, end = 0, time.monotonic() + seconds
    while loop._open_jobs.acquire(timeout=max(end - time.monotonic(), 0)):
        n += 1
    return n


def test_the_original_method_stacks_timers():
    loop = _Loop()
    for _ in range(5):  # five passes woken by five finished jobs
        loop._schedule_reevalutation(0.05)
    assert _releases(loop, 0.3) == 5  # five chains now (each would start another timer per pass)


def test_one_pending_timer_however_many_passes():
    class Loop(_Loop):
        pass

    assert coalesce_reevaluation(Loop) and coalesce_reevaluation(Loop)  # idempotent
    loop = Loop()
    for _ in range(5):
        loop._schedule_reevalutation(0.05)
    assert _releases(loop, 0.3) == 1
    loop._schedule_reevalutation(0.05)  # the pass the timer woke schedules the next re-evaluation
    assert _releases(loop, 0.3) == 1
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]
    assert all(t.daemon for t in timers)  # a pending one never holds the process open at exit


def test_snakemakes_scheduler_has_the_method_we_replace():
    class Scheduler(JobScheduler):
        pass

    assert coalesce_reevaluation(Scheduler)
    assert Scheduler._deepred_original_reevaluation is JobScheduler._schedule_reevalutation
    assert Scheduler._schedule_reevalutation is not JobScheduler._schedule_reevalutation
