"""A real WorkerPool on a FakeClock, driven by a hypothesis RuleBasedStateMachine.

Rules submit jobs whose behaviour the test controls (succeed, raise, fail for good, or block
until released so that they time out), advance the fake clock, release blocked jobs and
cancel futures.  The invariants hold at every moment, whatever the worker and timer threads
are doing meanwhile; the only real-time waits are bounded waits on Events and Futures.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import threading
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chronos import (
    AttemptOutcome,
    Job,
    JobStatus,
    JobTimeoutError,
    NonRetryableError,
    RetryPolicy,
    StatsSnapshot,
    WorkerPool,
)
from chronos.testing import FakeClock

S = JobStatus
MAX_WORKERS = 2
TIMEOUT = 1.0
BACKOFF = 0.5
MAX_ATTEMPTS = 3
MAX_JOBS = 16
MAX_BATCH = 6  # jobs submitted between two drains
#: Enough replacement threads for every attempt of two batches to hang at once, so that the
#: pool never runs short-handed and a drain finishes even without releasing blocked jobs.
MAX_ABANDONED = 2 * MAX_BATCH * MAX_ATTEMPTS
POLICY = RetryPolicy(max_attempts=MAX_ATTEMPTS, backoff=BACKOFF, max_backoff=60.0, jitter=False)
#: Real seconds to wait for something that must happen (a Future resolving, a thread exiting).
REAL_WAIT = 5.0
#: Real seconds a blocked job waits for its release before giving up on its own.
BLOCK_LIMIT = 20.0
#: Fake seconds per step while draining: past any timeout and any backoff of POLICY.
DRAIN_STEP = TIMEOUT + BACKOFF * 2 ** (MAX_ATTEMPTS - 1)
DRAIN_ROUNDS = 200


class Kind(StrEnum):
    SUCCEED = "succeed"
    RAISE = "raise"  # a retryable error, every attempt
    FATAL = "fatal"  # NonRetryableError: fails at once
    BLOCK = "block"  # hangs until released, so its attempts time out


class BoomError(Exception):
    pass


class Body:
    """The callable of one job; does what its kind says, every attempt."""

    def __init__(self, kind: Kind, value: int) -> None:
        self.kind = kind
        self.value = value
        self.release = threading.Event()
        self.entered = threading.Event()  # set when an attempt starts running the body

    @property
    def is_released(self) -> bool:
        return self.release.is_set()

    def __call__(self) -> int:
        self.entered.set()
        if self.kind is Kind.RAISE:
            raise BoomError(self.value)
        if self.kind is Kind.FATAL:
            raise NonRetryableError(f"job {self.value} cannot succeed")
        if self.kind is Kind.BLOCK:
            self.release.wait(BLOCK_LIMIT)
        return self.value


@dataclass
class Tracked:
    body: Body
    future: cf.Future[int]
    job: Job[int]
    terminal: JobStatus | None = None  # the first terminal status seen


def same_books(a: StatsSnapshot, b: StatsSnapshot) -> bool:
    """Equal job counters (thread counters change outside job transitions)."""
    return dataclasses.replace(a, abandoned_threads=0, abandoned_threads_total=0) == (
        dataclasses.replace(b, abandoned_threads=0, abandoned_threads_total=0)
    )


def led_to_retry(status: JobStatus, outcomes: list[AttemptOutcome | None]) -> int:
    """How many of a job's attempts ended in RETRY_WAIT: every one but the last, and the
    last too if it failed or timed out and the job went on (waits, queued again, cancelled)."""
    if not outcomes:
        return 0
    last_retried = outcomes[-1] in (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT) and (
        status not in (S.FAILED, S.TIMED_OUT, S.RUNNING)  # RUNNING: the timer fenced it, and
    )  # what follows is being decided
    return len(outcomes) - 1 + last_retried


class PoolMachine(RuleBasedStateMachine):
    """One WorkerPool (2 workers, 1 s timeout, 3 attempts with 0.5 s doubling backoff)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=100.0)
        self.pool = WorkerPool(
            max_workers=MAX_WORKERS,
            timeout=TIMEOUT,
            retry=POLICY,
            max_abandoned_threads=MAX_ABANDONED,
            clock=self.clock,
            logger=structlog.testing.CapturingLogger(),
        )
        self.tracked: list[Tracked] = []
        self.finished = 0
        self.since_drain = 0

    def pick(self, index: int) -> Tracked:
        return self.tracked[index % len(self.tracked)]

    # -- rules ------------------------------------------------------------------------------------

    # Preconditions read only what the test thread decides, never what the pool's threads did
    # (hypothesis needs the same choices to be offered when it replays an example).

    def blocked(self) -> list[Tracked]:
        return [t for t in self.tracked if t.body.kind is Kind.BLOCK and not t.body.is_released]

    @precondition(lambda self: len(self.tracked) < MAX_JOBS and self.since_drain < MAX_BATCH)
    @rule(kind=st.sampled_from(Kind))
    def submit(self, kind: Kind) -> None:
        self.since_drain += 1
        body = Body(kind, len(self.tracked))
        future = self.pool.submit(body)
        job = future.job
        assert job.fn is body or job.status.is_terminal  # a finished job releases it
        self.tracked.append(Tracked(body, future, job))

    @rule(dt=st.sampled_from([0.25, 0.5, TIMEOUT, 2.0, DRAIN_STEP]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @precondition(lambda self: self.blocked())
    @rule(index=st.integers(min_value=0, max_value=10**6))
    def release(self, index: int) -> None:
        blocked = self.blocked()
        blocked[index % len(blocked)].body.release.set()

    @precondition(lambda self: self.tracked)
    @rule(index=st.integers(min_value=0, max_value=10**6))
    def cancel(self, index: int) -> None:
        tracked = self.pick(index)
        if tracked.future.cancel():
            assert tracked.future.cancelled()
            assert tracked.job.status is S.CANCELLED
        else:
            assert not tracked.future.cancelled()
            assert tracked.job.status is not S.CANCELLED

    @precondition(lambda self: self.since_drain >= MAX_BATCH - 2)  # now and then
    @rule(release_first=st.booleans())
    def drain(self, release_first: bool = True) -> None:
        """Move time on until every job finishes (blocked ones time out unless released)."""
        self.since_drain = 0
        if release_first:
            self.release_all()
        pending = {t.future for t in self.tracked}
        for _ in range(DRAIN_ROUNDS):
            pending = cf.wait(pending, timeout=0.02).not_done
            if not pending:
                break
            self.clock.advance(DRAIN_STEP)
        stuck = [t.job for t in self.tracked if not t.future.done()]
        assert not stuck, f"jobs never finished: {stuck}"
        self.release_all()  # let abandoned threads return

    def release_all(self) -> None:
        for tracked in self.tracked:
            tracked.body.release.set()

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def books_add_up(self) -> None:
        snap = self.pool.stats.snapshot()
        assert snap.submitted == snap.in_flight + snap.finished, snap
        assert snap.submitted == len(self.tracked)
        assert snap.finished >= self.finished, "a finished job came back"
        self.finished = snap.finished

    @invariant()
    def books_match_the_jobs(self) -> None:
        """Read while no transition runs: the counters are what the jobs say they are."""
        snap, view = self.still_view()
        statuses = Counter(status for status, _ in view)
        assert (
            snap.pending,
            snap.queued,
            snap.running,
            snap.waiting_to_retry,
            snap.succeeded,
            snap.failed,
            snap.timed_out,
            snap.cancelled,
        ) == (
            statuses[S.PENDING],
            statuses[S.QUEUED],
            statuses[S.RUNNING],
            statuses[S.RETRY_WAIT],
            statuses[S.SUCCEEDED],
            statuses[S.FAILED],
            statuses[S.TIMED_OUT],
            statuses[S.CANCELLED],
        )
        assert snap.attempts == sum(len(outcomes) for _, outcomes in view)
        assert snap.attempt_timeouts == sum(
            outcomes.count(AttemptOutcome.TIMED_OUT) for _, outcomes in view
        )
        assert snap.retries == sum(led_to_retry(status, outcomes) for status, outcomes in view)

    @invariant()
    def futures_follow_their_jobs(self) -> None:
        for tracked in self.tracked:
            job, future = tracked.job, tracked.future
            if future.done():
                assert job.status.is_terminal, f"{job!r}: Future done, job not terminal"
            status = job.status
            if tracked.terminal is not None:
                assert status is tracked.terminal, f"{job!r} left {tracked.terminal}"
            if not status.is_terminal:
                continue
            tracked.terminal = status
            done, _ = cf.wait([future], timeout=REAL_WAIT)
            assert done, f"{job!r} is {status} but its Future never resolved"
            self.check_outcome(tracked, status)

    @invariant()
    def attempts_obey_the_policy(self) -> None:
        for tracked in self.tracked:
            with self.pool.stats.lock:  # attempts are written under this lock
                status = tracked.job.status
                attempts = [dataclasses.replace(a) for a in tracked.job.attempts]
            assert len(attempts) <= MAX_ATTEMPTS
            for number, attempt in enumerate(attempts, start=1):
                assert attempt.number == number
                assert attempt.deadline == attempt.started + TIMEOUT
                if attempt.outcome is AttemptOutcome.TIMED_OUT:
                    assert attempt.ended is not None
                    assert attempt.ended >= attempt.deadline, "timed out before its deadline"
            for earlier, later in itertools.pairwise(attempts):
                assert earlier.outcome in (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT)
                assert earlier.ended is not None
                backoff = BACKOFF * 2 ** (earlier.number - 1)
                assert later.started >= earlier.ended + backoff, "retried before its backoff"
            if status is S.RUNNING:  # its attempt runs, or the timer fenced it: being settled
                assert attempts and (
                    attempts[-1].outcome is None or attempts[-1].ended_by == "timer"
                )

    @invariant()
    def threads_are_bounded(self) -> None:
        # Workers, plus at most max_abandoned_threads hung ones.
        assert len(self.pool.worker_threads()) <= MAX_WORKERS + MAX_ABANDONED

    # -- helpers ----------------------------------------------------------------------------------

    def still_view(self) -> tuple[StatsSnapshot, list[tuple[JobStatus, list[Any]]]]:
        """Every job's status and attempt outcomes, with a snapshot of the same moment."""
        stats = self.pool.stats
        for _ in range(1000):
            before = stats.snapshot()
            with stats.lock:
                view = [(t.job.status, [a.outcome for a in t.job.attempts]) for t in self.tracked]
            after = stats.snapshot()
            if same_books(before, after):
                return after, view
        raise AssertionError("the books never held still")

    def check_outcome(self, tracked: Tracked, status: JobStatus) -> None:
        job, future, kind = tracked.job, tracked.future, tracked.body.kind
        with self.pool.stats.lock:
            outcomes = [a.outcome for a in job.attempts]
            errors = [a.error for a in job.attempts]
        if status is S.CANCELLED:
            assert future.cancelled()
            return
        assert not future.cancelled()
        assert outcomes, f"{job!r} ended {status} without running"
        # Any attempt may time out if the clock moved past its deadline while it ran.
        if status is S.SUCCEEDED:
            assert kind in (Kind.SUCCEED, Kind.BLOCK)
            assert outcomes[-1] is AttemptOutcome.SUCCEEDED
            assert future.result(timeout=0) == tracked.body.value
        elif status is S.FAILED:
            assert kind in (Kind.RAISE, Kind.FATAL)
            assert outcomes[-1] is AttemptOutcome.FAILED
            error = future.exception(timeout=0)
            assert error is errors[-1]
            if kind is Kind.RAISE:
                assert isinstance(error, BoomError)
                assert len(outcomes) == MAX_ATTEMPTS, "a retryable error was not retried"
            else:
                assert isinstance(error, NonRetryableError)
        else:
            assert status is S.TIMED_OUT
            assert outcomes[-1] is AttemptOutcome.TIMED_OUT
            assert AttemptOutcome.TIMED_OUT in outcomes
            assert isinstance(future.exception(timeout=0), JobTimeoutError)
            assert len(outcomes) == MAX_ATTEMPTS, "a timed-out attempt was not retried"

    def teardown(self) -> None:
        try:
            self.drain()
            self.pool.shutdown(wait=True)  # nothing is left, so it returns at once
            snap = self.pool.stats.snapshot()
            assert snap.in_flight == 0
            assert snap.finished == snap.submitted == len(self.tracked)
            assert self.pool.unfinished_jobs() == []
            self.futures_follow_their_jobs()
        finally:
            self.release_all()
            self.pool.shutdown(wait=True, cancel_futures=True, grace=0)  # idempotent


PoolMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestPoolMachine = PoolMachine.TestCase


# -- the fake clock moves while the timer is between reading it and going to sleep -----------


class RacingClock(FakeClock):
    """A FakeClock that can move on by ``jump`` right after one thread reads it.

    That is what happens when a test calls ``advance()`` just after the pool's timer thread
    read the time and before it started to wait: an interleaving that plain scheduling
    produces now and then, forced here so the test is deterministic.
    """

    def __init__(self, start: float, *, thread_name: str) -> None:
        super().__init__(start)
        self._thread_name = thread_name
        self._lock = threading.Lock()  # guards _jump
        self._jump: float | None = None
        self.jumped = threading.Event()
        self._waits = threading.Condition()  # guards waits
        self.waits = 0  # calls to wait_until() from the watched thread

    def jump_on_next_read(self, jump: float) -> None:
        with self._lock:
            self._jump = jump

    def now(self) -> float:
        value = super().now()
        if threading.current_thread().name == self._thread_name:
            with self._lock:
                jump, self._jump = self._jump, None
            if jump is not None:
                self.advance(jump)
                self.jumped.set()
        return value

    def wait_until(self, wakeup: threading.Event, deadline: float | None) -> bool:
        if threading.current_thread().name == self._thread_name:
            with self._waits:
                self.waits += 1
                self._waits.notify_all()
        return super().wait_until(wakeup, deadline)

    def wait_for_waits(self, count: int) -> bool:
        with self._waits:
            return self._waits.wait_for(lambda: self.waits >= count, REAL_WAIT)


def test_an_attempt_times_out_when_the_clock_passed_its_deadline_as_the_timer_slept() -> None:
    clock = RacingClock(100.0, thread_name="racing_timer")
    pool = WorkerPool(
        max_workers=1,
        thread_name_prefix="racing",
        timeout=TIMEOUT,
        clock=clock,
        logger=structlog.testing.CapturingLogger(),
    )
    hung = Body(Kind.BLOCK, 1)
    try:
        # Get the timer thread going, then idle: it waits for a wakeup, no deadline in sight.
        assert pool.submit(Body(Kind.SUCCEED, 0)).result(timeout=REAL_WAIT) == 0
        assert clock.wait_for_waits(1)
        assert clock.wait_for_waiters(1)
        clock.advance(TIMEOUT)
        assert clock.wait_for_waits(2)
        assert clock.wait_for_waiters(1)
        # Its next reading of the clock is the last one before the clock moves on.
        clock.jump_on_next_read(2 * TIMEOUT)
        future = pool.submit(hung)  # deadline: now + TIMEOUT; wakes the timer
        assert hung.entered.wait(REAL_WAIT)
        assert clock.jumped.wait(REAL_WAIT)
        deadline = future.job.attempts[0].deadline
        assert deadline is not None
        assert clock.now() > deadline
        # The deadline has passed: the attempt must time out without another advance().
        done, _ = cf.wait([future], timeout=2.0)
        assert done, (
            f"clock at {clock.now()}, attempt deadline {deadline}, but the job is still "
            f"{future.job.status}"
        )
        assert isinstance(future.exception(timeout=0), JobTimeoutError)
    finally:
        hung.release.set()
        pool.shutdown(wait=True, cancel_futures=True, grace=0)
