"""Statistics snapshots: WorkerPool.statistics() (PoolStatistics), Dispatcher.statistics()
(DispatcherStatistics) and TokenBucket.statistics() (BucketStatistics).

Each is frozen and read at one moment; these tests drive a pool into each state the fields
describe (a job held by a gate, a timeout on a FakeClock, a retry in its backoff, a retry
held for its abandoned thread, a rate-limited Dispatcher) and read them there.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronos import (
    AtomicCounter,
    Attempt,
    Dispatcher,
    Job,
    JobStatus,
    JobTimeoutError,
    Listener,
    RetryPolicy,
    StatsSnapshot,
    TokenBucket,
    WorkerPool,
)
from chronos.backends import BackendStatistics
from chronos.dispatcher import DispatcherStatistics
from chronos.pool import PoolStatistics
from chronos.pool.attempts import COOPERATION_GRACE
from chronos.testing import FakeClock
from chronos.ticker import BucketStatistics
from tests.conftest import Gate, wait_until

REAL_WAIT = 5.0
#: Past an attempt's deadline and its cooperation grace (a FakeClock step, in one go).
PAST_GRACE = 2 * COOPERATION_GRACE


def adds_up(jobs: StatsSnapshot) -> bool:
    return jobs.submitted == jobs.in_flight + jobs.finished


# -- PoolStatistics --------------------------------------------------------------------------


def test_pool_statistics_are_frozen_snapshots() -> None:
    with WorkerPool(2, thread_name_prefix="stats-frozen") as pool:
        before = pool.statistics()
        assert isinstance(before, PoolStatistics)
        assert isinstance(before.backend, BackendStatistics)
        assert isinstance(before.jobs, StatsSnapshot)
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.state = "shut down"  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.backend.ready = 3  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.jobs.submitted = 3  # type: ignore[misc]
        assert pool.submit(abs, -1).result(timeout=REAL_WAIT) == 1
        after = pool.statistics()
    assert before.jobs.submitted == 0  # a snapshot never changes
    assert after.jobs.submitted == 1
    assert (before.name, before.state, before.max_workers) == ("stats-frozen", "running", 2)
    assert (before.workers, before.busy_workers, before.abandoned_threads) == (0, 0, 0)
    assert (before.max_abandoned_threads, before.held_retries) == (2, 0)
    assert before.backend.maxsize == 10_000 and before.backend.kind == "memory"


def test_state_goes_running_then_shutting_down_then_shut_down(gate: Gate) -> None:
    pool = WorkerPool(1)
    future = pool.submit(gate.wait, "done")
    assert gate.entered(1)
    s = pool.statistics()
    assert (s.state, s.max_workers, s.workers, s.busy_workers) == ("running", 1, 1, 1)
    assert (s.jobs.submitted, s.jobs.running) == (1, 1)

    pool.shutdown(wait=False)  # the job holds the shutdown: it drains
    s = pool.statistics()
    assert (s.state, s.workers, s.busy_workers) == ("shutting down", 1, 1)
    assert not s.backend.closed
    with pytest.raises(RuntimeError):
        pool.submit(abs, 1)
    assert not pool.wait_for_shutdown(0)

    gate.open()
    assert pool.wait_for_shutdown(REAL_WAIT)
    assert future.result(timeout=REAL_WAIT) == "done"
    s = pool.statistics()
    assert (s.state, s.workers, s.busy_workers, s.abandoned_threads) == ("shut down", 0, 0, 0)
    assert s.backend.closed and s.backend.ready == 0
    assert (s.jobs.succeeded, s.jobs.in_flight) == (1, 0)


def test_ready_counts_the_jobs_queued_behind_a_busy_worker(gate: Gate) -> None:
    with WorkerPool(1) as pool:
        first = pool.submit(gate.wait, "first")
        assert gate.entered(1)
        rest = [pool.submit(abs, -n) for n in range(1, 4)]
        s = pool.statistics()
        assert (s.workers, s.busy_workers) == (1, 1)  # never more than max_workers
        assert (s.backend.ready, s.backend.waiting_producers) == (3, 0)
        assert (s.jobs.submitted, s.jobs.queued, s.jobs.running) == (4, 3, 1)
        assert adds_up(s.jobs)
        gate.open()
        assert first.result(timeout=REAL_WAIT) == "first"
        assert [f.result(timeout=REAL_WAIT) for f in rest] == [1, 2, 3]
        s = pool.statistics()
        assert (s.backend.ready, s.jobs.succeeded, s.jobs.in_flight) == (0, 4, 0)


def test_a_timed_out_job_leaves_an_abandoned_thread(clock: FakeClock, gate: Gate) -> None:
    pool = WorkerPool(1, timeout=1.0, clock=clock)
    try:
        future = pool.submit(gate.wait)
        assert gate.entered(1)
        s = pool.statistics()
        assert (s.busy_workers, s.abandoned_threads, s.timer_entries) == (1, 0, 1)
        clock.advance(1.0 + PAST_GRACE)  # past the deadline and the cooperation grace
        assert isinstance(future.exception(timeout=REAL_WAIT), JobTimeoutError)
        wait_until(lambda: pool.statistics().abandoned_threads == 1)
        s = pool.statistics()
        assert (s.workers, s.busy_workers, s.max_workers) == (0, 0, 1)  # not replaced: idle
        assert (s.jobs.timed_out, s.jobs.attempt_timeouts) == (1, 1)
        assert (s.jobs.abandoned_threads, s.jobs.abandoned_threads_total) == (1, 1)
        assert adds_up(s.jobs)
        gate.open()  # the hung attempt returns: its thread rejoins the pool
        wait_until(lambda: pool.statistics().abandoned_threads == 0)
        s = pool.statistics()
        assert (s.workers, s.jobs.abandoned_threads, s.jobs.abandoned_threads_total) == (1, 0, 1)
    finally:
        gate.open()
        pool.shutdown()


def test_a_retry_in_its_backoff_is_delayed_in_the_backend(clock: FakeClock) -> None:
    calls = itertools.count(1)

    def fails_once() -> str:
        if next(calls) == 1:
            raise ConnectionError("try again")
        return "ok"

    policy = RetryPolicy(max_attempts=2, backoff=60, jitter=False)
    with WorkerPool(1, retry=policy, clock=clock) as pool:
        future = pool.submit(fails_once)
        wait_until(lambda: pool.statistics().backend.delayed == 1)
        s = pool.statistics()
        assert (s.backend.ready, s.backend.delayed, s.busy_workers) == (0, 1, 0)
        assert (s.jobs.waiting_to_retry, s.jobs.attempts, s.jobs.retries) == (1, 1, 1)
        assert (s.jobs.in_flight, s.jobs.finished) == (1, 0)
        assert adds_up(s.jobs)
        assert future.job.status is JobStatus.RETRY_WAIT
        clock.advance(60.0)
        assert future.result(timeout=REAL_WAIT) == "ok"
        s = pool.statistics()
        assert (s.backend.delayed, s.backend.ready) == (0, 0)
        assert (s.jobs.succeeded, s.jobs.attempts, s.jobs.retries, s.jobs.in_flight) == (
            1,
            2,
            1,
            0,
        )
        assert adds_up(s.jobs)


def test_a_retry_is_held_for_its_abandoned_thread(clock: FakeClock, gate: Gate) -> None:
    calls = itertools.count(1)

    def hangs_once() -> str:
        if next(calls) == 1:
            gate.wait()
        return "ok"

    policy = RetryPolicy(max_attempts=2, backoff=0.0, jitter=False)
    pool = WorkerPool(1, timeout=1.0, retry=policy, wait_for_abandoned=True, clock=clock)
    try:
        future = pool.submit(hangs_once)
        assert gate.entered(1)
        clock.advance(1.0 + PAST_GRACE)
        wait_until(lambda: pool.statistics().held_retries == 1)
        s = pool.statistics()
        assert (s.abandoned_threads, s.backend.ready, s.backend.delayed) == (1, 0, 0)
        assert (s.jobs.waiting_to_retry, s.jobs.attempt_timeouts, s.jobs.retries) == (1, 1, 1)
        assert adds_up(s.jobs)
        assert future.job.status is JobStatus.RETRY_WAIT
        gate.open()  # the first attempt's thread returns: the retry may go
        assert future.result(timeout=REAL_WAIT) == "ok"
        s = pool.statistics()
        assert (s.held_retries, s.jobs.attempts, s.jobs.succeeded) == (0, 2, 1)
        assert adds_up(s.jobs)
    finally:
        gate.open()
        pool.shutdown()


class Counting(Listener):
    def __init__(self) -> None:
        self.started = AtomicCounter()
        self.succeeded = AtomicCounter()

    def job_started(self, job: Job[Any], attempt: Attempt) -> None:
        self.started.increment()

    def job_succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        self.succeeded.increment()


def test_a_pool_takes_listeners_and_they_agree_with_its_statistics() -> None:
    counting = Counting()
    with WorkerPool(2, listeners=[counting]) as pool:
        assert pool.listeners == (counting,)
        futures = [pool.submit(abs, -n) for n in range(6)]
        assert [f.result(timeout=REAL_WAIT) for f in futures] == list(range(6))
        s = pool.statistics()
    assert counting.succeeded.value == s.jobs.succeeded == 6
    assert counting.started.value == s.jobs.attempts == 6


# -- DispatcherStatistics ----------------------------------------------------------------------


def test_dispatcher_statistics_through_its_life(clock: FakeClock, gate: Gate) -> None:
    pool = WorkerPool(2, clock=clock)
    try:
        dispatcher = Dispatcher(pool, rate=1.0, name="stats-dispatcher")
        s = dispatcher.statistics()
        assert s == DispatcherStatistics(
            name="stats-dispatcher",
            state="new",
            dispatched=0,
            outstanding=0,
            retries_waiting=0,
            submitted_waiting=0,
            read_ahead=0,
            sources=0,
            bucket=BucketStatistics(rate=1.0, burst=1, granted=0, next_ready=1000.0),
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.state = "open"  # type: ignore[misc]

        futures = [dispatcher.submit(gate.wait, n) for n in range(3)]
        s = dispatcher.statistics()
        assert (s.state, s.submitted_waiting, s.outstanding, s.dispatched) == ("new", 3, 3, 0)

        dispatcher.start()
        # The first goes at once; the second waits for its token on the clock (the third
        # is still in the intake).
        wait_until(lambda: dispatcher.dispatched == 1 and clock.waiters == 1)
        s = dispatcher.statistics()
        assert (s.state, s.dispatched, s.submitted_waiting, s.outstanding) == ("open", 1, 1, 3)
        assert s.bucket == BucketStatistics(rate=1.0, burst=1, granted=1, next_ready=1001.0)

        clock.advance(1.0)
        wait_until(lambda: dispatcher.dispatched == 2 and clock.waiters == 1)
        s = dispatcher.statistics()
        assert (s.dispatched, s.submitted_waiting, s.outstanding) == (2, 0, 3)
        assert s.bucket is not None
        assert (s.bucket.granted, s.bucket.next_ready) == (2, 1002.0)

        clock.advance(1.0)
        wait_until(lambda: dispatcher.dispatched == 3)
        assert gate.entered(2)
        assert pool.statistics().backend.ready == 1  # two workers busy, one job queued
        s = dispatcher.statistics()
        assert (s.dispatched, s.outstanding) == (3, 3)
        assert s.bucket is not None and s.bucket.granted == 3

        gate.open()
        assert [f.result(timeout=REAL_WAIT) for f in futures] == [0, 1, 2]
        wait_until(lambda: dispatcher.statistics().outstanding == 0)

        dispatcher.close()
        assert dispatcher.statistics().state == "closed"
        assert dispatcher.join(REAL_WAIT)
        s = dispatcher.statistics()
        assert (s.state, s.dispatched, s.outstanding) == ("closed", 3, 0)
    finally:
        gate.open()
        pool.shutdown()
    assert dispatcher.statistics().state == "stopped"  # the pool's shutdown stops it


def test_a_stopped_dispatcher_cancels_what_waits_for_a_token(clock: FakeClock) -> None:
    with WorkerPool(1, clock=clock) as pool:
        dispatcher = Dispatcher(pool, interval=10.0).start()
        futures = [dispatcher.submit(abs, -n) for n in range(3)]
        wait_until(lambda: dispatcher.dispatched == 1 and clock.waiters == 1)
        assert futures[0].result(timeout=REAL_WAIT) == 0
        left = dispatcher.stop(REAL_WAIT)
        assert [job.status for job in left] == [JobStatus.CANCELLED] * 2
        s = dispatcher.statistics()
        assert (s.state, s.dispatched, s.outstanding, s.submitted_waiting) == ("stopped", 1, 0, 0)
        assert s.bucket is not None
        assert (s.bucket.rate, s.bucket.granted, s.bucket.next_ready) == (0.1, 1, 1010.0)
        assert all(f.cancelled() for f in futures[1:])


def test_a_dispatcher_without_a_rate_has_no_bucket() -> None:
    with WorkerPool(1) as pool:
        dispatcher = Dispatcher(pool)
        assert dispatcher.statistics().bucket is None
        dispatcher.start()
        assert dispatcher.submit(abs, -2).result(timeout=REAL_WAIT) == 2
        wait_until(lambda: dispatcher.statistics().outstanding == 0)
        s = dispatcher.statistics()
        assert (s.state, s.dispatched, s.bucket) == ("open", 1, None)
        dispatcher.close()
        assert dispatcher.join(REAL_WAIT)


# -- BucketStatistics --------------------------------------------------------------------------


def test_bucket_statistics_count_grants_and_say_when_the_next_is_ready() -> None:
    bucket = TokenBucket(2.0, burst=2, start=100.0)
    assert bucket.statistics() == BucketStatistics(2.0, 2, 0, 99.5)  # full: ready already
    assert bucket.try_acquire(100.0) == 0.0
    assert bucket.statistics() == BucketStatistics(2.0, 2, 1, 100.0)
    assert bucket.try_acquire(100.0) == 0.0
    assert bucket.statistics() == BucketStatistics(2.0, 2, 2, 100.5)
    assert bucket.try_acquire(100.0) == pytest.approx(0.5)  # refused: nothing counted
    assert bucket.statistics().granted == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        bucket.statistics().granted = 0  # type: ignore[misc]


def test_an_interval_bucket_statistics() -> None:
    bucket = TokenBucket.every(0.25, start=10.0)
    s = bucket.statistics()
    assert (s.rate, s.burst, s.granted, s.next_ready) == (4.0, 1, 0, 10.0)
    assert bucket.try_acquire(10.0) == 0.0
    assert bucket.statistics().next_ready == 10.25


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=100.0),
    burst=st.integers(1, 5),
    steps=st.lists(st.floats(min_value=0.0, max_value=3.0), max_size=40),
)
def test_bucket_statistics_agree_with_its_answers(
    rate: float, burst: int, steps: list[float]
) -> None:
    now = 50.0
    bucket = TokenBucket(rate, burst, start=now)
    granted = 0
    for step in steps:
        now += step
        before = bucket.statistics()
        wait = bucket.try_acquire(now)
        after = bucket.statistics()
        assert (after.rate, after.burst) == (rate, burst)
        if wait == 0.0:
            granted += 1
            assert before.next_ready <= now + 1e-9  # a token was ready
        else:
            assert wait == pytest.approx(before.next_ready - now)
            assert after == before  # a refusal changes nothing
        assert after.granted == granted
        # No more than the rate allows since the start, plus the burst.
        assert granted <= rate * (now - 50.0) + burst + 1e-6
