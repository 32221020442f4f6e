"""Case 7: how soon after its deadline an overrunning job is marked timed out.

Jobs that sleep 200 ms run on a ``WorkerPool(4, timeout=0.05)``.  Each attempt records its
``deadline`` and the moment it ``ended`` (both readings of the pool's monotonic clock), so
``attempt.ended - attempt.deadline`` is exactly the detection delay; p50 and p99 per run.
The pool may replace up to 32 abandoned threads (``max_abandoned_threads=32``) so that four
attempts keep running while earlier ones sleep out their 200 ms; that changes how fast the
run goes, not the delay measured.

The standard library has no job timeout, so the baseline is the floor any Python
implementation stands on: on a ``ThreadPoolExecutor(4)`` running the same number of jobs,
each job waits ``Event.wait(0.05)`` and records how late past ``start + 0.05`` it woke up.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.harness import (
    Metrics,
    Row,
    Settings,
    alternate,
    compare_row,
    percentile,
    quiet_logger,
    wait_until,
)
from chronos import AttemptOutcome, JobFuture, WorkerPool

__all__ = ["case7"]

WORKERS = 4
TIMEOUT = 0.050
OVERRUN = 0.200
BASELINE = "Event.wait floor"


def _detection(futures: list[JobFuture[None]]) -> list[float]:
    delays = []
    for future in futures:
        attempt = future.job.attempts[-1]
        if attempt.outcome is not AttemptOutcome.TIMED_OUT:
            raise RuntimeError(f"expected a timed-out attempt, got {attempt!r}")
        assert attempt.ended is not None and attempt.deadline is not None
        delays.append(attempt.ended - attempt.deadline)
    return delays


def _summary(delays: list[float]) -> Metrics:
    return {
        "p50_ms": percentile(delays, 50) * 1e3,
        "p99_ms": percentile(delays, 99) * 1e3,
        "max_ms": max(delays) * 1e3,
    }


def _chronos_run(jobs: int) -> Metrics:
    pool = WorkerPool(WORKERS, timeout=TIMEOUT, max_abandoned_threads=32, logger=quiet_logger())
    try:
        futures = [pool.submit(time.sleep, OVERRUN) for _ in range(jobs)]
        for future in futures:
            future.exception(timeout=30.0)
    finally:
        pool.shutdown(wait=True)
    # Abandoned threads sleep out their 200 ms; let them go before the next run.
    wait_until(lambda: not pool.threads(), 5.0, "abandoned threads to exit")
    return _summary(_detection(futures))


def _overshoot() -> float:
    deadline = time.monotonic() + TIMEOUT
    threading.Event().wait(TIMEOUT)
    return time.monotonic() - deadline


def _stdlib_run(jobs: int) -> Metrics:
    with ThreadPoolExecutor(WORKERS) as executor:
        delays = list(executor.map(lambda _: _overshoot(), range(jobs)))
    return _summary(delays)


def case7(settings: Settings) -> list[Row]:
    """Timeout detection delay p50/p99 (target: p99 <= 5 ms)."""
    jobs = settings.count(200, 24)
    results = alternate(
        {"chronos": lambda: _chronos_run(jobs), "baseline": lambda: _stdlib_run(jobs)},
        settings.runs,
        warmup={"chronos": lambda: _chronos_run(8), "baseline": lambda: _stdlib_run(8)},
    )
    ours, theirs = results["chronos"], results["baseline"]
    what = f"{jobs} jobs overrunning a 50 ms timeout: ended - deadline"
    p99 = ours["p99_ms"]
    rows = [
        compare_row("7", f"{what}, p50 ms", ours["p50_ms"], theirs["p50_ms"], BASELINE),
        compare_row(
            "7",
            f"{what}, p99 ms",
            p99,
            theirs["p99_ms"],
            BASELINE,
            target="<= 5 ms",
            passed=statistics.median(p99) <= 5.0,
        ),
    ]
    rows[-1].data["max_ms"] = {"chronos": ours["max_ms"], "baseline": theirs["max_ms"]}
    return rows
