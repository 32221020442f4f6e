"""Where case 1's time goes, per job: ``python -m benchmarks.hotpath [--jobs N] [--profile]``.

Not part of ``python -m benchmarks``: a diagnostic for ``docs/performance.md``.

*Per-stage breakdown* (single thread, no contention).  Every step a no-op job takes through
chronos and through ``ThreadPoolExecutor`` is run N times in a row on the main thread, on
objects prepared in the right state, and timed: the submit side (``submit`` and its parts),
the worker side (the body of the worker loop and its parts) and ``result()``.  No worker
thread is started: ThreadPoolExecutor's idle semaphore is given N permits first, and the
chronos pool is shown four thread-less worker slots, so ``submit`` takes the no-new-thread
path it takes in steady state; the queued jobs are then run by calling the worker loop's
body by hand.  The "end to end" lines time the real methods; the
indented lines time their parts one by one, so what they do not add up to is call overhead.

*Threaded wall time.*  Case 1 itself (4 workers), alternating, gives the wall time per job;
the difference from the single-thread CPU cost is what threads cost: waking a worker,
handing the GIL over, condition variables.

*cProfile* (``--profile``): case 1 under ``cProfile`` on every thread (a profiler per worker,
started by the executor's ``initializer``): Python function calls and lock acquisitions per
job, and the functions with the most own time in microseconds per job.  Own time is wall
time, so it includes time a thread spent blocked or waiting for the GIL; profiling inflates
every call; read it for proportions.

Uses chronos internals (read-only) to time the parts; does not change the library.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.thread import _WorkItem
from typing import Any, TypeVar

from chronos import WorkerPool
from chronos._ledger import admit, start_attempt, succeed_attempt
from chronos.job import Attempt, Job
from chronos.pool import core_of
from chronos.pool.attempts import run as run_attempt
from chronos.pool.threads import WorkerSlot
from chronos.status import JobStatus

__all__ = ["main"]

X = TypeVar("X")
Stage = tuple[str, float]  # label, microseconds per job


def _noop() -> None:
    return None


def _per_job(items: Sequence[X], step: Callable[[X], object]) -> float:
    """Microseconds per item of ``step`` applied to every item in turn."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for item in items:
            step(item)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed / len(items) * 1e6


def _repeat(count: int, step: Callable[[], object]) -> float:
    return _per_job(range(count), lambda _: step())


# -- chronos -----------------------------------------------------------------------------------


def _chronos_pool() -> WorkerPool:
    """A pool that believes its 4 workers run: submit takes its steady-state path, spawning
    nothing (the slots have no thread, so shutdown has nothing to join)."""
    pool = WorkerPool(4, queue_size=0)
    core_of(pool).threads.active.update(WorkerSlot(f"idle-{i}") for i in range(4))
    return pool


def _chronos_stages(n: int) -> list[Stage]:
    stages: list[Stage] = []
    # End to end: submit, the worker loop's body, result.
    pool = _chronos_pool()
    slot = WorkerSlot("bench")
    futures: list[Future[None]] = []
    stages.append(("submit() end to end", _repeat(n, lambda: futures.append(pool.submit(_noop)))))
    core = core_of(pool)
    backend = core.backend

    def worker_body(_: object) -> None:  # worker_main's loop body
        job = backend.take()
        assert job is not None
        run_attempt(core, job, slot)
        del job
        assert not slot.abandoned

    stages.append(("worker loop body end to end", _per_job(range(n), worker_body)))
    stages.append(("result() of a done future", _per_job(futures, lambda f: f.result())))
    pool.shutdown()

    # The submit side, part by part.
    pool = _chronos_pool()
    core = core_of(pool)
    ledger, clock = core.ledger, pool.clock
    jobs: list[Job[None]] = []
    stages.append(
        (
            "  Job.future_of_call(fn, args, kwargs) incl. JobFuture",
            _repeat(n, lambda: jobs.append(Job.future_of_call(_noop, (), {}).job)),
        )
    )
    stages.append(
        (
            "  admit(): clock.now, ledger lock, counters, live jobs",
            _per_job(jobs, lambda j: admit(j, ledger, JobStatus.QUEUED, clock.now(), core)),
        )
    )
    stages.append(
        (
            "  queue: size check + SimpleQueue.put",
            _per_job(jobs, lambda j: queue_put(pool, j)),
        )
    )
    stages.append(
        (
            "  threads.ensure_worker (len(active) test)",
            _repeat(n, core.threads.ensure_worker),
        )
    )

    # The worker side, part by part (on jobs queued above).
    stages.append(
        (
            "  MemoryBackend.take (SimpleQueue + waiting-producer test)",
            _repeat(n, core.backend.take),
        ),
    )
    stages.append(("  clock.now() x2", _repeat(n, lambda: (clock.now(), clock.now()))))
    attempts: list[Attempt | None] = []
    stages.append(
        (
            "  start_attempt(): lock, Attempt(), publish, counters",
            _per_job(
                jobs,
                lambda j: attempts.append(start_attempt(j, clock.now(), "w", None, slot)),
            ),
        )
    )
    pairs = [(job, attempt) for job, attempt in zip(jobs, attempts, strict=True) if attempt]
    assert len(pairs) == n
    events = core.events

    def log_events(pair: tuple[Job[None], Attempt]) -> None:
        events.started(*pair)
        events.succeeded(*pair)

    def publish_running(pair: tuple[Job[None], Attempt]) -> None:
        slot.running = pair
        slot.running = None

    stages.append(("  events.started + events.succeeded (level off)", _per_job(pairs, log_events)))
    stages.append(("  slot.running set + cleared (current_job)", _per_job(pairs, publish_running)))
    stages.append(("  call the job: fn(*args, **kwargs)", _per_job(jobs, lambda j: j.fn())))
    stages.append(
        (
            "  succeed_attempt(): lock, fencing, counters, live jobs",
            _per_job(pairs, lambda p: succeed_attempt(p[0], p[1], clock.now(), slot)),
        )
    )
    stages.append(("  JobFuture.set_result (one Condition round trip)", _per_job(jobs, resolve)))
    pool.shutdown()
    return stages


def queue_put(pool: WorkerPool, job: Job[Any]) -> None:
    backend = core_of(pool).backend  # as WorkerPool.submit does it
    if backend.items.qsize() < backend.bound:
        backend.items.put(job)


def resolve(job: Job[None]) -> None:
    job.future.set_result(None)


# -- ThreadPoolExecutor ----------------------------------------------------------------------


def _tpe(jobs: int) -> ThreadPoolExecutor:
    executor = ThreadPoolExecutor(4)
    for _ in range(jobs):
        executor._idle_semaphore.release()
    return executor


def _tpe_stages(n: int) -> list[Stage]:
    stages: list[Stage] = []
    executor = _tpe(n)
    futures: list[Future[None]] = []
    stages.append(
        ("submit() end to end", _repeat(n, lambda: futures.append(executor.submit(_noop))))
    )
    work_queue = executor._work_queue

    def worker_body(_: object) -> None:
        work_item = work_queue.get(block=True)
        work_item.run()
        del work_item
        executor._idle_semaphore.release()

    stages.append(("worker loop body end to end", _per_job(range(n), worker_body)))
    stages.append(("result() of a done future", _per_job(futures, lambda f: f.result())))
    executor.shutdown()

    executor = _tpe(n)
    work_queue = executor._work_queue
    lock = executor._shutdown_lock
    stages.append(
        ("  two submit locks (_shutdown_lock, global)", _repeat(n, lambda: _two_locks(lock)))
    )
    new: list[Future[None]] = []
    stages.append(("  Future()", _repeat(n, lambda: new.append(Future()))))
    items: list[_WorkItem[None]] = []
    stages.append(
        (
            "  _WorkItem(future, fn, args, kwargs)",
            _per_job(new, lambda f: items.append(_WorkItem(f, _noop, (), {}))),
        )
    )
    stages.append(("  SimpleQueue.put (C)", _per_job(items, work_queue.put)))
    stages.append(
        (
            "  _adjust_thread_count (Semaphore.acquire(timeout=0))",
            _repeat(n, executor._adjust_thread_count),
        )
    )
    stages.append(("  SimpleQueue.get (C)", _repeat(n, lambda: work_queue.get(block=True))))
    stages.append(
        (
            "  _WorkItem.run: set_running, fn(), set_result",
            _per_job(items, lambda w: w.run()),
        )
    )
    stages.append(
        ("  _idle_semaphore.release (Semaphore)", _repeat(n, executor._idle_semaphore.release))
    )
    executor.shutdown()
    return stages


_GLOBAL_LOCK = threading.Lock()


def _two_locks(lock: threading.Lock) -> None:
    with lock, _GLOBAL_LOCK:
        pass


# -- threaded wall time and cProfile ---------------------------------------------------------


def _case1_wall(make: Callable[[], Executor], jobs: int) -> float:
    executor = make()
    try:
        start = time.perf_counter()
        for future in [executor.submit(_noop) for _ in range(jobs)]:
            future.result()
        return (time.perf_counter() - start) / jobs * 1e6
    finally:
        executor.shutdown()


def _walls(jobs: int, runs: int) -> tuple[float, float]:
    """Median wall time per job of case 1, chronos and TPE alternating, after a warm-up."""
    ours: list[float] = []
    theirs: list[float] = []
    for run in range(runs + 1):  # the first is a warm-up
        sides = [(ours, lambda: WorkerPool(4)), (theirs, lambda: ThreadPoolExecutor(4))]
        for samples, make in sides if run % 2 else sides[::-1]:
            gc.collect()
            wall = _case1_wall(make, jobs)
            if run:
                samples.append(wall)
    return statistics.median(ours), statistics.median(theirs)


def _profiled(make: Callable[[Callable[[], None]], Executor], jobs: int) -> pstats.Stats:
    """Case 1 with a profiler on the submitting thread and one on every worker thread."""
    workers: list[cProfile.Profile] = []

    def start_profiler() -> None:
        profiler = cProfile.Profile()
        workers.append(profiler)
        profiler.enable()

    executor = make(start_profiler)
    main = cProfile.Profile()
    main.enable()
    for future in [executor.submit(_noop) for _ in range(jobs)]:
        future.result()
    main.disable()
    executor.shutdown()
    stats = pstats.Stats(main)
    for profiler in workers:
        stats.add(profiler)
    return stats


def _top(stats: pstats.Stats, jobs: int, count: int) -> list[tuple[str, float, float]]:
    """(function, own microseconds per job, calls per job), most own time first."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, calls, tottime, _ct, _callers) in table.items():
        where = filename.rsplit("/", 2)
        short = "/".join(where[-2:]) if len(where) > 1 else filename
        rows.append((f"{short}:{line} {name}", tottime / jobs * 1e6, calls / jobs))
    rows.sort(key=lambda r: r[1], reverse=True)
    return rows[:count]


# -- report ----------------------------------------------------------------------------------


def _table(chronos_stages: list[Stage], tpe_stages: list[Stage]) -> str:
    lines = ["chronos stage                                                  us/job"]
    lines += [f"{label:<62} {us:6.2f}" for label, us in chronos_stages]
    lines += ["", "ThreadPoolExecutor stage                                       us/job"]
    lines += [f"{label:<62} {us:6.2f}" for label, us in tpe_stages]
    return "\n".join(lines)


def _totals(stages: Iterable[Stage]) -> float:
    return sum(us for label, us in stages if not label.startswith(" "))


def _best_of(repeats: int, n: int) -> tuple[list[Stage], list[Stage]]:
    """Each stage's fastest of ``repeats`` measurements, chronos and TPE alternating."""
    runs: dict[str, list[list[Stage]]] = {"chronos": [], "tpe": []}
    for _ in range(repeats):
        runs["chronos"].append(_chronos_stages(n))
        runs["tpe"].append(_tpe_stages(n))
    best = {
        side: [
            (label, min(run[i][1] for run in measured)) for i, (label, _) in enumerate(measured[0])
        ]
        for side, measured in runs.items()
    }
    return best["chronos"], best["tpe"]


def _profile_report(name: str, stats: pstats.Stats, jobs: int) -> list[str]:
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    calls = sum(entry[1] for entry in table.values()) / jobs
    lines = [
        f"cProfile, {name}, {jobs:,} jobs, all threads: {calls:.1f} function calls/job",
        "  own us/job  calls/job  function (own time includes time blocked or waiting for the GIL)",
    ]
    lines += [f"  {us:10.2f}  {per:9.2f}  {where}" for where, us, per in _top(stats, jobs, 15)]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="per-stage: best of this many")
    parser.add_argument("--runs", type=int, default=5, help="threaded runs for the wall time")
    parser.add_argument("--profile", action="store_true", help="also run case 1 under cProfile")
    args = parser.parse_args(argv)
    n = args.jobs

    chronos_stages, tpe_stages = _best_of(args.repeats, n)
    print(f"Per-stage cost, single thread, best of {args.repeats} x {n:,} jobs (us per job)\n")
    print(_table(chronos_stages, tpe_stages))
    ours_cpu, theirs_cpu = _totals(chronos_stages), _totals(tpe_stages)
    ours_wall, theirs_wall = _walls(n, args.runs)
    print()
    print("                                              chronos      TPE   chronos/TPE")
    print(
        f"single-thread CPU per job (end-to-end sum)   {ours_cpu:7.2f}  {theirs_cpu:7.2f}"
        f"   {ours_cpu / theirs_cpu:5.2f}x"
    )
    print(
        f"case 1 wall time per job, 4 workers (median) {ours_wall:7.2f}  {theirs_wall:7.2f}"
        f"   {ours_wall / theirs_wall:5.2f}x"
    )
    print(
        f"  of which threads (wall - CPU)              {ours_wall - ours_cpu:7.2f}"
        f"  {theirs_wall - theirs_cpu:7.2f}"
    )
    if args.profile:
        for name, make in (
            ("chronos", lambda init: WorkerPool(4, initializer=init)),
            ("ThreadPoolExecutor", lambda init: ThreadPoolExecutor(4, initializer=init)),
        ):
            print()
            print("\n".join(_profile_report(name, _profiled(make, n), n)))


if __name__ == "__main__":
    main()
