"""Case 9: how long shutting down takes, idle and with jobs waiting out a retry backoff.

Two scenarios, each measured two ways:

- *idle*: a pool whose four threads ran a few jobs and now wait for work;
- *backoff*: 8 jobs that failed their first attempt and wait out a 60 s retry backoff
  (``RetryPolicy(max_attempts=3, backoff=60, jitter=False)``), then
  ``shutdown(cancel_futures=True)``; backoff must never delay shutdown.

*In process*: the time ``shutdown()`` takes to return.  *SIGINT*: a child process enters
``with WorkerPool(...) as pool, GracefulShutdown(pool):``, says it is ready and waits; the
parent reads ``time.monotonic()`` and sends SIGINT; the child reads ``time.monotonic()`` as
soon as the ``with`` block has exited (the pool fully shut down) and prints it.  Both
readings are of the system-wide ``CLOCK_MONOTONIC``, so their difference is the latency from
the signal to the return.

The baseline is ``ThreadPoolExecutor(4)``: ``shutdown()`` of an idle executor (its jobs in
the backoff scenario simply failed: it has no retries), and in the child a SIGINT handler
that sets an Event, after which the main thread calls ``shutdown(cancel_futures=True)``.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import FrameType

from benchmarks.harness import (
    Metrics,
    Row,
    Settings,
    alternate,
    compare_row,
    quiet_logger,
    wait_until,
)
from chronos import GracefulShutdown, RetryPolicy, WorkerPool, current_job

__all__ = ["case9"]

WORKERS = 4
JOBS = 8
BACKOFF = RetryPolicy(max_attempts=3, backoff=60.0, jitter=False)
LIMIT_MS = 50.0
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("idle", "backoff")


class _PlannedFailureError(Exception):
    pass


def _noop() -> None:
    return None


def _fail_first_attempt() -> None:
    if current_job().attempt_number == 1:
        raise _PlannedFailureError("fails once, on purpose")


def _fail() -> None:
    raise _PlannedFailureError("fails, on purpose")


def _prepared_pool(scenario: str) -> WorkerPool:
    """A chronos pool in the scenario's state, ready to be shut down."""
    if scenario == "idle":
        pool = WorkerPool(WORKERS)
        for future in [pool.submit(_noop) for _ in range(JOBS)]:
            future.result(timeout=10.0)
        return pool
    pool = WorkerPool(WORKERS, retry=BACKOFF, logger=quiet_logger())
    for _ in range(JOBS):
        pool.submit(_fail_first_attempt)
    wait_until(
        lambda: pool.stats.snapshot().waiting_to_retry == JOBS, 10.0, "jobs in retry backoff"
    )
    return pool


def _prepared_tpe(scenario: str) -> ThreadPoolExecutor:
    executor = ThreadPoolExecutor(WORKERS)
    job = _noop if scenario == "idle" else _fail
    for future in [executor.submit(job) for _ in range(JOBS)]:
        future.exception(timeout=10.0)
    return executor


def _timed_shutdown(executor: Executor) -> Metrics:
    start = time.perf_counter()
    executor.shutdown(wait=True, cancel_futures=True)
    return {"ms": (time.perf_counter() - start) * 1e3}


def _in_process(scenario: str, impl: str) -> Metrics:
    if impl == "chronos":
        pool = _prepared_pool(scenario)
        metrics = _timed_shutdown(pool)
        if scenario == "backoff" and pool.stats.snapshot().cancelled != JOBS:
            raise RuntimeError(f"expected {JOBS} jobs cancelled: {pool.stats.snapshot()}")
        return metrics
    return _timed_shutdown(_prepared_tpe(scenario))


# -- SIGINT in a child process --------------------------------------------------------------


def _child(impl: str, scenario: str) -> None:
    """Set up, say "ready", wait for SIGINT, shut down, print the monotonic time of return."""
    if impl == "chronos":
        pool = _prepared_pool(scenario)
        with pool, GracefulShutdown(pool, grace=5.0) as stop:
            print("ready", flush=True)
            stop.requested.wait(60.0)
        returned = time.monotonic()
    else:
        interrupted = threading.Event()

        def handle(signum: int, frame: FrameType | None) -> None:
            interrupted.set()

        signal.signal(signal.SIGINT, handle)
        executor = _prepared_tpe(scenario)
        print("ready", flush=True)
        interrupted.wait(60.0)
        executor.shutdown(wait=True, cancel_futures=True)
        returned = time.monotonic()
    print(repr(returned), flush=True)


def _sigint(scenario: str, impl: str) -> Metrics:
    command = [sys.executable, "-m", "benchmarks.shutdown", "--child", impl, scenario]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        try:
            ready = child.stdout.readline().strip()
            if ready != "ready":
                raise RuntimeError(f"{impl} child did not get ready: {ready!r}")
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=30.0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if child.returncode != 0:
            raise RuntimeError(f"{impl} child exited {child.returncode}: {err[-2000:]}")
    returned = float(out.strip().splitlines()[-1])
    return {"ms": (returned - sent) * 1e3}


def _row(how: str, scenario: str, results: dict[str, dict[str, list[float]]]) -> Row:
    ours, theirs = results["chronos"]["ms"], results["baseline"]["ms"]
    if scenario == "idle":
        value, target = statistics.median(ours), f"<= {LIMIT_MS:g} ms"
    else:  # "never delays": every run, not the median
        value, target = max(ours), f"max <= {LIMIT_MS:g} ms"
    what = "idle pool" if scenario == "idle" else f"{JOBS} jobs in 60 s backoff"
    return compare_row(
        "9",
        f"{how}, {what}, ms",
        ours,
        theirs,
        "TPE",
        target=target,
        passed=value <= LIMIT_MS,
    )


def case9(settings: Settings) -> list[Row]:
    """Shutdown latency: shutdown() and SIGINT, idle and with jobs in retry backoff."""
    rows = []
    for scenario in SCENARIOS:
        results = alternate(
            {
                "chronos": partial(_in_process, scenario, "chronos"),
                "baseline": partial(_in_process, scenario, "baseline"),
            },
            settings.runs,
        )
        rows.append(_row("shutdown() to return", scenario, results))
    for scenario in SCENARIOS:
        results = alternate(
            {
                "chronos": partial(_sigint, scenario, "chronos"),
                "baseline": partial(_sigint, scenario, "baseline"),
            },
            settings.long_runs,  # every run starts two Python processes
            warmup={} if settings.quick else None,
        )
        rows.append(_row("SIGINT to return (GracefulShutdown)", scenario, results))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Child entry point: ``python -m benchmarks.shutdown --child chronos|stdlib SCENARIO``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shutdown")
    parser.add_argument("--child", choices=("chronos", "baseline"), required=True)
    parser.add_argument("scenario", choices=SCENARIOS)
    args = parser.parse_args(argv)
    _child(args.child, args.scenario)


if __name__ == "__main__":
    main()
