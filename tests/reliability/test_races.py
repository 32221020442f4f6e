"""Races: the chaos mix with a thread switch every microsecond, and submitters racing shutdown.

``sys.setswitchinterval(1e-6)`` makes the interpreter hand the GIL to another thread almost
at every bytecode it may, so interleavings that plain scheduling produces once in a million
runs show up in every one.  Every case is bounded: a thread that does not finish in time
fails the test with every thread's stack dumped (see :func:`chaos.join_all`).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chronos import JobTimeoutError, WorkerPool
from chronos.pool import core_of
from chronos.pool.attempts import COOPERATION_GRACE
from chronos.testing import FakeClock
from tests.conftest import Gate, wait_until
from tests.reliability.chaos import (
    SHUTDOWNS,
    Chaos,
    ChaosConfig,
    PolicyModel,
    check,
    join_all,
    race_shutdown,
    switch_interval,
)


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    with switch_interval(1e-6):
        yield


@pytest.mark.timeout(40)
@pytest.mark.usefixtures("tiny_switch_interval")
@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            ChaosConfig(
                seed=11,
                timeout=0.05,
                retry=PolicyModel(3, backoff=0.001),
                dispatcher_share=0.3,
                dispatch_rate=50_000,
            ),
            id="seed11-16w-pool_timeout_and_retry-dispatcher",
        ),
        pytest.param(
            ChaosConfig(seed=12, max_workers=20, timeout=None, queue_size=32, interrupt=True),
            id="seed12-20w-queue32-interrupt_on_timeout",
        ),
    ],
)
def test_chaos_mix_with_a_thread_switch_every_microsecond(config: ChaosConfig) -> None:
    """The chaos mix, its books checked as in test_chaos, with threads switching all the time."""
    with Chaos(config) as chaos:
        chaos.run()
        check(chaos)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("tiny_switch_interval")
@pytest.mark.parametrize("variant", list(SHUTDOWNS))
@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_eight_submitters_racing_shutdown(variant: str, seed: int) -> None:
    """8 threads submit chaos jobs (into a small queue, so some block; for odd seeds some go
    through a Dispatcher) while another shuts the pool down: every submit either raises
    RuntimeError or returns a Future that resolves consistently with its job; a refused thread
    stays refused; a submit that began after the shutdown call returned is refused; nothing
    deadlocks; the books add up; no thread is left."""
    calls, cancels = SHUTDOWNS[variant]
    share = 0.3 if seed % 2 else 0.0  # odd seeds hand some jobs to a Dispatcher
    config = ChaosConfig(seed=seed, queue_size=16, jobs=0, dispatcher_share=share)
    with Chaos(config) as chaos:
        report = race_shutdown(chaos, calls)
        chaos.shutdown(lambda pool: pool.shutdown())  # waits for a background shutdown too
        chaos.wait_for_threads()
        tally = check(chaos, shutdown_cancels=cancels)
    assert not report.problems, f"seed={seed}: {report.problems[:10]}"
    assert report.accepted > 0 and report.refused > 0, f"seed={seed}: no race: {report}"
    assert tally["rejected"] == report.refused + tally["rejected_children"]


@pytest.mark.timeout(10)
def test_a_submit_racing_an_abandonment_keeps_the_cap(
    clock: FakeClock, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timer abandons a hung worker and starts its replacement; at that very moment (forced
    here: between the two steps) a caller submits, which starts a worker too.  The pool's
    threads must stay within ``max_workers + max_abandoned_threads`` plus the timer, as
    documented (docs/timeouts.md)."""
    pool = WorkerPool(max_workers=1, max_abandoned_threads=1, timeout=1.0, clock=clock)
    go, submitted = threading.Event(), threading.Event()

    def caller() -> None:
        assert go.wait(5)
        pool.submit(abs, -1)
        submitted.set()

    mark_abandoned = core_of(pool).threads.mark_abandoned

    def mark_then_let_the_caller_in(slot: Any) -> None:
        mark_abandoned(slot)
        go.set()
        assert submitted.wait(5)

    monkeypatch.setattr(core_of(pool).threads, "mark_abandoned", mark_then_let_the_caller_in)
    other = threading.Thread(target=caller, name="caller")
    other.start()
    try:
        hung = pool.submit(gate.wait)
        assert gate.entered(1)
        clock.advance(1.0)
        assert isinstance(hung.exception(timeout=5), JobTimeoutError)
        clock.advance(COOPERATION_GRACE)  # it is abandoned now
        join_all([other], 5, "caller")
        threads = sorted(t.name for t in pool.worker_threads())
        assert len(threads) <= 1 + 1, f"over max_workers + max_abandoned: {threads}"
    finally:
        gate.open()
        go.set()
        pool.shutdown()


@pytest.mark.timeout(15)
def test_a_timeout_during_a_draining_shutdown_leaves_a_worker_for_the_queued_jobs(
    clock: FakeClock, gate: Gate
) -> None:
    """``shutdown()`` waits for the queued jobs to finish (docs/shutdown.md).  When the one
    running job times out meanwhile, its thread is abandoned; a replacement, or the thread
    itself once it returns, must still run the queued job, or shutdown never returns."""
    pool = WorkerPool(max_workers=1, timeout=1.0, clock=clock)
    hung = pool.submit(gate.wait)
    assert gate.entered(1)
    queued = pool.submit(abs, -1)
    stopper = threading.Thread(target=pool.shutdown, name="stopper")
    stopper.start()
    try:
        wait_until(lambda: "shut down" in repr(pool))  # shutdown began: it waits for the drain
        clock.advance(1.0)
        assert isinstance(hung.exception(timeout=5), JobTimeoutError)
        gate.open()  # the hung thread returns too
        done, _ = cf.wait([queued], timeout=1)
        assert queued in done, f"the queued job never ran: {queued.job!r}, {pool!r}"
        join_all([stopper], 5, "shutdown()")
    finally:
        gate.open()
        pool.shutdown(cancel_futures=True, grace=0)  # ends a shutdown stuck waiting
        stopper.join(5)


@pytest.mark.timeout(15)
def test_an_interrupted_thread_that_leaves_is_replaced(clock: FakeClock, gate: Gate) -> None:
    """Found by the soak (seed 930): with ``interrupt_on_timeout`` a thread abandoned by a
    timeout does not rejoin when it returns (the interrupt may still land in it), and with
    ``max_abandoned_threads=0`` it got no replacement either, so the pool lost a worker for
    good at each such timeout, until queued jobs waited for ever.  The leaving thread must
    hand its place to a fresh one."""
    pool = WorkerPool(
        max_workers=1, max_abandoned_threads=0, interrupt_on_timeout=True, timeout=1.0, clock=clock
    )
    try:
        hung = pool.submit(gate.wait)
        assert gate.entered(1)
        queued = pool.submit(abs, -1)
        clock.advance(1.0)
        assert isinstance(hung.exception(timeout=5), JobTimeoutError)
        gate.open()  # the hung thread returns; the interrupt lands; it leaves
        assert queued.result(timeout=5) == 1, f"no worker left for the queued job: {pool!r}"
        assert pool.stats.abandoned_threads.value == 0
    finally:
        gate.open()
        pool.shutdown()
