"""Case 6: how closely a rate-limited Dispatcher keeps to its schedule.

A :class:`chronos.Dispatcher` with ``rate=R`` (its default ``burst=1``) dispatches an endless
generator of no-op jobs for a window of W seconds, then is stopped.  The moment of each
dispatch is taken on the dispatcher thread through the pool's ``logger`` hook (the
``job.dispatched`` event, emitted right after the job moves to QUEUED), with
``time.monotonic``, the pool's clock.  Two numbers come out of a run:

- the achieved-rate error: ``|(n - 1) / (t_last - t_first) / R - 1|`` in percent, over the
  n dispatches of the window;
- the lateness of the k-th dispatch against its ideal moment ``origin + k / R``, where
  ``origin`` is the tick of the ticker's grid (``start + j / R``, ``start`` read from
  ``dispatcher.bucket`` before the thread starts) on which the first dispatch fell; p50 and
  p99 over the run.  Lateness of the job *starts* on the workers is kept in the JSON too.

The baseline is what one would write with the standard library: a thread that waits until
``start + k / R`` (``Event.wait``, absolute deadlines, so it does not drift and catches up
after a late wake-up) and calls ``ThreadPoolExecutor.submit``.  Both are measured once on the
machine as it is and once with two CPU-bound Python threads competing for the GIL.
"""

from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from benchmarks.harness import Metrics, Row, Settings, alternate, compare_row, percentile
from chronos import Dispatcher, Job, WorkerPool

__all__ = ["case6", "cpu_hogs"]

WORKERS = 4
RATES = (100, 1_000)
BASELINE = "sleep loop+TPE"


class _DispatchRecorder:
    """A structlog-like logger that notes the moment of every ``job.dispatched`` event.

    Thread-safety: list.append is atomic; only the dispatcher thread appends.
    """

    def __init__(self) -> None:
        self.dispatched: list[float] = []

    def is_enabled_for(self, level: int) -> bool:
        return True

    def debug(self, event: str, **fields: Any) -> None:
        if event == "job.dispatched":
            self.dispatched.append(time.monotonic())

    def _drop(self, event: str, **fields: Any) -> None:
        return None

    info = warning = error = critical = exception = _drop


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """Run ``count`` CPU-bound Python threads (they compete for the GIL) while inside."""
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for _ in range(1_000):
                x += 1

    threads = [threading.Thread(target=spin, name=f"cpu-hog-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(10.0)


def _lateness(times: list[float], origin: float, period: float) -> list[float]:
    return [t - (origin + k * period) for k, t in enumerate(times)]


def _metrics(dispatched: list[float], started: list[float], origin: float, rate: float) -> Metrics:
    period = 1.0 / rate
    span = dispatched[-1] - dispatched[0]
    if span > 0:
        achieved = (len(dispatched) - 1) / span
    else:  # one dispatch in the window (a short window on a loaded machine): rate unknown
        achieved = math.inf if len(dispatched) > 1 else 0.0
    late = _lateness(dispatched, origin, period)
    start_late = _lateness(sorted(started), origin, period)
    return {
        "rate_error_pct": abs(achieved / rate - 1.0) * 100.0,
        "lateness_p50_ms": percentile(late, 50) * 1e3,
        "lateness_p99_ms": percentile(late, 99) * 1e3,
        "start_lateness_p50_ms": percentile(start_late, 50) * 1e3,
        "start_lateness_p99_ms": percentile(start_late, 99) * 1e3,
    }


def _chronos_run(rate: float, window: float) -> Metrics:
    started: list[float] = []

    def job() -> None:
        started.append(time.monotonic())

    recorder = _DispatchRecorder()
    pool = WorkerPool(WORKERS, logger=recorder)
    try:
        dispatcher = Dispatcher(pool, rate=rate)
        assert dispatcher.bucket is not None
        grid_start = dispatcher.bucket.next_ready()
        dispatcher.dispatch(Job(job) for _ in itertools.count())
        dispatcher.start()
        _sleep_until(grid_start + window)
        dispatcher.stop()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    times = recorder.dispatched
    period = 1.0 / rate
    origin = grid_start + math.floor((times[0] - grid_start) / period) * period
    return _metrics(times, started, origin, rate)


def _stdlib_run(rate: float, window: float) -> Metrics:
    period = 1.0 / rate
    started: list[float] = []
    dispatched: list[float] = []
    stop = threading.Event()

    def job() -> None:
        started.append(time.monotonic())

    with ThreadPoolExecutor(WORKERS) as executor:

        def feed(start: float) -> None:
            for k in itertools.count():
                delay = start + k * period - time.monotonic()
                if (delay > 0 and stop.wait(delay)) or stop.is_set():
                    return
                dispatched.append(time.monotonic())
                executor.submit(job)

        origin = time.monotonic()
        feeder = threading.Thread(target=feed, args=(origin,), name="stdlib-feeder")
        feeder.start()
        _sleep_until(origin + window)
        stop.set()
        feeder.join()
        executor.shutdown(wait=True, cancel_futures=True)
    return _metrics(dispatched, started, origin, rate)


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _variants(rate: float, window: float) -> dict[str, Callable[[], Metrics]]:
    return {
        "chronos": lambda: _chronos_run(rate, window),
        "baseline": lambda: _stdlib_run(rate, window),
    }


def case6(settings: Settings) -> list[Row]:
    """Rate error and dispatch lateness at 100/s and 1,000/s, without and with GIL load."""
    window = settings.pick(5.0, 0.4)
    warm_window = settings.pick(0.5, 0.1)
    rows: list[Row] = []
    for hogs in (0, 2):
        load = "no extra load" if hogs == 0 else f"{hogs} CPU threads"
        for rate in RATES:
            with cpu_hogs(hogs):
                results = alternate(
                    _variants(rate, window),
                    settings.long_runs,
                    warmup=_variants(rate, warm_window),
                )
            ours, theirs = results["chronos"], results["baseline"]
            where = f"{rate:,}/s for {window:g} s, {load}"
            targeted = hogs == 0
            error = ours["rate_error_pct"]
            p99 = ours["lateness_p99_ms"]
            rows.append(
                compare_row(
                    "6",
                    f"{where}: rate error %",
                    error,
                    theirs["rate_error_pct"],
                    BASELINE,
                    target="<= 0.1 %" if targeted else "",
                    passed=statistics.median(error) <= 0.1 if targeted else None,
                )
            )
            rows.append(
                compare_row(
                    "6",
                    f"{where}: lateness p50 ms",
                    ours["lateness_p50_ms"],
                    theirs["lateness_p50_ms"],
                    BASELINE,
                )
            )
            rows.append(
                compare_row(
                    "6",
                    f"{where}: lateness p99 ms",
                    p99,
                    theirs["lateness_p99_ms"],
                    BASELINE,
                    target="<= 1 ms" if targeted else "",
                    passed=statistics.median(p99) <= 1.0 if targeted else None,
                )
            )
            rows[-1].data["start_lateness_ms"] = {
                side: {
                    "p50": results[side]["start_lateness_p50_ms"],
                    "p99": results[side]["start_lateness_p99_ms"],
                }
                for side in ("chronos", "baseline")
            }
    return rows
