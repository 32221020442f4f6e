"""One measured run of each side of case 10 (:mod:`benchmarks.timeouts`, which explains it).

- :func:`chronos_run` and :func:`floor_run`: the sustained runs, every job with its own
  timeout, on a pool of started threads;
- :func:`chronos_burst`: attempts that all fall due at one deadline (given to them by a
  :class:`HeldClock`) on a pool of started threads; :func:`floor_burst`: one thread waits
  out that deadline and fails as many plain Futures.

Each returns its metrics: lateness percentiles in ms, timeouts/s, and for chronos how many
jobs finished before their timeout was noticed and how many timeouts the job noticed itself.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import chronos
from benchmarks.harness import Metrics, percentile, quiet_logger, wait_until
from chronos import SYSTEM_CLOCK, AttemptOutcome, Job, JobFuture, JobTimeoutError, WorkerPool

__all__ = ["HeldClock", "chronos_burst", "chronos_run", "floor_burst", "floor_run"]

#: How long a non-cooperative job of the sustained runs overruns its timeout.
OVERRUN = 0.050
#: The burst's jobs must all have started this long before their shared deadline.
SETUP_MARGIN = 0.1
#: Real seconds a run may take beyond its expected length before it counts as stuck.
SLACK = 60.0


class _Countdown:
    """``done`` is set once :meth:`tick` was called ``count`` times.

    Thread-safety: :meth:`tick` may be called from any thread; ``_lock`` guards ``_left``.
    """

    def __init__(self, count: int) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()  # guards _left
        self._left = count
        if count == 0:
            self.done.set()

    def tick(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self.done.set()


class _Stamps:
    """Per job of a chronos run: its attempt's deadline, the moment its Future was resolved,
    and the ``JobTimeoutError`` the job raised itself (cooperative jobs), if any.

    Thread-safety: each index is written by one thread (the job's, or the one resolving its
    Future); a list item store is atomic.  ``all_seen`` counts the resolved Futures.
    """

    def __init__(self, count: int) -> None:
        self.deadline: list[float] = [math.nan] * count
        self.seen: list[float] = [math.nan] * count
        self.raised: list[BaseException | None] = [None] * count
        self.all_seen = _Countdown(count)

    def on_done(self, index: int, _future: Future[Any]) -> None:
        """The done-callback of job ``index``."""
        self.seen[index] = time.monotonic()
        self.all_seen.tick()

    def lateness(self) -> list[float]:
        late = [seen - deadline for seen, deadline in zip(self.seen, self.deadline, strict=True)]
        if any(math.isnan(x) for x in late):
            raise RuntimeError("a job's deadline or the moment it was seen is missing")
        return late


def _deadline(ctx: chronos.JobContext) -> float:
    if ctx.deadline is None:
        raise RuntimeError("a job of this case ran without a timeout")
    return ctx.deadline


def _overrun(stamps: _Stamps, never: threading.Event, index: int, timeout: float) -> None:
    """The non-cooperative job: it ignores chronos and returns ``OVERRUN`` after its timeout."""
    stamps.deadline[index] = _deadline(chronos.current_job())
    never.wait(timeout + OVERRUN)


def _cooperate(stamps: _Stamps, index: int) -> None:
    """The cooperative job: it waits until its context says stop, then steps out."""
    ctx = chronos.current_job()
    stamps.deadline[index] = _deadline(ctx)
    while not ctx.wait():
        pass
    try:
        ctx.check()
    except JobTimeoutError as exc:
        stamps.raised[index] = exc  # the attempt ends with it if the job beats the timer
        raise


def _outcomes(futures: Sequence[JobFuture[None]], stamps: _Stamps) -> Metrics:
    """Jobs never marked timed out (they finished first), and timeouts the job noticed."""
    unnoticed = by_job = 0
    for future, own in zip(futures, stamps.raised, strict=True):
        error = future.exception(timeout=0)
        if not isinstance(error, JobTimeoutError):
            unnoticed += 1
        elif error is own:
            by_job += 1
    return {"unnoticed": float(unnoticed), "noticed_by_job": float(by_job)}


def _ended_minus_deadline(futures: Sequence[JobFuture[None]]) -> list[float]:
    """``attempt.ended - attempt.deadline`` of the timed-out attempts (case 7's measure)."""
    delays = []
    for future in futures:
        attempt = future.job.attempts[-1]
        if attempt.outcome is AttemptOutcome.TIMED_OUT:
            assert attempt.ended is not None and attempt.deadline is not None
            delays.append(attempt.ended - attempt.deadline)
    return delays


def _start_threads(executor: Executor, workers: int) -> None:
    """Make ``executor`` start ``workers`` threads now: as many jobs that wait for each other.

    Both executors start a thread per submission while none is idle.
    """
    inside = _Countdown(workers)
    release = threading.Event()

    def hold() -> None:
        inside.tick()
        release.wait(SLACK)

    futures = [executor.submit(hold) for _ in range(workers)]
    started = inside.done.wait(SLACK)
    release.set()
    for future in futures:
        future.result()
    if not started:
        raise RuntimeError(f"{workers} threads did not start within {SLACK:g} s")


def _finish(pool: WorkerPool) -> None:
    pool.shutdown(wait=True)
    # Abandoned threads return OVERRUN after their timeout; let them go before the next run.
    wait_until(lambda: not pool.threads(), 10.0, "abandoned threads to exit")


def _summary(late: Sequence[float], first_submit: float, last_seen: float) -> Metrics:
    return {
        "p50_ms": percentile(late, 50) * 1e3,
        "p99_ms": percentile(late, 99) * 1e3,
        "max_ms": max(late) * 1e3,
        "timeouts_per_s": len(late) / (last_seen - first_submit),
    }


def chronos_run(lengths: Sequence[float], workers: int, *, cooperative: bool) -> Metrics:
    """One sustained run: job ``i`` overruns its timeout ``lengths[i]``."""
    count = len(lengths)
    stamps = _Stamps(count)
    never = threading.Event()
    pool = WorkerPool(workers, max_abandoned_threads=workers, queue_size=0, logger=quiet_logger())
    futures: list[JobFuture[None]] = []
    try:
        _start_threads(pool, workers)
        budget = sum(lengths) / workers + max(lengths) + SLACK  # a bound on the makespan
        first_submit = time.monotonic()
        for index, timeout in enumerate(lengths):
            if cooperative:
                job = Job(_cooperate, (stamps, index), timeout=timeout)
            else:
                job = Job(_overrun, (stamps, never, index, timeout), timeout=timeout)
            job.future.add_done_callback(partial(stamps.on_done, index))
            futures.append(pool.submit_job(job))
        if not stamps.all_seen.done.wait(budget):
            raise TimeoutError(f"{count} jobs not all ended within {budget:.0f} s")
    finally:
        _finish(pool)
    metrics = _summary(stamps.lateness(), first_submit, max(stamps.seen))
    metrics["ended_minus_deadline_p99_ms"] = percentile(_ended_minus_deadline(futures), 99) * 1e3
    metrics.update(_outcomes(futures, stamps))
    return metrics


def floor_run(lengths: Sequence[float], workers: int) -> Metrics:
    """The same timeouts done by the OS: ``lock.acquire(timeout=t)`` on a held lock."""
    count = len(lengths)
    late = [math.nan] * count
    woke = [math.nan] * count
    held = threading.Lock()
    held.acquire()

    def wait_out(index: int, timeout: float) -> None:
        start = time.monotonic()
        if held.acquire(timeout=timeout):  # cannot happen: the lock stays held
            held.release()
            raise RuntimeError("the floor's lock was free")
        woke[index] = now = time.monotonic()
        late[index] = now - (start + timeout)

    try:
        with ThreadPoolExecutor(workers) as executor:
            _start_threads(executor, workers)
            first_submit = time.monotonic()
            futures = [executor.submit(wait_out, i, t) for i, t in enumerate(lengths)]
        for future in futures:
            future.result()
    finally:
        held.release()
    return _summary(late, first_submit, max(woke))


class HeldClock:
    """``time.monotonic``, except that while held every reading is the moment it was held.

    Attempts that start while it is held all get the same deadline (the held reading plus
    their timeout).  Released, it reads the real monotonic time again.  Its waits are the
    system clock's, in real time.

    Thread-safety: :meth:`hold` and :meth:`release` are called by one thread; :meth:`now`
    may be called from any thread (it reads ``_held`` once, an atomic attribute read).
    """

    def __init__(self) -> None:
        self._held: float | None = None

    def hold(self) -> float:
        """Hold the current reading until :meth:`release`; return it."""
        self._held = held = time.monotonic()
        return held

    def release(self) -> None:
        self._held = None

    def now(self) -> float:
        held = self._held
        return time.monotonic() if held is None else held

    def wait_until(self, wakeup: threading.Event, deadline: float | None) -> bool:
        return SYSTEM_CLOCK.wait_until(wakeup, deadline)


def _all_started(inside: _Countdown, deadline: float) -> None:
    """Return once every burst job started, ``SETUP_MARGIN`` before their deadline.

    Raises:
        RuntimeError: they did not: the burst's timeout is too short for this machine.
    """
    in_time = inside.done.wait(max(0.0, deadline - SETUP_MARGIN - time.monotonic()))
    if not in_time or time.monotonic() > deadline - SETUP_MARGIN:
        raise RuntimeError(
            f"the burst's jobs did not all start {SETUP_MARGIN:g} s before their deadline; "
            "give them a longer burst_timeout"
        )


def _burst_summary(late: Sequence[float]) -> Metrics:
    all_seen = max(late)
    return {
        "all_ms": all_seen * 1e3,
        "timeouts_per_s": len(late) / all_seen if all_seen > 0 else math.inf,
        "p50_ms": percentile(late, 50) * 1e3,
        "p99_ms": percentile(late, 99) * 1e3,
    }


def chronos_burst(count: int, timeout: float, abandoned: int) -> Metrics:
    """``count`` attempts with one deadline on ``WorkerPool(count)``: until all are seen.

    The jobs are non-cooperative, and overrun until every timeout was seen, so that none
    finishes first however late the timer is.
    """
    clock = HeldClock()
    stamps = _Stamps(count)
    inside = _Countdown(count)
    never = threading.Event()

    def overrun(index: int) -> None:
        inside.tick()
        _overrun(stamps, never, index, SLACK)  # until never.set(), below

    pool = WorkerPool(count, max_abandoned_threads=abandoned, clock=clock, logger=quiet_logger())
    futures: list[JobFuture[None]] = []
    try:
        _start_threads(pool, count)  # so that the attempts start fast once the clock is held
        held = clock.hold()
        deadline = held + timeout
        for index in range(count):
            job = Job(overrun, (index,), timeout=timeout)
            job.future.add_done_callback(partial(stamps.on_done, index))
            futures.append(pool.submit_job(job))
        try:
            _all_started(inside, deadline)
        finally:
            clock.release()
        setup = time.monotonic() - held
        if not stamps.all_seen.done.wait(timeout + SLACK):
            raise TimeoutError(f"{count} burst timeouts not all seen within {SLACK:g} s")
    finally:
        clock.release()
        never.set()  # the jobs overran until now
        _finish(pool)
    if any(d != deadline for d in stamps.deadline):
        raise RuntimeError("the burst's attempts did not share one deadline")
    metrics = _burst_summary(stamps.lateness())
    metrics["setup_s"] = setup
    metrics.update(_outcomes(futures, stamps))
    return metrics


def floor_burst(count: int, timeout: float) -> Metrics:
    """One thread waits out the deadline on the OS, then fails ``count`` plain Futures."""
    futures: list[Future[None]] = [Future() for _ in range(count)]
    seen = [math.nan] * count
    for index, future in enumerate(futures):
        future.add_done_callback(partial(_stamp, seen, index))
    held = threading.Lock()
    held.acquire()

    def expire(deadline: float) -> None:
        if held.acquire(timeout=max(0.0, deadline - time.monotonic())):
            held.release()
            raise RuntimeError("the floor's lock was free")
        for future in futures:
            future.set_exception(TimeoutError("timed out"))

    deadline = time.monotonic() + timeout
    timer = threading.Thread(target=expire, args=(deadline,), name="floor-timer")
    timer.start()
    timer.join(timeout + SLACK)
    held.release()
    if timer.is_alive() or any(math.isnan(x) for x in seen):
        raise RuntimeError("the floor's timer did not fail every Future")
    return _burst_summary([x - deadline for x in seen])


def _stamp(seen: list[float], index: int, _future: Future[None]) -> None:
    seen[index] = time.monotonic()
