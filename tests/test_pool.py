"""WorkerPool as a ThreadPoolExecutor replacement, plus timeouts and retries."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.thread import BrokenThreadPool

import pytest

from chronos import (
    AttemptOutcome,
    Job,
    JobFuture,
    JobStatus,
    JobTimeoutError,
    NonRetryableError,
    RetryPolicy,
    WorkerPool,
)
from chronos.pool.attempts import COOPERATION_GRACE
from chronos.testing import FakeClock
from tests.conftest import Gate, wait_until


def adds_up(pool: WorkerPool) -> None:
    s = pool.stats.snapshot()
    assert s.submitted == s.in_flight + s.finished, s


# -- drop-in for ThreadPoolExecutor ----------------------------------------------------------


def test_submit_returns_a_future_with_the_result() -> None:
    with WorkerPool(max_workers=2) as pool:
        future = pool.submit(pow, 2, 10)
        assert isinstance(future, cf.Future)
        assert future.result(timeout=5) == 1024
    adds_up(pool)


def test_map_keeps_order_and_honours_timeout(gate: Gate) -> None:
    with WorkerPool(max_workers=4) as pool:
        assert list(pool.map(lambda x, y: x * y, range(10), range(10))) == [
            i * i for i in range(10)
        ]
        with pytest.raises(cf.TimeoutError):
            next(iter(pool.map(gate.wait, [2], timeout=0.05)))
        gate.open()


def test_futures_work_with_wait_and_as_completed() -> None:
    with WorkerPool(max_workers=3) as pool:
        futures = [pool.submit(abs, -i) for i in range(20)]
        done, not_done = cf.wait(futures, timeout=5)
        assert len(done) == 20 and not not_done
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=5)) == list(range(20))


def test_exceptions_propagate_to_the_future_like_tpe() -> None:
    def boom() -> None:
        raise KeyError("nope")

    with WorkerPool(max_workers=1) as pool:
        future = pool.submit(boom)
        with pytest.raises(KeyError, match="nope"):
            future.result(timeout=5)
        assert future.job.status is JobStatus.FAILED
        assert len(future.job.attempts) == 1  # no retry policy: one attempt, as TPE


@pytest.mark.parametrize(
    "exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), BaseException("custom")]
)
def test_base_exceptions_fail_the_job_but_never_kill_the_worker(exc: BaseException) -> None:
    def raise_it() -> None:
        raise exc

    with WorkerPool(max_workers=1, retry=RetryPolicy(max_attempts=5, backoff=0)) as pool:
        bad = pool.submit(raise_it)
        with pytest.raises(type(exc)):
            bad.result(timeout=5)
        assert len(bad.job.attempts) == 1  # never retried
        assert pool.submit(lambda: "alive").result(timeout=5) == "alive"
        assert len(pool.threads()) == 1  # the same single worker survived


def test_submit_after_shutdown_raises_runtime_error() -> None:
    pool = WorkerPool(max_workers=1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        pool.submit(print)


def test_shutdown_is_idempotent_and_waits_for_queued_work(gate: Gate) -> None:
    pool = WorkerPool(max_workers=1)
    first = pool.submit(gate.wait, "a")
    queued = [pool.submit(str, i) for i in range(5)]
    assert gate.entered(1)
    stopper = threading.Thread(target=pool.shutdown)
    stopper.start()
    gate.open()
    stopper.join(5)
    assert not stopper.is_alive()
    pool.shutdown()
    assert first.result() == "a"
    assert [f.result() for f in queued] == [str(i) for i in range(5)]
    assert pool.threads() == []


def test_shutdown_cancel_futures_cancels_queued_jobs(gate: Gate) -> None:
    pool = WorkerPool(max_workers=1)
    running = pool.submit(gate.wait, 1)
    queued = [pool.submit(str, i) for i in range(3)]
    assert gate.entered(1)
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert [j.id for j in pool.unfinished_jobs()] == [f.job.id for f in queued]
    gate.open()
    assert running.result(timeout=5) == 1
    pool.shutdown()
    adds_up(pool)
    assert pool.stats.snapshot().cancelled == 3


def test_initializer_runs_in_every_worker_and_failure_breaks_the_pool() -> None:
    seen: list[str] = []
    with WorkerPool(max_workers=2, initializer=seen.append, initargs=("x",)) as pool:
        list(pool.map(abs, range(20)))
    assert seen and set(seen) == {"x"}

    def fail() -> None:
        raise ValueError("init failed")

    pool = WorkerPool(max_workers=1, initializer=fail)
    future = pool.submit(abs, 1)
    with pytest.raises(BrokenThreadPool):
        future.result(timeout=5)
    with pytest.raises(BrokenThreadPool):
        pool.submit(abs, 1)
    pool.shutdown()
    adds_up(pool)


def test_future_cancel_of_a_queued_job_moves_the_job_and_stats(gate: Gate) -> None:
    with WorkerPool(max_workers=1) as pool:
        pool.submit(gate.wait)
        assert gate.entered(1)
        queued = pool.submit(str, 1)
        assert queued.cancel()
        assert queued.cancelled() and queued.job.status is JobStatus.CANCELLED
        assert pool.stats.snapshot().cancelled == 1
        gate.open()
    assert queued.job.attempts == []


def test_future_cancel_of_a_running_job_is_refused(gate: Gate) -> None:
    with WorkerPool(max_workers=1) as pool:
        running = pool.submit(gate.wait, 5)
        assert gate.entered(1)
        assert running.running()
        assert not running.cancel()
        gate.open()
        assert running.result(timeout=5) == 5


def test_jobs_submitted_from_a_worker_never_block_on_a_full_queue() -> None:
    with WorkerPool(max_workers=1, queue_size=1) as pool:

        def fan_out() -> list[cf.Future[int]]:
            return [pool.submit(abs, -i) for i in range(10)]

        children = pool.submit(fan_out).result(timeout=5)
        assert [c.result(timeout=5) for c in children] == list(range(10))


def test_a_job_can_be_submitted_once() -> None:
    job = Job(abs, (-1,))
    clone = job.clone()
    with WorkerPool(max_workers=1) as pool:
        pool.submit_job(job)
        with pytest.raises(ValueError, match="already submitted"):
            pool.submit_job(job)
        assert job.future.result(timeout=5) == 1
        assert pool.submit_job(clone).result(timeout=5) == 1 and clone.id != job.id
    # A finished job released its callable and arguments (only a cancelled one keeps them).
    with pytest.raises(RuntimeError, match="released its callable"):
        job.clone()


# -- timeouts ----------------------------------------------------------------------------------


def test_a_hung_job_is_timed_out_at_its_deadline_and_its_slot_freed(
    clock: FakeClock, gate: Gate
) -> None:
    with WorkerPool(max_workers=1, timeout=2.0, clock=clock) as pool:
        hung = pool.submit(gate.wait)
        assert gate.entered(1)
        clock.advance(1.999)
        assert not hung.done()
        clock.advance(0.001)
        with pytest.raises(JobTimeoutError, match="exceeded its 2s timeout"):
            hung.result(timeout=5)
        attempt = hung.job.attempts[0]
        assert attempt.outcome is AttemptOutcome.TIMED_OUT and attempt.ended == attempt.deadline
        assert pool.stats.snapshot().abandoned_threads_total == 0  # not yet: it may return
        clock.advance(COOPERATION_GRACE)
        # the single slot was freed: a quick job runs while the hung thread still hangs
        assert pool.submit(str, "next").result(timeout=5) == "next"
        s = pool.stats.snapshot()
        assert (s.timed_out, s.abandoned_threads, s.abandoned_threads_total) == (1, 1, 1)
        gate.open()


def test_four_hung_jobs_do_not_delay_forty_quick_ones(gate: Gate, clock: FakeClock) -> None:
    with WorkerPool(max_workers=4, timeout=1.0, clock=clock) as pool:
        hung = [pool.submit(gate.wait) for _ in range(4)]
        assert gate.entered(4)
        quick = [pool.submit(abs, -i) for i in range(40)]
        clock.advance(1.0)
        assert all(isinstance(f.exception(timeout=5), JobTimeoutError) for f in hung)
        clock.advance(COOPERATION_GRACE)
        assert [f.result(timeout=5) for f in quick] == list(range(40))
        assert all(isinstance(f.exception(timeout=5), JobTimeoutError) for f in hung)
        assert gate.inside == 4  # the hung ones are still hanging
        gate.open()
    assert pool.stats.snapshot().abandoned_threads_total == 4


def test_a_late_result_from_an_abandoned_attempt_is_dropped(gate: Gate, clock: FakeClock) -> None:
    with WorkerPool(max_workers=1, timeout=1.0, clock=clock) as pool:
        future = pool.submit(gate.wait, "late")
        assert gate.entered(1)
        clock.advance(1.0)
        assert isinstance(future.exception(timeout=5), JobTimeoutError)
        gate.open()
    assert future.job.status is JobStatus.TIMED_OUT
    assert future.job.attempts[0].error is not None
    assert pool.stats.snapshot().abandoned_threads == 0  # it returned, and was counted out


def test_abandoned_threads_are_capped(gate: Gate, clock: FakeClock) -> None:
    with WorkerPool(max_workers=1, timeout=1.0, max_abandoned_threads=1, clock=clock) as pool:
        first = pool.submit(gate.wait)
        assert gate.entered(1)
        clock.advance(1.0)
        assert isinstance(first.exception(timeout=5), JobTimeoutError)
        clock.advance(COOPERATION_GRACE)
        second = pool.submit(gate.wait)  # runs on the replacement thread
        assert gate.entered(2)
        clock.advance(1.0)
        assert isinstance(second.exception(timeout=5), JobTimeoutError)
        clock.advance(COOPERATION_GRACE)
        third = pool.submit(str, 3)  # cap reached: no third thread until one returns
        workers = [t for t in pool.threads() if t.name.removeprefix(pool.name + "_").isdigit()]
        assert len(workers) <= 2
        assert not third.done()
        gate.open()
        assert third.result(timeout=5) == "3"


def test_job_timeout_overrides_pool_timeout(clock: FakeClock, gate: Gate) -> None:
    with WorkerPool(max_workers=2, timeout=10.0, clock=clock) as pool:
        short = pool.submit_job(Job(gate.wait, timeout=1.0))
        long = pool.submit(gate.wait)
        assert gate.entered(2)
        clock.advance(1.0)
        assert isinstance(short.exception(timeout=5), JobTimeoutError)
        assert not long.done()
        gate.open()
        assert long.result(timeout=5) is None


def test_interrupt_on_timeout_stops_a_pure_python_loop() -> None:
    stop_spinning = threading.Event()

    def spin() -> None:
        while not stop_spinning.is_set():
            pass

    with WorkerPool(max_workers=1, timeout=0.05, interrupt_on_timeout=True) as pool:
        future = pool.submit(spin)
        assert isinstance(future.exception(timeout=5), JobTimeoutError)
        assert pool.submit(str, 1).result(timeout=5) == "1"
        deadline = time.monotonic() + 5
        while pool.stats.snapshot().abandoned_threads and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.stats.snapshot().abandoned_threads == 0  # the interrupt ended the loop
    stop_spinning.set()


# -- retries -----------------------------------------------------------------------------------


def test_failures_are_retried_with_backoff_until_success(clock: FakeClock) -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "ok"

    policy = RetryPolicy(max_attempts=3, backoff=1.0, jitter=False)
    with WorkerPool(max_workers=1, retry=policy, clock=clock) as pool:
        future = pool.submit(flaky)
        wait_until(lambda: future.job.status is JobStatus.RETRY_WAIT)
        clock.advance(1.0)
        wait_until(lambda: len(calls) == 2 and future.job.status is JobStatus.RETRY_WAIT)
        clock.advance(1.999)
        assert len(calls) == 2
        clock.advance(0.001)
        assert future.result(timeout=5) == "ok"
    assert [b - a for a, b in itertools.pairwise(calls)] == [1.0, 2.0]
    s = pool.stats.snapshot()
    assert (s.attempts, s.retries, s.succeeded) == (3, 2, 1)


def test_retries_give_up_with_the_last_error() -> None:
    def always() -> None:
        raise ValueError("still broken")

    with WorkerPool(max_workers=1, retry=RetryPolicy(max_attempts=3, backoff=0)) as pool:
        future = pool.submit(always)
        with pytest.raises(ValueError, match="still broken"):
            future.result(timeout=5)
    assert [a.outcome for a in future.job.attempts] == [AttemptOutcome.FAILED] * 3
    assert future.job.status is JobStatus.FAILED


def test_non_retryable_errors_fail_at_once() -> None:
    def refuse() -> None:
        raise NonRetryableError("bad payload")

    with WorkerPool(max_workers=1, retry=RetryPolicy(max_attempts=5, backoff=0)) as pool:
        future = pool.submit(refuse)
        with pytest.raises(NonRetryableError, match="bad payload"):
            future.result(timeout=5)
    assert len(future.job.attempts) == 1


def test_timed_out_attempts_are_retried(gate: Gate, clock: FakeClock) -> None:
    outcomes: Iterator[Callable[[], object]] = iter([gate.wait, lambda: "second time lucky"])

    def sometimes_hangs() -> object:
        return next(outcomes)()

    policy = RetryPolicy(max_attempts=2, backoff=0.5, jitter=False)
    with WorkerPool(max_workers=1, timeout=1.0, retry=policy, clock=clock) as pool:
        future = pool.submit(sometimes_hangs)
        assert gate.entered(1)
        clock.advance(1.0)
        wait_until(lambda: future.job.status is JobStatus.RETRY_WAIT)
        clock.advance(0.5)
        assert future.result(timeout=5) == "second time lucky"
        gate.open()
    assert [a.outcome for a in future.job.attempts] == [
        AttemptOutcome.TIMED_OUT,
        AttemptOutcome.SUCCEEDED,
    ]


def test_one_worker_is_not_held_by_a_job_in_backoff(clock: FakeClock) -> None:
    def fail_once(state: list[int]) -> str:
        state.append(1)
        if len(state) == 1:
            raise RuntimeError("first try fails")
        return "done"

    policy = RetryPolicy(max_attempts=2, backoff=60.0, jitter=False)
    with WorkerPool(max_workers=1, retry=policy, clock=clock) as pool:
        slow = pool.submit(fail_once, [])
        wait_until(lambda: slow.job.status is JobStatus.RETRY_WAIT)
        others = [pool.submit(abs, -i) for i in range(10)]
        # No clock advance: the backoff has 60 s to go, yet the others all finish.
        assert [f.result(timeout=5) for f in others] == list(range(10))
        assert slow.job.status is JobStatus.RETRY_WAIT
        clock.advance(60.0)
        assert slow.result(timeout=5) == "done"


def test_shutdown_does_not_wait_for_backoff_when_cancelling(clock: FakeClock) -> None:
    def fail() -> None:
        raise RuntimeError("x")

    pool = WorkerPool(
        max_workers=1, retry=RetryPolicy(max_attempts=2, backoff=3600, jitter=False), clock=clock
    )
    future = pool.submit(fail)
    wait_until(lambda: future.job.status is JobStatus.RETRY_WAIT)
    pool.shutdown(cancel_futures=True)
    assert future.cancelled()
    assert pool.unfinished_jobs() == [future.job]
    adds_up(pool)


def test_grace_period_cancels_running_jobs_and_abandons_their_threads(gate: Gate) -> None:
    pool = WorkerPool(max_workers=2)
    running: list[JobFuture[object]] = [pool.submit(gate.wait) for _ in range(2)]
    queued = pool.submit(gate.wait)
    assert gate.entered(2)
    pool.shutdown(cancel_futures=True, grace=0.05)
    assert all(f.cancelled() for f in [*running, queued])
    s = pool.stats.snapshot()
    assert (s.cancelled, s.abandoned_threads, s.in_flight) == (3, 2, 0)
    assert {j.id for j in pool.unfinished_jobs()} == {f.job.id for f in [*running, queued]}
    gate.open()


def test_terminate_stops_at_once(gate: Gate) -> None:
    pool = WorkerPool(max_workers=1, timeout=60)
    hung = pool.submit(gate.wait)
    assert gate.entered(1)
    pool.terminate()
    assert hung.cancelled()
    assert hung.job.attempts[0].outcome is AttemptOutcome.CANCELLED
    assert [t for t in pool.threads() if "timer" in t.name] == []
    gate.open()
