"""The defects an outside review found in the core: each test failed before its fix.

The timer runs no user code; an overrun is a timeout whoever sees it first; a blocked
iterable holds up nothing else; a never-started Dispatcher does not hang shutdown; finished
jobs free what they held by reference counting; a dropped pool lets its threads go; a fork
child exits at once; and the small drop-in differences from ThreadPoolExecutor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import signal
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterator

import pytest
import tenacity
from structlog.testing import capture_logs

from chronos import (
    Dispatcher,
    Job,
    JobStatus,
    JobTimeoutError,
    RetryPolicy,
    WorkerPool,
    current_job,
)
from chronos.pool import core_of
from chronos.pool.attempts import COOPERATION_GRACE
from chronos.retry import MAX_RETRY_DELAY
from chronos.testing import FakeClock
from tests.conftest import Gate, wait_until

# -- the timer runs no user code -------------------------------------------------------------


class LockedRepr:
    """A callable whose ``__repr__`` needs the lock its own call holds while it hangs."""

    def __init__(self, gate: Gate) -> None:
        self.lock = threading.Lock()
        self.gate = gate

    def __call__(self) -> None:
        with self.lock:
            self.gate.wait()

    def __repr__(self) -> str:
        with self.lock:
            return "LockedRepr()"


def test_a_repr_that_deadlocks_cannot_stop_the_timer(clock: FakeClock, gate: Gate) -> None:
    with WorkerPool(max_workers=2, timeout=1.0, clock=clock) as pool:
        hostile = pool.submit(LockedRepr(gate))
        assert gate.entered(1)
        clock.advance(1.0)
        assert isinstance(hostile.exception(timeout=5), JobTimeoutError)
        assert hostile.job.name == "LockedRepr"
        other = pool.submit(gate.wait)  # the timer must still time this one out
        assert gate.entered(2)
        clock.advance(1.0)
        assert isinstance(other.exception(timeout=5), JobTimeoutError)
        gate.open()


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_a_partial_is_named_by_its_function_never_by_its_arguments(
    clock: FakeClock, gate: Gate
) -> None:
    with capture_logs() as logs, WorkerPool(max_workers=1, timeout=1.0, clock=clock) as pool:
        future = pool.submit(functools.partial(gate.wait, BadRepr()))
        assert gate.entered(1)
        clock.advance(1.0)
        error = future.exception(timeout=5)
        assert isinstance(error, JobTimeoutError)
        assert str(error) == f"job #{future.job.id} (Gate.wait) attempt 1 exceeded its 1s timeout"
        gate.open()
    assert not [e for e in logs if e["event"] == "chronos.internal_error"]


def test_a_blocking_done_callback_delays_no_other_timeout(clock: FakeClock, gate: Gate) -> None:
    in_callback = threading.Event()
    release_callback = threading.Event()

    def slow_callback(_: object) -> None:
        in_callback.set()
        release_callback.wait(30)

    with WorkerPool(max_workers=2, clock=clock) as pool:
        first = pool.submit_job(Job(gate.wait, timeout=1.0))
        first.add_done_callback(slow_callback)
        second = pool.submit_job(Job(gate.wait, timeout=2.0))
        assert gate.entered(2)
        clock.advance(1.0)
        assert in_callback.wait(5)
        clock.advance(1.0)  # the second deadline, while the first's callback still blocks
        assert isinstance(second.exception(timeout=5), JobTimeoutError)
        release_callback.set()
        gate.open()


def test_a_callback_blocked_in_submit_on_a_full_queue_stops_no_timeout(
    clock: FakeClock, gate: Gate
) -> None:
    submitted = threading.Event()
    pool = WorkerPool(
        max_workers=2, timeout=1.0, queue_size=1, max_abandoned_threads=0, clock=clock
    )

    def resubmit(_: object) -> None:
        pool.submit(abs, -1)  # blocks: the queue is full, and no worker is free
        submitted.set()

    try:
        first = pool.submit(gate.wait)
        first.add_done_callback(resubmit)
        assert gate.entered(1)
        clock.advance(0.5)
        second = pool.submit(gate.wait)
        assert gate.entered(2)
        pool.submit(abs, -2)  # fills the queue
        clock.advance(0.5)  # the first times out; its callback blocks in submit()
        assert isinstance(first.exception(timeout=5), JobTimeoutError)
        clock.advance(0.5)  # the second's deadline: the timer is not blocked
        assert isinstance(second.exception(timeout=5), JobTimeoutError)
        assert not submitted.is_set()
    finally:
        gate.open()
        pool.shutdown()
    assert submitted.wait(5)


def test_shutdown_from_a_timed_out_jobs_callback_does_not_deadlock(
    clock: FakeClock, gate: Gate
) -> None:
    shut_down = threading.Event()
    pool = WorkerPool(max_workers=1, timeout=1.0, clock=clock)

    def stop_pool(_: object) -> None:
        pool.shutdown(grace=0)
        shut_down.set()

    future = pool.submit(gate.wait)
    future.add_done_callback(stop_pool)
    assert gate.entered(1)
    clock.advance(1.0)
    assert shut_down.wait(5)
    assert isinstance(future.exception(timeout=5), JobTimeoutError)
    gate.open()
    pool.shutdown()


# -- an attempt that ends after its deadline timed out, whoever sees it first ------------------


@pytest.mark.parametrize("ending", ["returns", "raises"])
def test_an_overrun_never_counts_as_success_or_failure(clock: FakeClock, ending: str) -> None:
    def overrun() -> str:
        clock.advance(2.0)  # past its own deadline, then it returns before the timer looks
        if ending == "raises":
            raise ValueError("late and wrong")
        return "too late"

    with WorkerPool(max_workers=4, timeout=1.0, clock=clock) as pool:
        futures = [pool.submit(overrun) for _ in range(20)]
        errors = [f.exception(timeout=5) for f in futures]
    assert all(isinstance(e, JobTimeoutError) for e in errors), errors
    assert all(f.job.status is JobStatus.TIMED_OUT for f in futures)
    if ending == "raises":  # when its own thread saw the overrun first, what it raised is kept
        for future, error in zip(futures, errors, strict=True):
            if future.job.attempts[0].ended_by is None:
                assert error is not None and isinstance(error.__cause__, ValueError)
    s = pool.stats.snapshot()
    assert (s.succeeded, s.failed, s.timed_out) == (0, 0, 20)


def test_stale_deadlines_are_swept_from_the_timer(clock: FakeClock) -> None:
    with WorkerPool(max_workers=2, timeout=3600.0, clock=clock) as pool:
        for _ in range(5):
            futures = [pool.submit(abs, -n) for n in range(4000)]
            assert [f.result(timeout=30) for f in futures] == list(range(4000))
        assert pool.statistics().timer_entries < 10_000  # 20,000 deadlines armed, most swept


# -- a cooperative job is not abandoned; wait_for_abandoned ----------------------------------


def test_a_cooperative_job_that_returns_at_once_is_not_abandoned(clock: FakeClock) -> None:
    def cooperative() -> None:
        current_job().wait()  # returns when the attempt times out

    with capture_logs() as logs, WorkerPool(max_workers=1, timeout=1.0, clock=clock) as pool:
        future = pool.submit(cooperative)
        assert clock.wait_for_waiters(2)  # the job and the timer wait on the clock
        clock.advance(1.0)
        assert isinstance(future.exception(timeout=5), JobTimeoutError)
        assert pool.submit(abs, -1).result(timeout=5) == 1  # its one thread is free again
        clock.advance(COOPERATION_GRACE)
    s = pool.stats.snapshot()
    assert (s.timed_out, s.abandoned_threads_total) == (1, 0)
    assert not [e for e in logs if e["event"] == "pool.thread_abandoned"]


@pytest.mark.parametrize("wait_for_abandoned", [False, True])
def test_wait_for_abandoned_keeps_a_retry_from_overlapping_its_hung_attempt(
    clock: FakeClock, gate: Gate, wait_for_abandoned: bool
) -> None:
    policy = RetryPolicy(max_attempts=2, backoff=0.0)
    with WorkerPool(
        max_workers=2,
        timeout=1.0,
        retry=policy,
        wait_for_abandoned=wait_for_abandoned,
        clock=clock,
    ) as pool:
        future = pool.submit(gate.wait, "done")
        assert gate.entered(1)
        clock.advance(1.0)
        wait_until(lambda: len(future.job.attempts) == 2 or pool.stats.snapshot().retries == 1)
        if wait_for_abandoned:
            assert not gate.entered(2, timeout=0.3)  # held while attempt 1 still runs
            assert future.job.status is JobStatus.RETRY_WAIT
            gate.open()  # attempt 1 returns: the retry goes
        else:
            assert gate.entered(2)  # two copies of one job at once: documented
            gate.open()
        assert future.result(timeout=5) == "done"
        assert len(future.job.attempts) == 2


# -- dispatch(): a source blocked in next() holds up nothing else ------------------------------


def test_a_source_blocked_in_next_starves_nothing(clock: FakeClock) -> None:
    release = threading.Event()

    def live_feed() -> Iterator[Callable[[], int]]:
        yield lambda: 1
        release.wait(30)  # reading a live feed that has nothing yet

    pool = WorkerPool(max_workers=2)
    dispatcher = Dispatcher(pool).start()
    dispatcher.dispatch(live_feed())
    try:
        assert dispatcher.submit(abs, -7).result(timeout=5) == 7  # live submits still run
        finished = threading.Event()

        def stop() -> None:
            pool.shutdown()
            finished.set()

        stopper = threading.Thread(target=stop)
        stopper.start()
        assert finished.wait(5), "shutdown hung on a source blocked in next()"
        stopper.join(5)
    finally:
        release.set()
    assert dispatcher.join(timeout=5)


def test_a_due_retry_is_dispatched_while_a_source_blocks() -> None:
    release = threading.Event()
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("once")
        return "ok"

    def live_feed() -> Iterator[Callable[[], object]]:
        release.wait(30)
        yield from ()

    with WorkerPool(max_workers=1, retry=RetryPolicy(max_attempts=2, backoff=0.0)) as pool:
        dispatcher = Dispatcher(pool).start()
        dispatcher.dispatch(live_feed())
        try:
            assert dispatcher.submit(flaky).result(timeout=5) == "ok"
        finally:
            release.set()
        dispatcher.close()
        assert dispatcher.join(timeout=5)


def test_shutdown_cancels_the_jobs_of_a_dispatcher_never_started() -> None:
    done = threading.Event()
    held: list[concurrent.futures.Future[int]] = []

    def scenario() -> None:
        with WorkerPool(2) as pool:
            held.append(Dispatcher(pool, rate=10).submit(pow, 2, 3))
        done.set()

    thread = threading.Thread(target=scenario, daemon=True)
    thread.start()
    assert done.wait(5), "shutdown hung on a Dispatcher that was never started"
    thread.join(5)
    assert held[0].cancelled()


# -- finished jobs free what they held, by reference counting ---------------------------------


class Payload:
    def method(self) -> None:
        pass


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _freed(obj: object) -> Callable[[], bool]:
    ref = weakref.ref(obj)
    return lambda: ref() is None


@pytest.mark.usefixtures("no_gc")
def test_a_discarded_future_frees_the_callable_and_result() -> None:
    with WorkerPool(max_workers=2) as pool:
        payload = Payload()
        freed = _freed(payload)
        pool.submit(payload.method)  # the Future is discarded at once
        del payload
        wait_until(freed)


@pytest.mark.usefixtures("no_gc")
def test_result_then_del_frees_the_result_and_arguments() -> None:
    with WorkerPool(max_workers=2) as pool:
        argument = Payload()
        argument_freed = _freed(argument)
        future = pool.submit(lambda _: Payload(), argument)
        del argument
        result = future.result(timeout=5)
        result_freed = _freed(result)
        assert argument_freed()  # released as the job finished, Future or not
        del result, future
        wait_until(result_freed)


@pytest.mark.usefixtures("no_gc")
def test_a_failed_job_frees_its_arguments() -> None:
    def fail(payload: Payload) -> None:
        raise ValueError(f"failed with {type(payload).__name__}")

    with WorkerPool(max_workers=2) as pool:
        payload = Payload()
        freed = _freed(payload)
        future = pool.submit(fail, payload)
        del payload
        assert isinstance(future.exception(timeout=5), ValueError)
        del future  # the error's traceback holds fail()'s frame, and with it the payload
        wait_until(freed)


@pytest.mark.usefixtures("no_gc")
def test_a_retried_attempt_pins_none_of_its_frames() -> None:
    attempts: list[Callable[[], bool]] = []

    def flaky() -> str:
        local = Payload()  # lives in the frame of a failing attempt
        attempts.append(_freed(local))
        if len(attempts) == 1:
            raise ConnectionError("once")
        return "ok"

    with WorkerPool(max_workers=1, retry=RetryPolicy(max_attempts=2, backoff=0.0)) as pool:
        future = pool.submit(flaky)
        assert future.result(timeout=5) == "ok"
        assert future.job.attempts[0].error is not None  # the error is kept...
        assert attempts[0]()  # ...but not its frame's locals


@pytest.mark.usefixtures("no_gc")
def test_a_job_cancelled_in_its_backoff_is_dropped_at_once(clock: FakeClock) -> None:
    def fail(payload: Payload) -> None:
        raise ConnectionError("retry me in a minute")

    policy = RetryPolicy(max_attempts=2, backoff=60.0, jitter=False)
    with WorkerPool(max_workers=1, retry=policy, clock=clock) as pool:
        payload = Payload()
        freed = _freed(payload)
        future = pool.submit(fail, payload)
        del payload
        jobs = [future.job]
        wait_until(lambda: jobs[0].status is JobStatus.RETRY_WAIT)
        assert future.cancel()
        del future
        jobs.clear()
        wait_until(freed)  # not in 60 s, when the backoff ends


# -- a pool dropped without shutdown lets its threads go --------------------------------------


def test_a_pool_dropped_without_shutdown_leaks_no_thread() -> None:
    def use_a_pool() -> list[int]:
        return list(WorkerPool(3, thread_name_prefix="dropped").map(abs, range(-5, 5)))

    for _ in range(3):
        assert use_a_pool() == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    gc.collect()

    def no_pool_threads_left() -> bool:
        return not [t for t in threading.enumerate() if t.name.startswith("dropped")]

    wait_until(no_pool_threads_left)


# -- os.fork() --------------------------------------------------------------------------------

FORK_CHILD = textwrap.dedent(
    """
    import os, sys, threading, time, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
    from chronos import WorkerPool

    hang = threading.Event()
    pool = WorkerPool(4)
    for _ in range(4):
        pool.submit(hang.wait, 30)
    busy = [pool.submit(sum, range(1000)) for _ in range(2000)]  # locks change hands
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            try:
                pool.submit(abs, 1)
            except RuntimeError as exc:
                ok = "fork" in str(exc)
            else:
                ok = False
            sys.exit(0 if ok else 3)  # a normal exit: atexit hooks run
        started = time.monotonic()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit("child failed")
        if time.monotonic() - started > 2.0:
            sys.exit("child exit took %.1f s" % (time.monotonic() - started))
    hang.set()
    print("ok")
    """
)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_fork_child_refuses_the_parents_pool_and_exits_at_once() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK_CHILD], capture_output=True, text=True, timeout=100
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- no thread starts while a pool lock is held ------------------------------------------------


class OwnedLock:
    """A Lock that knows which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None

    def __enter__(self) -> OwnedLock:
        self._lock.acquire()
        self.owner = threading.get_ident()
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        self._lock.release()


def test_no_thread_is_started_under_the_pools_thread_lock(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, gate: Gate
) -> None:
    pool = WorkerPool(max_workers=2, timeout=1.0, clock=clock)
    lock = OwnedLock()
    core_of(pool).threads.lock = lock  # type: ignore[assignment]
    offenders: list[str] = []
    start = threading.Thread.start

    def checked_start(thread: threading.Thread) -> None:
        if lock.owner == threading.get_ident():
            offenders.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", checked_start)
    try:
        hung = [pool.submit(gate.wait) for _ in range(2)]
        assert gate.entered(2)
        clock.advance(1.0)
        clock.advance(COOPERATION_GRACE)  # abandoned, and replaced
        assert all(isinstance(f.exception(timeout=5), JobTimeoutError) for f in hung)
        wait_until(lambda: pool.stats.snapshot().abandoned_threads == 2)
        assert pool.submit(abs, -3).result(timeout=5) == 3
        gate.open()
        wait_until(lambda: pool.stats.snapshot().abandoned_threads == 0)
    finally:
        gate.open()
        pool.shutdown()
    assert offenders == []


# -- small drop-in differences from ThreadPoolExecutor ------------------------------------------


@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_below_one_is_refused_in_thread_pool_executors_words(
    max_workers: int,
) -> None:
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        WorkerPool(max_workers)
    with pytest.raises(ValueError, match=r"^max_workers must be greater than 0$"):
        concurrent.futures.ThreadPoolExecutor(max_workers)


def test_thread_name_prefix_none_is_accepted() -> None:
    with WorkerPool(1, thread_name_prefix=None) as pool:
        assert pool.submit(abs, -1).result(timeout=5) == 1


def test_map_with_a_negative_timeout_behaves_like_zero(gate: Gate) -> None:
    with WorkerPool(1) as pool:
        results = pool.map(gate.wait, [1], timeout=-1)
        with pytest.raises(TimeoutError):
            next(results)
        gate.open()


def test_set_running_or_notify_cancel_after_cancel_returns_false(gate: Gate) -> None:
    with WorkerPool(1) as pool:
        pool.submit(gate.wait)
        waiting = pool.submit(abs, -1)
        assert waiting.cancel()
        assert waiting.set_running_or_notify_cancel() is False
        gate.open()


def test_retry_policy_takes_plain_callables_as_tenacity_does() -> None:
    policy = RetryPolicy(
        wait=lambda state: 0.25 * state.attempt_number,
        stop=lambda state: state.attempt_number >= 3,
        retry=lambda state: (
            state.outcome is not None and isinstance(state.outcome.exception(), ConnectionError)
        ),
    )
    assert policy.next_delay(1, ConnectionError(), 0.0) == 0.25
    assert policy.next_delay(2, ConnectionError(), 0.0) == 0.5
    assert policy.next_delay(3, ConnectionError(), 0.0) is None  # stopped
    assert policy.next_delay(1, KeyError(), 0.0) is None  # not retried


def test_a_retry_delay_is_never_infinite() -> None:
    for attempt in (1, 1_100, 10**6):
        delay = RetryPolicy(max_attempts=10**7, jitter=False).next_delay(attempt, OSError(), 0.0)
        assert delay is not None and delay <= 30.0
    forever = RetryPolicy(wait=tenacity.wait_fixed(float("inf")), max_backoff=5.0)
    assert forever.next_delay(1, OSError(), 0.0) == 5.0
    long = RetryPolicy(wait=lambda state: 10.0 * MAX_RETRY_DELAY)
    assert long.next_delay(1, OSError(), 0.0) == MAX_RETRY_DELAY
    with pytest.raises(ValueError, match="max_backoff must be finite"):
        RetryPolicy(max_backoff=float("inf"))
    with pytest.raises(ValueError, match="multiplier must be finite"):
        RetryPolicy(multiplier=float("inf"))


def test_asyncio_takes_the_pool_as_its_default_executor() -> None:
    seen: list[str] = []

    async def main() -> int:
        asyncio.get_running_loop().set_default_executor(pool)
        value = await asyncio.to_thread(lambda: threading.current_thread().name)
        seen.append(value)
        return await asyncio.get_running_loop().run_in_executor(None, abs, -4)

    pool = WorkerPool(2, thread_name_prefix="asyncio-default")
    assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)
    assert asyncio.run(main()) == 4  # asyncio.run shuts the default executor down
    assert seen[0].startswith("asyncio-default")
    pool.shutdown()


# -- exit with a hung job: one line, no traceback ----------------------------------------------

EXIT_WITH_A_HUNG_JOB = textwrap.dedent(
    """
    import signal, threading
    from chronos import WorkerPool

    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job ignores it)
    pool = WorkerPool(1, exit_grace=30)
    pool.submit(threading.Event().wait, 60)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_exit_with_a_hung_job_says_what_it_waits_for_and_ctrl_c_ends_it_cleanly() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", EXIT_WITH_A_HUNG_JOB],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    with child.stderr:
        try:
            first = child.stderr.readline()
            assert first.startswith("chronos: exiting: waiting up to 30s (exit_grace) for 1 ")
            child.send_signal(signal.SIGINT)
            assert child.wait(timeout=10) == 0
            rest = child.stderr.read()
        finally:
            child.kill()
            child.wait(timeout=10)
    assert rest == "chronos: interrupted: cancelling unfinished jobs\n"
