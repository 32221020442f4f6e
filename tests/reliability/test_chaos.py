"""Chaos: thousands of misbehaving jobs over 16+ workers, and not one of them lost.

Each run submits a seeded mix (see :mod:`tests.reliability.chaos`) of jobs that return small
and huge objects, sleep, raise Exceptions and BaseExceptions, hang past their timeout with and
without cooperating, and submit more jobs to the same pool; with random per-job timeouts and
retry policies, done-callbacks that raise, and a caller that cancels some of them.  Then
:func:`check` proves every job terminal exactly once, every Future consistent with its job,
attempts as each policy says, the stats and events adding up, and no thread left behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from chronos import JobStatus, WorkerPool
from tests.conftest import Gate, wait_until
from tests.reliability.chaos import (
    DEFAULT_WEIGHTS,
    Action,
    Chaos,
    ChaosBaseError,
    ChaosConfig,
    PolicyModel,
    Spec,
    check,
)

CONFIGS = [
    pytest.param(
        ChaosConfig(
            seed=1,
            max_workers=16,
            timeout=0.05,
            retry=PolicyModel(3, backoff=0.002),
            dispatcher_share=0.3,
        ),
        id="seed1-16w-pool_timeout_and_retry-dispatcher",
    ),
    pytest.param(
        ChaosConfig(
            seed=2,
            max_workers=24,
            timeout=None,
            queue_size=64,
            max_abandoned=4,
            dispatcher_share=0.25,
            dispatch_rate=20_000,
        ),
        id="seed2-24w-own_timeouts_only-queue64-4abandoned-rate_limited_dispatcher",
    ),
    pytest.param(
        ChaosConfig(
            seed=3,
            max_workers=16,
            timeout=0.04,
            retry=PolicyModel(2, never_retry_on=(ChaosBaseError,), tenacity_style=True),
            interrupt=True,
            weights={**DEFAULT_WEIGHTS, Action.SPIN_HANG: 2.0},
        ),
        id="seed3-16w-interrupt_on_timeout-spin_hangs",
    ),
]


def coverage(tally: Counter[str], config: ChaosConfig) -> None:
    """The mix really did misbehave: every action it may draw ran, every terminal state and
    the pool's own interventions (timeouts, abandoned threads, nesting) happened."""
    ran = {key.split(".")[1] for key in tally if key.startswith("attempt.")}
    drawn = {a.value for a, w in config.weights.items() if w > 0}
    if config.interrupt:  # the mix submits nothing then (see Chaos.spec)
        drawn -= {Action.SUBMIT.value, Action.WAIT_CHILD.value}
    assert drawn <= ran, f"actions never ran: {drawn - ran} ({tally})"
    for status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT):
        assert tally[f"status.{status.value}"] > 0, tally
    assert tally["cancelled_by_caller"] > 0, tally
    assert tally["abandoned_threads_total"] > 0 and tally["ended_by_pool"] > 0, tally
    assert tally["retries"] > 0, tally
    assert config.interrupt or tally["depth1"] > 0, tally
    assert not config.dispatcher_share or tally["via_dispatcher.attempts"] > 0, tally


@pytest.mark.timeout(40)
@pytest.mark.parametrize("config", CONFIGS)
def test_no_job_is_lost_in_the_chaos_mix(config: ChaosConfig) -> None:
    """Thousands of chaos jobs, then the books: every job terminal once, its Future agreeing,
    its attempts as its policy says, stats and events adding up, no thread left."""
    with Chaos(config) as chaos:
        chaos.run()
        tally = check(chaos)
    coverage(tally, config)


@pytest.mark.timeout(30)
def test_done_callbacks_raising_base_exceptions_leave_jobs_and_pool_intact() -> None:
    """Done-callbacks that raise SystemExit, KeyboardInterrupt or a custom BaseException (which
    the base ``concurrent.futures.Future`` lets escape into the thread that resolves it):
    chronos's Futures log each one as they log an Exception, so every worker survives them,
    every job still ends once with a consistent Future, and the books add up.  (The two tests
    below show the same for a cancellation.)
    """
    kinds: list[type[BaseException]] = [SystemExit, KeyboardInterrupt, ChaosBaseError]
    raised: Counter[str] = Counter()
    lock = threading.Lock()  # guards raised

    def raiser(kind: type[BaseException]) -> Callable[[cf.Future[Any]], None]:
        def callback(_: cf.Future[Any]) -> None:
            with lock:
                raised[kind.__name__] += 1
            raise kind("from a done-callback")

        return callback

    config = ChaosConfig(seed=4, jobs=600, max_workers=16, cancel_rate=0.0)
    in_caller = 0
    with Chaos(config) as chaos:
        for index in range(config.jobs):
            future = chaos.submit(f"j{index}").job.future
            kind = kinds[index % len(kinds)]
            try:
                future.add_done_callback(raiser(kind))
            except kind:  # done already: it ran (and raised) right here
                in_caller += 1
        chaos.settle()
        # Each one raised while the pool resolved a job is logged once, as the base class logs
        # an Exception, and is no internal error; one added to a Future already done raised
        # to its caller instead (as with any Future).
        tally = check(chaos, callback_errors=config.jobs - in_caller)
    assert sum(raised.values()) == config.jobs, raised
    assert tally["status.succeeded"] > 0 and tally["ended_by_pool"] > 0, tally


def raise_keyboard_interrupt(_: cf.Future[Any]) -> None:
    raise KeyboardInterrupt("from a done-callback")


@pytest.mark.timeout(10)
def test_a_cancel_whose_done_callback_raises_a_base_exception_still_resolves_the_future(
    gate: Gate,
) -> None:
    """A caller cancels a queued job whose done-callback raises KeyboardInterrupt (as a Ctrl+C
    landing in the callback would): the exception may reach the caller, as with any Future,
    but the Future must still be fully cancelled, so ``wait()``/``as_completed()`` see it."""
    with WorkerPool(max_workers=1) as pool:
        pool.submit(gate.wait)
        assert gate.entered(1)
        queued = pool.submit(abs, -1)
        queued.add_done_callback(raise_keyboard_interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            assert queued.cancel()
        gate.open()
        assert queued.cancelled() and queued.job.status is JobStatus.CANCELLED
        done, _ = cf.wait([queued], timeout=0.5)
        assert queued in done, "cancelled, yet wait() does not count it as done"


@pytest.mark.timeout(10)
def test_shutdown_lists_every_job_it_cancelled_even_if_a_done_callback_raises(gate: Gate) -> None:
    """shutdown(cancel_futures=True) cancels a queued job whose done-callback raises
    KeyboardInterrupt; the caller calls shutdown again, as after a Ctrl+C.  Nothing may be
    lost: every job the shutdown cancelled is listed by ``unfinished_jobs()``."""
    pool = WorkerPool(max_workers=1)
    pool.submit(gate.wait)
    assert gate.entered(1)
    queued = [pool.submit(abs, -n) for n in range(3)]
    queued[0].add_done_callback(raise_keyboard_interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        pool.shutdown(wait=False, cancel_futures=True)
    pool.shutdown(wait=False, cancel_futures=True)
    gate.open()
    pool.shutdown()
    assert all(f.cancelled() for f in queued)
    assert {job.id for job in pool.unfinished_jobs()} == {f.job.id for f in queued}


@pytest.mark.timeout(40)
def test_after_a_run_only_the_counted_abandoned_threads_are_left() -> None:
    """24 jobs hang for good (non-cooperative, until the test ends) among 2000 chaos jobs.
    Once every job is terminal, the threads alive beyond the test's own are exactly the
    pool's: its timer, at most ``max_workers`` workers, and the abandoned threads, which are
    the 24 hung ones and as many as ``stats.abandoned_threads`` counts.  Released, they exit."""
    held_count = 24
    config = ChaosConfig(
        seed=5, max_workers=16, max_abandoned=held_count, timeout=0.05, cancel_rate=0.0
    )
    held_spec = Spec(
        actions=(Action.HELD_HANG,),
        timeout=0.02,
        policy=PolicyModel(1),
        slow=0.0,
        linger=0.0,
        late_raise=False,
        children=0,
        raising_callback=False,
    )
    before = set(threading.enumerate())
    with Chaos(config) as chaos:
        held = [chaos.submit(f"held{n}", spec=held_spec) for n in range(held_count)]
        for index in range(config.jobs):
            chaos.submit(f"j{index}")
        chaos.wait_for_jobs()
        stats = chaos.pool.stats
        wait_until(lambda: stats.abandoned_threads.value == held_count)  # others came back
        hung = {t.calls[0].thread for t in held}
        assert all(t.job.status is JobStatus.TIMED_OUT for t in held)
        assert len(hung) == held_count and all(thread.is_alive() for thread in hung)
        pool_threads = set(chaos.pool.threads())
        assert set(threading.enumerate()) - before == pool_threads, "a thread nobody counts"
        assert hung <= pool_threads
        worker_threads = set(chaos.pool.worker_threads())
        assert {t for t in pool_threads if t.name.endswith("_timer")} <= pool_threads - hung
        workers = len(worker_threads - hung)
        if workers > config.max_workers:
            raise AssertionError(f"{workers} workers, over max_workers {config.max_workers}")
        chaos.settle()  # shuts down, releases the hung threads and waits for them to exit
        tally = check(chaos)
    assert tally["attempt.held_hang.timed_out"] == held_count, tally
