"""Dispatcher: sources, rate limiting on a fake clock, backpressure, retries, stop."""

from __future__ import annotations

import itertools
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from chronos import Dispatcher, Job, JobStatus, RetryPolicy, WorkerPool
from chronos.testing import FakeClock
from tests.conftest import Gate, wait_until


def test_dispatches_lists_iterables_and_live_submissions() -> None:
    with WorkerPool(max_workers=2) as pool, Dispatcher(pool) as dispatcher:
        dispatcher.dispatch([Job(abs, (-1,)), Job(abs, (-2,))])
        dispatcher.dispatch(Job(str, (i,)) for i in range(5))
        live = dispatcher.submit(pow, 3, 2)
        urgent = dispatcher.submit(Job(len, ("abc",), timeout=5.0))
    assert live.result() == 9 and urgent.result() == 3
    s = pool.stats.snapshot()
    assert (s.submitted, s.succeeded) == (9, 9)
    assert dispatcher.dispatched == 9


def test_interval_ticker_dispatches_on_a_fixed_grid(clock: FakeClock) -> None:
    started: list[float] = []
    with WorkerPool(max_workers=4, clock=clock) as pool:
        dispatcher = Dispatcher(pool, interval=0.3).start()
        futures = [dispatcher.submit(lambda: started.append(clock.now())) for _ in range(4)]
        wait_until(lambda: len(started) == 1)  # the first goes at once
        for n in range(2, 5):
            assert clock.wait_for_waiters(1)
            clock.advance(0.3)
            wait_until(lambda n=n: len(started) == n)  # type: ignore[misc]
        dispatcher.close()
        assert dispatcher.join(5)
        for f in futures:
            f.result(timeout=5)
    assert started == pytest.approx([1000.0, 1000.3, 1000.6, 1000.9])


def test_rate_limit_applies_to_retries_too(clock: FakeClock) -> None:
    attempts: list[float] = []

    def fail_twice() -> str:
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise RuntimeError("again")
        return "ok"

    policy = RetryPolicy(max_attempts=3, backoff=0.0, jitter=False)
    with WorkerPool(max_workers=1, retry=policy, clock=clock) as pool:
        dispatcher = Dispatcher(pool, interval=10.0).start()
        future = dispatcher.submit(fail_twice)
        wait_until(lambda: len(attempts) == 1)
        # the retry is due at once (backoff 0) but must wait for the next tick
        assert clock.wait_for_waiters(1)
        wait_until(lambda: future.job.status is JobStatus.PENDING)
        assert len(attempts) == 1
        clock.advance(10.0)
        wait_until(lambda: len(attempts) == 2)
        wait_until(lambda: future.job.status is JobStatus.PENDING)
        clock.advance(10.0)
        assert future.result(timeout=5) == "ok"
        dispatcher.close()
        assert dispatcher.join(5)
    assert attempts == [1000.0, 1010.0, 1020.0]


def test_close_and_join_waits_for_retries_to_finish() -> None:
    calls = itertools.count()

    def flaky() -> int:
        n = next(calls)
        if n == 0:
            raise RuntimeError("first fails")
        return n

    with WorkerPool(max_workers=1, retry=RetryPolicy(max_attempts=2, backoff=0.01)) as pool:
        dispatcher = Dispatcher(pool).start()
        future = dispatcher.submit(flaky)
        dispatcher.close()
        assert dispatcher.join(5)
        assert future.done() and future.result() == 1


def test_endless_generator_is_consumed_lazily_with_backpressure(gate: Gate) -> None:
    pulled: list[int] = []

    def endless() -> Iterator[Job[object]]:
        while True:
            pulled.append(len(pulled))
            yield Job(gate.wait)

    pool = WorkerPool(max_workers=2, queue_size=5)
    dispatcher = Dispatcher(pool).start()
    dispatcher.dispatch(endless())
    assert gate.entered(2)
    # 2 running + 5 queued + 1 held by the dispatcher, blocked on the full queue, + 1 read
    # ahead by its reader thread: and not one more.
    wait_until(lambda: pool.statistics().backend.ready == 5 and len(pulled) == 2 + 5 + 1 + 1)
    cancelled = dispatcher.stop()
    assert len(cancelled) == 2 and all(j.status is JobStatus.CANCELLED for j in cancelled)
    pool.shutdown(wait=False, cancel_futures=True)
    gate.open()
    pool.shutdown()
    s = pool.stats.snapshot()
    assert s.submitted == s.finished and s.cancelled == 7


def test_endless_generator_runs_in_bounded_memory() -> None:
    def endless() -> Iterator[Callable[[], None]]:
        while True:
            yield lambda: None

    pool = WorkerPool(max_workers=2, queue_size=100)
    dispatcher = Dispatcher(pool).start()
    tracemalloc.start()
    try:
        dispatcher.dispatch(endless())
        wait_until(lambda: dispatcher.dispatched > 2_000, timeout=30)
        first, _ = tracemalloc.get_traced_memory()
        wait_until(lambda: dispatcher.dispatched > 10_000, timeout=40)
        second, _ = tracemalloc.get_traced_memory()
        # unfinished jobs: at most the queue, the workers and the one the dispatcher holds
        assert pool.statistics().jobs.in_flight <= 100 + 2 + 1
    finally:
        tracemalloc.stop()
        dispatcher.stop()
        pool.shutdown(cancel_futures=True)
    # 8,000 more jobs went through.  A leak of even 500 bytes a job would show as 4 MB; the
    # stats' latency windows (10,000 samples each) legitimately fill by about 0.5 MB meanwhile.
    assert second - first < 4_000_000, (first, second)


def test_stop_wakes_a_dispatcher_waiting_for_its_next_tick(clock: FakeClock) -> None:
    with WorkerPool(max_workers=1, clock=clock) as pool:
        dispatcher = Dispatcher(pool, interval=3600.0).start()
        first = dispatcher.submit(str, 1)
        second = dispatcher.submit(str, 2)
        assert first.result(timeout=5) == "1"
        assert clock.wait_for_waiters(1)
        leftovers = dispatcher.stop()
        assert not dispatcher.thread.is_alive()
        assert second.cancelled() and leftovers == [second.job]


def test_pool_shutdown_closes_its_dispatchers() -> None:
    pool = WorkerPool(max_workers=1)
    dispatcher = Dispatcher(pool).start()
    dispatcher.submit(str, 1).result(timeout=5)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="closed Dispatcher"):
        dispatcher.submit(str, 2)
    assert dispatcher.join(5)


def test_a_failing_source_is_dropped_and_reported() -> None:
    def broken() -> Iterator[Job[object]]:
        yield Job(str, (1,))
        raise OSError("disk gone")

    with WorkerPool(max_workers=1) as pool, Dispatcher(pool) as dispatcher:
        dispatcher.dispatch(broken())
        dispatcher.dispatch([Job(str, (2,))])
    assert [type(e) for e in dispatcher.source_errors] == [OSError]
    assert pool.stats.snapshot().succeeded == 2


def test_submit_from_many_threads() -> None:
    with WorkerPool(max_workers=4) as pool, Dispatcher(pool) as dispatcher:
        results: list[int] = []
        lock = threading.Lock()

        def producer(base: int) -> None:
            for i in range(50):
                f = dispatcher.submit(abs, -(base + i))
                with lock:
                    results.append(f.result(timeout=5))

        threads = [threading.Thread(target=producer, args=(k * 100,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert sorted(results) == sorted(k * 100 + i for k in range(4) for i in range(50))
