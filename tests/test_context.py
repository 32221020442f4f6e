"""chronos.current_job(): what a running job sees, and cooperative cancellation."""

from __future__ import annotations

import threading

import pytest

from chronos import JobCancelledError, JobContext, JobTimeoutError, WorkerPool, current_job
from chronos.testing import FakeClock
from tests.conftest import Gate


def test_context_describes_the_running_attempt(clock: FakeClock) -> None:
    seen: list[tuple[int, str, int, float | None, float | None]] = []

    def job() -> None:
        ctx = current_job()
        seen.append((ctx.job_id, ctx.name, ctx.attempt_number, ctx.deadline, ctx.remaining()))

    with WorkerPool(max_workers=1, timeout=2.0, clock=clock) as pool:
        future = pool.submit(job)
        future.result(timeout=5)
    assert seen == [(future.job.id, "job", 1, 1002.0, 2.0)]


def test_cooperative_job_stops_when_its_attempt_times_out(clock: FakeClock) -> None:
    stopped = threading.Event()
    waiting = threading.Event()

    def cooperative() -> None:
        ctx = current_job()
        waiting.set()
        assert ctx.wait(60.0)  # returns True: the attempt timed out
        assert ctx.cancelled
        stopped.set()
        ctx.check()

    with WorkerPool(max_workers=1, timeout=1.0, clock=clock) as pool:
        future = pool.submit(cooperative)
        assert waiting.wait(5)
        clock.wait_for_waiters(2)  # the job and the timer
        clock.advance(1.0)
        assert isinstance(future.exception(timeout=5), JobTimeoutError)
        assert stopped.wait(5)
    assert pool.stats.snapshot().abandoned_threads == 0


def test_context_check_after_shutdown_cancel(gate: Gate) -> None:
    checked: list[BaseException] = []
    inside = threading.Event()

    def job() -> None:
        ctx: JobContext = current_job()
        inside.set()
        ctx.wait(30)
        try:
            ctx.check()
        except JobCancelledError as exc:
            checked.append(exc)

    pool = WorkerPool(max_workers=1)
    future = pool.submit(job)
    assert inside.wait(5)
    pool.terminate()
    assert future.cancelled()
    deadline_ok = threading.Event()
    for _ in range(500):
        if checked:
            deadline_ok.set()
            break
        threading.Event().wait(0.01)
    assert deadline_ok.is_set()
    with pytest.raises(JobCancelledError, match="was cancelled"):
        raise checked[0]
