"""Cases 1-5: how many jobs a second chronos runs, against ``ThreadPoolExecutor``.

1. No-op jobs, ``submit()`` then ``result()``.
2. The same through ``map()``.
3. The same with a per-job timeout and a retry policy switched on (no job times out or
   fails): the cost of the features, against ThreadPoolExecutor's case-1 throughput.
4. The same fed through a :class:`chronos.Dispatcher` with no rate limit (dispatcher thread,
   bounded queue, pool), against ThreadPoolExecutor's case-1 throughput.
5. Jobs sleeping 10 ms, at 4 and at 32 workers: efficiency = ideal time / measured time,
   where ideal = jobs x 10 ms / workers.

Every run builds a fresh executor, times from the first submission to the last result, and
shuts the executor down outside the timed span.  chronos runs with its defaults (a bounded
queue of 10,000: ``submit`` blocks while it is full), as a user who swaps
``ThreadPoolExecutor(4)`` for ``WorkerPool(4)`` gets it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial

from benchmarks.harness import Metrics, Row, Settings, alternate, compare_row, paired_ratio
from chronos import Dispatcher, RetryPolicy, WorkerPool

__all__ = ["case1", "case2", "case3", "case4", "case5"]

WORKERS = 4
#: Case 3's features: a timeout no job reaches, a retry policy no job needs.
FEATURE_TIMEOUT = 60.0
FEATURE_RETRY = RetryPolicy(max_attempts=3, backoff=0.1)
SLEEP = 0.010

TPE = "TPE"
TPE_CASE_1 = "TPE case 1"


def _noop() -> None:
    return None


def _noop_arg(_item: object) -> None:
    return None


def _jobs(settings: Settings) -> int:
    return settings.count(100_000, 5_000)


def _timed(make: Callable[[], Executor], body: Callable[[Executor], None], jobs: int) -> Metrics:
    """One run: a fresh executor, ``body`` timed, then a shutdown outside the timing."""
    executor = make()
    try:
        start = time.perf_counter()
        body(executor)
        elapsed = time.perf_counter() - start
    finally:
        executor.shutdown(wait=True)
    return {"jobs_per_s": jobs / elapsed, "seconds": elapsed}


def _submit_result(jobs: int) -> Callable[[Executor], None]:
    def body(executor: Executor) -> None:
        futures = [executor.submit(_noop) for _ in range(jobs)]
        for future in futures:
            future.result()

    return body


def _map(jobs: int) -> Callable[[Executor], None]:
    def body(executor: Executor) -> None:
        for _ in executor.map(_noop_arg, range(jobs)):
            pass

    return body


def _through_dispatcher(jobs: int) -> Callable[[Executor], None]:
    def body(executor: Executor) -> None:
        assert isinstance(executor, WorkerPool)
        dispatcher = Dispatcher(executor).start()
        try:
            futures = [dispatcher.submit(_noop) for _ in range(jobs)]
            for future in futures:
                future.result()
        finally:
            dispatcher.close()
            dispatcher.join(5.0)

    return body


def _pool() -> Executor:
    return WorkerPool(WORKERS)


def _pool_with_features() -> Executor:
    return WorkerPool(WORKERS, timeout=FEATURE_TIMEOUT, retry=FEATURE_RETRY)


def _tpe() -> Executor:
    return ThreadPoolExecutor(WORKERS)


def _throughput_case(
    settings: Settings,
    make_chronos: Callable[[], Executor],
    chronos_body: Callable[[int], Callable[[Executor], None]],
    baseline_body: Callable[[int], Callable[[Executor], None]],
) -> tuple[list[float], list[float]]:
    jobs = _jobs(settings)
    warm = max(1, jobs // 10)
    results = alternate(
        {
            "chronos": lambda: _timed(make_chronos, chronos_body(jobs), jobs),
            "baseline": lambda: _timed(_tpe, baseline_body(jobs), jobs),
        },
        settings.runs,
        warmup={
            "chronos": lambda: _timed(make_chronos, chronos_body(warm), warm),
            "baseline": lambda: _timed(_tpe, baseline_body(warm), warm),
        },
    )
    return results["chronos"]["jobs_per_s"], results["baseline"]["jobs_per_s"]


def _ratio_row(
    case: str, metric: str, ours: list[float], theirs: list[float], name: str, minimum: float
) -> Row:
    ratio = paired_ratio(ours, theirs)
    return compare_row(
        case,
        metric,
        ours,
        theirs,
        name,
        target=f">= {minimum:.2f}x",
        passed=ratio >= minimum,
        ratio=ratio,
    )


def case1(settings: Settings) -> list[Row]:
    """No-op jobs, ``submit()`` then ``result()``: jobs/s against ThreadPoolExecutor."""
    ours, theirs = _throughput_case(settings, _pool, _submit_result, _submit_result)
    metric = f"{_jobs(settings):,} no-op submit()+result(), jobs/s"
    return [_ratio_row("1", metric, ours, theirs, TPE, 0.95)]


def case2(settings: Settings) -> list[Row]:
    """The same through ``Executor.map`` (no target of its own)."""
    ours, theirs = _throughput_case(settings, _pool, _map, _map)
    ratio = paired_ratio(ours, theirs)
    metric = f"{_jobs(settings):,} no-op map(), jobs/s"
    return [compare_row("2", metric, ours, theirs, TPE, ratio=ratio)]


def case3(settings: Settings) -> list[Row]:
    """Timeout and retry policy on: jobs/s against ThreadPoolExecutor's case 1."""
    ours, theirs = _throughput_case(settings, _pool_with_features, _submit_result, _submit_result)
    metric = "same, timeout=60 + RetryPolicy, jobs/s"
    return [_ratio_row("3", metric, ours, theirs, TPE_CASE_1, 0.85)]


def case4(settings: Settings) -> list[Row]:
    """Through a Dispatcher with no rate limit: jobs/s against ThreadPoolExecutor's case 1."""
    ours, theirs = _throughput_case(settings, _pool, _through_dispatcher, _submit_result)
    metric = "same via Dispatcher.submit(), no rate, jobs/s"
    return [_ratio_row("4", metric, ours, theirs, TPE_CASE_1, 0.80)]


def _sleepers(make: Callable[[int], Executor], jobs: int, workers: int) -> Metrics:
    executor = make(workers)
    try:
        start = time.perf_counter()
        futures = [executor.submit(time.sleep, SLEEP) for _ in range(jobs)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    finally:
        executor.shutdown(wait=True)
    ideal = jobs * SLEEP / workers
    return {"efficiency_pct": 100.0 * ideal / elapsed, "seconds": elapsed}


def _pool_of(workers: int) -> Executor:
    return WorkerPool(workers)


def _tpe_of(workers: int) -> Executor:
    return ThreadPoolExecutor(workers)


def case5(settings: Settings) -> list[Row]:
    """Sleeping jobs at 4 and 32 workers: efficiency, within 2 points of ThreadPoolExecutor's."""
    jobs = settings.count(1_000, 200)
    rows = []
    for workers in (4, 32):
        results = alternate(
            {
                "chronos": partial(_sleepers, _pool_of, jobs, workers),
                "baseline": partial(_sleepers, _tpe_of, jobs, workers),
            },
            settings.runs,
            warmup={
                "chronos": partial(_sleepers, _pool_of, workers * 4, workers),
                "baseline": partial(_sleepers, _tpe_of, workers * 4, workers),
            },
        )
        ours = results["chronos"]["efficiency_pct"]
        theirs = results["baseline"]["efficiency_pct"]
        gap = statistics.median(a - b for a, b in zip(ours, theirs, strict=True))
        rows.append(
            compare_row(
                "5",
                f"{jobs:,} x sleep(10 ms), {workers} workers, efficiency %",
                ours,
                theirs,
                TPE,
                target=f"gap {gap:+.1f} >= -2 pts",
                passed=gap >= -2.0,
            )
        )
        rows[-1].data["gap_points_median"] = gap
    return rows
