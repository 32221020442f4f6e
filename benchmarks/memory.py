"""Case 8: memory per queued job, and resident memory under an endless stream of jobs.

*Bytes per queued job.*  Four jobs block every worker on an Event, then N no-op jobs are
submitted and stay queued (chronos: ``WorkerPool(4, queue_size=0)``, unbounded like
``ThreadPoolExecutor``).  ``tracemalloc`` measures the memory traced before and after the
submissions (after a ``gc.collect()``); the caller keeps no reference to the futures, so what
is counted is what the executor holds per queued job: the Job, its Future and its bookkeeping
(chronos) against the ``_WorkItem`` and its Future (ThreadPoolExecutor).

*RSS under an endless generator.*  In a fresh subprocess (so that earlier cases do not
colour the heap), a :class:`chronos.Dispatcher` without a rate limit dispatches an endless
generator of no-op Jobs into a default ``WorkerPool(4)`` (bounded queue).  RSS is read from
``/proc/self/statm`` every second: through a 2 s warm-up (the queue fills, the allocator
settles), then through the 10 s window, whose first and last samples should be equal give or
take allocator noise (flat: the last at most 5 % above the first).  Peak: the largest sample.
The baseline is the standard-library way to do the same: a feeder thread that takes a
``BoundedSemaphore(10_000)`` slot per job and submits to a ``ThreadPoolExecutor(4)``, each
job's done-callback giving the slot back.

Linux only (``/proc/self/statm``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Row, Settings, alternate, compare_row, num, text_row
from chronos import Dispatcher, Job, WorkerPool

__all__ = ["case8"]

WORKERS = 4
STDLIB_BOUND = 10_000
#: RSS counts as flat if the last sample is at most this much above the first.
FLAT_TOLERANCE = 0.05
ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def _noop() -> None:
    return None


# -- bytes per queued job --------------------------------------------------------------------


def _queued_bytes(make: Callable[[], Executor], jobs: int) -> Metrics:
    gate = threading.Event()
    inside = threading.Semaphore(0)

    def block() -> None:
        inside.release()
        gate.wait(120.0)

    executor = make()
    try:
        for _ in range(WORKERS):
            executor.submit(block)
        for _ in range(WORKERS):
            if not inside.acquire(timeout=10.0):
                raise TimeoutError("the workers did not all start their blocking job")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(jobs):
                executor.submit(_noop)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    finally:
        gate.set()
        executor.shutdown(wait=True, cancel_futures=True)
    return {"bytes_per_job": (after - before) / jobs}


def _unbounded_pool() -> Executor:
    return WorkerPool(WORKERS, queue_size=0)


def _tpe() -> Executor:
    return ThreadPoolExecutor(WORKERS)


# -- RSS under an endless stream (runs in a child process) ------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sample_rss(seconds: float, interval: float, objects: list[int] | None = None) -> list[int]:
    """RSS every ``interval`` seconds for ``seconds``, the first one ``interval`` from now.

    With ``objects``, also append the number of gc-tracked objects at the first and the last
    sample: a leak of Python objects shows there whatever the allocator does with RSS.
    """
    start = time.monotonic()
    samples = []
    count = round(seconds / interval)
    for i in range(1, count + 1):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        samples.append(_rss_bytes())
        if objects is not None and i in (1, count):
            objects.append(len(gc.get_objects()))
    return samples


#: Warm-up RSS samples, window RSS samples, jobs run, gc-tracked objects at the window's
#: first and last samples.
Stream = tuple[list[int], list[int], int, list[int]]


def _chronos_stream(warmup: float, seconds: float, interval: float) -> Stream:
    def endless() -> Iterator[Job[None]]:
        while True:
            yield Job(_noop)

    pool = WorkerPool(WORKERS)
    try:
        dispatcher = Dispatcher(pool)
        dispatcher.dispatch(endless())
        dispatcher.start()
        warming = _sample_rss(warmup, interval)
        objects: list[int] = []
        samples = _sample_rss(seconds, interval, objects)
        dispatcher.stop()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return warming, samples, pool.stats.snapshot().succeeded, objects


def _stdlib_stream(warmup: float, seconds: float, interval: float) -> Stream:
    slots = threading.BoundedSemaphore(STDLIB_BOUND)
    stop = threading.Event()
    done = itertools.count()
    finished = [0]

    def release(_future: Future[None]) -> None:
        finished[0] = next(done)
        slots.release()

    with ThreadPoolExecutor(WORKERS) as executor:

        def feed() -> None:
            while not stop.is_set():
                if slots.acquire(timeout=0.1):
                    executor.submit(_noop).add_done_callback(release)

        feeder = threading.Thread(target=feed, name="stdlib-feeder")
        feeder.start()
        try:
            warming = _sample_rss(warmup, interval)
            objects: list[int] = []
            samples = _sample_rss(seconds, interval, objects)
        finally:
            stop.set()
            feeder.join(10.0)
    return warming, samples, finished[0] + 1, objects


def _child(impl: str, warmup: float, seconds: float, interval: float) -> None:
    run = _chronos_stream if impl == "chronos" else _stdlib_stream
    warming, samples, jobs, objects = run(warmup, seconds, interval)
    result = {
        "warmup_rss": warming,
        "rss": samples,
        "gc_objects_first_last": objects,
        "peak": max(warming + samples),
        "jobs": jobs,
        "seconds": warmup + seconds,
    }
    print(json.dumps(result))


def _stream_in_child(impl: str, warmup: float, seconds: float, interval: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.memory", "--rss", impl]
    command += ["--warmup", str(warmup), "--seconds", str(seconds), "--interval", str(interval)]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=warmup + seconds + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{impl} RSS child failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss_text(result: dict[str, Any]) -> str:
    samples = result["rss"]
    return f"{num(samples[0] / MIB)} -> {num(samples[-1] / MIB)} MiB"


def _growth(result: dict[str, Any]) -> float:
    samples = result["rss"]
    return float(samples[-1] / samples[0] - 1.0)


def case8(settings: Settings) -> list[Row]:
    """Bytes per queued job (<= 1.5x ThreadPoolExecutor's) and flat RSS under a stream."""
    jobs = settings.count(100_000, 5_000)
    results = alternate(
        {
            "chronos": lambda: _queued_bytes(_unbounded_pool, jobs),
            "baseline": lambda: _queued_bytes(_tpe, jobs),
        },
        settings.long_runs,
        warmup={
            "chronos": lambda: _queued_bytes(_unbounded_pool, 1_000),
            "baseline": lambda: _queued_bytes(_tpe, 1_000),
        },
    )
    ours = results["chronos"]["bytes_per_job"]
    theirs = results["baseline"]["bytes_per_job"]
    ratio = statistics.median(ours) / statistics.median(theirs)
    rows = [
        compare_row(
            "8",
            f"{jobs:,} queued jobs, bytes per job (tracemalloc)",
            ours,
            theirs,
            "TPE",
            target="<= 1.50x",
            passed=ratio <= 1.5,
            ratio=ratio,
        )
    ]

    warmup = settings.pick(2.0, 1.5)
    seconds = settings.pick(10.0, 1.0)
    interval = settings.pick(1.0, 0.5)
    stream = {
        impl: _stream_in_child(impl, warmup, seconds, interval) for impl in ("chronos", "stdlib")
    }
    growth = _growth(stream["chronos"])
    chronos_run, stdlib_run = stream["chronos"], stream["stdlib"]
    what = f"endless generator, Dispatcher, {seconds:g} s"
    name = "semaphore+TPE"
    rows += [
        text_row(
            "8",
            f"{what}: RSS first -> last",
            _rss_text(chronos_run),
            _rss_text(stdlib_run),
            baseline_name=name,
            target=f"flat: {growth * 100:+.1f}% <= +{FLAT_TOLERANCE * 100:g}%",
            passed=growth <= FLAT_TOLERANCE,
            data=stream,
        ),
        text_row(
            "8",
            f"{what}: peak RSS MiB",
            num(chronos_run["peak"] / MIB),
            num(stdlib_run["peak"] / MIB),
            baseline_name=name,
            ratio=chronos_run["peak"] / stdlib_run["peak"],
        ),
        text_row(
            "8",
            f"{what}: jobs/s",
            num(chronos_run["jobs"] / chronos_run["seconds"]),
            num(stdlib_run["jobs"] / stdlib_run["seconds"]),
            baseline_name=name,
            ratio=chronos_run["jobs"] / stdlib_run["jobs"],
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> None:
    """Child-process entry point: ``python -m benchmarks.memory --rss chronos|stdlib``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--rss", choices=("chronos", "stdlib"), required=True)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    _child(args.rss, args.warmup, args.seconds, args.interval)


if __name__ == "__main__":
    main()
