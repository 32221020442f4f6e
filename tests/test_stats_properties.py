"""Stats always add up: random transitions through chronos._ledger, checked against a model."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chronos import AttemptOutcome, IllegalTransitionError, Job, JobStatus, Stats, StatsSnapshot
from chronos._ledger import (
    WAITING_STATES,
    Ledger,
    admit,
    cancel_event,
    end_attempt,
    legal_moves,
    move,
    start_attempt,
)
from chronos.events import JobEvents
from chronos.job import Attempt
from chronos.stats import LatencySummary
from chronos.status import TERMINAL_STATES

S = JobStatus
#: ``move`` is for waiting states only ("never into or out of RUNNING").
MOVE_TARGETS = tuple(s for s in JobStatus if s is not S.RUNNING)
MOVE_EXPECTATIONS = tuple(s for s in JobStatus if s not in (S.RUNNING, S.CREATED))
expectations = st.one_of(
    st.sampled_from(MOVE_EXPECTATIONS),
    st.just(WAITING_STATES),
    st.frozensets(st.sampled_from(MOVE_EXPECTATIONS), min_size=1),
)
#: (new status, outcome) pairs that end an attempt, as chronos.attempts uses them.
LEGAL_ENDS = (
    (S.SUCCEEDED, AttemptOutcome.SUCCEEDED),
    (S.FAILED, AttemptOutcome.FAILED),
    (S.TIMED_OUT, AttemptOutcome.TIMED_OUT),
    (S.RETRY_WAIT, AttemptOutcome.FAILED),
    (S.RETRY_WAIT, AttemptOutcome.TIMED_OUT),
    (S.CANCELLED, AttemptOutcome.CANCELLED),
)
ILLEGAL_ENDS = (
    (S.QUEUED, AttemptOutcome.FAILED),
    (S.PENDING, AttemptOutcome.TIMED_OUT),
    (S.CREATED, AttemptOutcome.FAILED),
    (S.RUNNING, AttemptOutcome.SUCCEEDED),
)
indices = st.integers(min_value=0, max_value=10**6)


def noop() -> None:
    """The body of every job here: these tests drive the transitions by hand."""


class NoRoute:
    """A Route for jobs whose retries the test requeues itself."""

    _tracks_jobs = False
    _outstanding = 0

    def _all_finished(self) -> None:
        raise AssertionError("a route that does not track jobs is never told they finished")

    def requeue(self, job: Job[Any]) -> None:
        raise AssertionError(f"nothing should requeue {job!r} here")


ROUTE = NoRoute()


class Holder:
    """Where a worker publishes its running attempt: a stand-in for a worker slot."""

    def __init__(self) -> None:
        self.current: tuple[Job[Any], Attempt] | None = None


def new_ledger() -> Ledger:
    """A Ledger built as WorkerPool builds its own."""
    return Ledger(Stats(), JobEvents(structlog.testing.CapturingLogger()))


def queued_job(ledger: Ledger, now: float = 0.0) -> Job[None]:
    job = Job(noop)
    admit(job, ledger, S.QUEUED, now, ROUTE)
    return job


def adds_up(snap: StatsSnapshot) -> bool:
    in_states = (
        snap.pending
        + snap.queued
        + snap.running
        + snap.waiting_to_retry
        + snap.succeeded
        + snap.failed
        + snap.timed_out
        + snap.cancelled
    )
    return snap.submitted == in_states == snap.in_flight + snap.finished


def assert_summarises(summary: LatencySummary, samples: list[float]) -> None:
    assert summary.count == len(samples)
    if not samples:
        assert summary == LatencySummary()
        return
    assert summary.max == max(samples)
    assert {summary.p50, summary.p95, summary.p99} <= set(samples)
    assert min(samples) <= summary.p50 <= summary.p95 <= summary.p99 <= summary.max


def error_for(outcome: AttemptOutcome) -> BaseException | None:
    return None if outcome is AttemptOutcome.SUCCEEDED else RuntimeError(outcome.value)


# -- single-threaded: random legal and illegal moves against a model ---------------------------


@dataclass
class Model:
    """What the books should say."""

    status: dict[int, JobStatus] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    queued_at: dict[int, float] = field(default_factory=dict)
    terminal: dict[int, JobStatus] = field(default_factory=dict)
    submitted: int = 0
    started: int = 0
    retries: int = 0
    attempt_timeouts: int = 0
    queue_waits: list[float] = field(default_factory=list)
    run_times: list[float] = field(default_factory=list)

    def moved(self, job: Job[Any], new: JobStatus, now: float) -> None:
        self.status[job.id] = new
        if new is S.QUEUED:
            self.queued_at[job.id] = now
        elif new is S.RETRY_WAIT:
            self.retries += 1
        if new in TERMINAL_STATES:
            assert job.id not in self.terminal, "a job reached a second terminal state"
            self.terminal[job.id] = new

    def count(self, status: JobStatus) -> int:
        return sum(1 for s in self.status.values() if s is status)


class StatsMachine(RuleBasedStateMachine):
    """Admits jobs and moves them at random, legally or not, through the CAS helpers."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger = new_ledger()
        self.now = 0.0
        self.closed = False
        self.jobs: list[Job[None]] = []
        self.model = Model()
        self.holder = Holder()

    def pick(self, index: int) -> Job[None]:
        return self.jobs[index % len(self.jobs)]

    def state(self, job: Job[Any]) -> tuple[object, ...]:
        """Everything a refused or losing transition must leave as it was."""
        return (
            job.status,
            list(job.attempts),
            self.ledger.stats.snapshot(),
            self.ledger.live_jobs(),
            self.ledger.drained.is_set(),
            self.holder.current,
        )

    # -- admission ------------------------------------------------------------------------------

    @rule(into=st.sampled_from([S.PENDING, S.QUEUED]))
    def admit_a_new_job(self, into: JobStatus) -> None:
        job = Job(noop)
        if self.closed:
            books = self.ledger.stats.snapshot()
            with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
                admit(job, self.ledger, into, self.now, ROUTE)
            assert job.status is S.CREATED
            assert self.ledger.stats.snapshot() == books
            return
        admit(job, self.ledger, into, self.now, ROUTE)
        self.jobs.append(job)
        self.model.submitted += 1
        self.model.attempts[job.id] = 0
        self.model.moved(job, into, self.now)

    @precondition(lambda self: self.jobs)
    @rule(index=indices, into=st.sampled_from([S.PENDING, S.QUEUED]))
    def admit_a_job_twice(self, index: int, into: JobStatus) -> None:
        job = self.pick(index)
        before = self.state(job)
        with pytest.raises(ValueError, match="was already submitted"):
            admit(job, self.ledger, into, self.now, ROUTE)
        assert self.state(job) == before

    @rule()
    def close(self) -> None:
        assert self.ledger.close() is not self.closed
        self.closed = True

    @rule(dt=st.sampled_from([0.0, 0.25, 1.0, 7.5]))
    def advance(self, dt: float) -> None:
        self.now += dt

    # -- compare-and-set between waiting states --------------------------------------------------

    @precondition(lambda self: self.jobs)
    @rule(
        index=indices,
        match=st.booleans(),
        drawn=expectations,
        new=st.sampled_from(MOVE_TARGETS),
    )
    def move_a_job(
        self, index: int, match: bool, drawn: JobStatus | frozenset[JobStatus], new: JobStatus
    ) -> None:
        job = self.pick(index)
        current = self.model.status[job.id]
        expected = current if match and current is not S.RUNNING else drawn
        matches = current in expected if isinstance(expected, frozenset) else current is expected
        if not matches:
            before = self.state(job)
            assert move(job, expected, new, self.now) is False
            assert self.state(job) == before
        elif new in legal_moves(current):
            assert move(job, expected, new, self.now) is True
            self.model.moved(job, new, self.now)
        else:
            before = self.state(job)
            with pytest.raises(
                IllegalTransitionError, match=f"{current.value} -> {new.value} is not allowed"
            ):
                move(job, expected, new, self.now)
            assert self.state(job) == before

    # -- attempts --------------------------------------------------------------------------------

    @precondition(lambda self: self.jobs)
    @rule(index=indices, deadline=st.one_of(st.none(), st.floats(0.0, 100.0)))
    def start_an_attempt(self, index: int, deadline: float | None) -> None:
        job = self.pick(index)
        if self.model.status[job.id] is not S.QUEUED:
            before = self.state(job)
            assert start_attempt(job, self.now, "worker", deadline, self.holder) is None
            assert self.state(job) == before
            return
        attempt = start_attempt(job, self.now, "worker", deadline, self.holder)
        assert attempt is not None
        assert job.attempts[-1] is attempt
        assert self.holder.current is not None
        assert self.holder.current[0] is job and self.holder.current[1] is attempt
        self.model.attempts[job.id] += 1
        assert attempt.number == self.model.attempts[job.id]
        assert (attempt.worker, attempt.started, attempt.deadline) == ("worker", self.now, deadline)
        assert (attempt.ended, attempt.outcome, attempt.error) == (None, None, None)
        self.model.started += 1
        self.model.queue_waits.append(self.now - self.model.queued_at[job.id])
        self.model.moved(job, S.RUNNING, self.now)

    @precondition(lambda self: any(job.attempts for job in self.jobs))
    @rule(
        index=indices,
        end=st.sampled_from(LEGAL_ENDS + ILLEGAL_ENDS),
        which=st.sampled_from(["last", "earlier", "stranger"]),
    )
    def end_an_attempt(self, index: int, end: tuple[JobStatus, AttemptOutcome], which: str) -> None:
        job = [j for j in self.jobs if j.attempts][index % sum(1 for j in self.jobs if j.attempts)]
        if which == "last":
            attempt = job.attempts[-1]
        elif which == "earlier" and len(job.attempts) > 1:
            attempt = job.attempts[-2]
        else:
            attempt = Attempt(len(job.attempts), "impostor", self.now)
        new, outcome = end
        error = error_for(outcome)
        current = self.model.status[job.id]
        if current is not S.RUNNING or attempt is not job.attempts[-1]:
            record = (self.state(job), attempt.ended, attempt.outcome, attempt.error)
            assert end_attempt(job, attempt, new, outcome, self.now, error) is False
            assert (self.state(job), attempt.ended, attempt.outcome, attempt.error) == record
        elif new in legal_moves(S.RUNNING):
            assert end_attempt(job, attempt, new, outcome, self.now, error) is True
            assert (attempt.ended, attempt.outcome, attempt.error) == (self.now, outcome, error)
            self.model.run_times.append(self.now - attempt.started)
            self.model.attempt_timeouts += outcome is AttemptOutcome.TIMED_OUT
            self.model.moved(job, new, self.now)
        else:
            # Status and books must be untouched; the attempt record is checked in
            # test_an_illegal_end_attempt_changes_nothing.
            before = self.state(job)
            with pytest.raises(
                IllegalTransitionError, match=f"running -> {new.value} is not allowed"
            ):
                end_attempt(job, attempt, new, outcome, self.now, error)
            assert self.state(job) == before

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def books_add_up_and_match_the_model(self) -> None:
        snap = self.ledger.stats.snapshot()
        model = self.model
        assert adds_up(snap), snap
        assert snap.submitted == model.submitted == len(self.jobs)
        for status in JobStatus:
            if status is not S.CREATED:
                assert self.ledger.stats.count(status) == model.count(status), status
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
            model.count(S.PENDING),
            model.count(S.QUEUED),
            model.count(S.RUNNING),
            model.count(S.RETRY_WAIT),
            model.count(S.SUCCEEDED),
            model.count(S.FAILED),
            model.count(S.TIMED_OUT),
            model.count(S.CANCELLED),
        )
        assert snap.attempts == model.started == sum(len(j.attempts) for j in self.jobs)
        assert snap.retries == model.retries
        assert snap.attempt_timeouts == model.attempt_timeouts
        assert_summarises(snap.queue_wait, model.queue_waits)
        assert_summarises(snap.run_time, model.run_times)
        assert (snap.abandoned_threads, snap.abandoned_threads_total) == (0, 0)

    @invariant()
    def jobs_match_the_model(self) -> None:
        for job in self.jobs:
            assert job.status is self.model.status[job.id]
            assert len(job.attempts) == self.model.attempts[job.id]
            if job.id in self.model.terminal:
                assert job.status is self.model.terminal[job.id], "a job left a terminal state"
        live = [job for job in self.jobs if not self.model.status[job.id].is_terminal]
        assert self.ledger.live_jobs() == live
        assert self.ledger.drained.is_set() == (self.closed and not live)


StatsMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestStatsMachine = StatsMachine.TestCase


# -- a refused transition leaves everything as it was -----------------------------------------


def test_an_illegal_end_attempt_changes_nothing() -> None:
    ledger = new_ledger()
    job = queued_job(ledger)
    attempt = start_attempt(job, 1.0, "worker", 5.0, Holder())
    assert attempt is not None
    stop = cancel_event(job, attempt)
    books = ledger.stats.snapshot()
    with pytest.raises(IllegalTransitionError, match="running -> queued is not allowed"):
        end_attempt(job, attempt, S.QUEUED, AttemptOutcome.FAILED, 2.0, RuntimeError("boom"))
    assert job.status is S.RUNNING
    assert ledger.stats.snapshot() == books
    assert (attempt.ended, attempt.outcome, attempt.error) == (None, None, None)
    assert not stop.is_set(), "a refused transition told the running attempt to stop"


def test_an_illegal_admission_leaves_the_job_unsubmitted() -> None:
    ledger = new_ledger()
    job = Job(noop)
    with pytest.raises(IllegalTransitionError, match="created -> running is not allowed"):
        admit(job, ledger, S.RUNNING, 0.0, ROUTE)
    assert job.status is S.CREATED
    assert ledger.stats.snapshot().submitted == 0
    admit(job, ledger, S.QUEUED, 0.0, ROUTE)  # nothing happened, so it can be submitted
    assert ledger.live_jobs() == [job]
    assert ledger.stats.count(S.QUEUED) == 1


def test_admit_refuses_what_is_not_a_job() -> None:
    with pytest.raises(TypeError, match=r"job must be a chronos\.Job, got function"):
        admit(noop, new_ledger(), S.QUEUED, 0.0, ROUTE)  # type: ignore[arg-type]


def test_every_terminal_state_is_final() -> None:
    for terminal in TERMINAL_STATES:
        assert legal_moves(terminal) == frozenset()
        assert terminal.is_terminal
    for status in JobStatus:
        if status not in TERMINAL_STATES:
            assert not status.is_terminal


# -- many threads: snapshots taken while transitions race always add up -----------------------

WORKERS = 4
ROUNDS = 300
SHARED = 30
MAX_ATTEMPTS = 4
JOIN_TIMEOUT = 20.0


@dataclass
class Tally:
    """What one thread won; merged after every thread is joined."""

    starts: Counter[int] = field(default_factory=Counter)
    ends: list[tuple[int, int, JobStatus]] = field(default_factory=list)
    requeues: int = 0
    cancels: int = 0
    own: list[Job[None]] = field(default_factory=list)


def own_job_life(ledger: Ledger, i: int, name: str, holder: Holder) -> Job[None]:
    """A job no other thread touches: every compare-and-set must win, every repeat lose."""
    job = Job(noop)
    admit(job, ledger, S.PENDING, 0.0, ROUTE)
    assert move(job, S.PENDING, S.QUEUED)
    assert not move(job, S.PENDING, S.QUEUED)
    first = start_attempt(job, 0.0, name, None, holder)
    assert first is not None
    assert start_attempt(job, 0.0, name, None, holder) is None
    assert end_attempt(job, first, S.RETRY_WAIT, AttemptOutcome.TIMED_OUT, 0.0)
    assert not end_attempt(job, first, S.FAILED, AttemptOutcome.FAILED, 0.0)
    assert move(job, S.RETRY_WAIT, S.QUEUED)
    if i % 4 == 3:
        assert move(job, WAITING_STATES, S.CANCELLED)
        return job
    second = start_attempt(job, 0.0, name, None, holder)
    assert second is not None
    final, outcome = LEGAL_ENDS[i % 3]
    assert end_attempt(job, second, final, outcome, 0.0, error_for(outcome))
    return job


def hammer(ledger: Ledger, shared: list[Job[None]], k: int, tally: Tally) -> None:
    name = f"hammer-{k}"
    holder = Holder()
    for i in range(ROUNDS):
        tally.own.append(own_job_life(ledger, i, name, holder))
        job = shared[i % SHARED]
        action = (i // SHARED + k) % 4  # on each pass, each thread does something else
        if action == 0:
            if start_attempt(job, 0.0, name, None, holder) is not None:
                tally.starts[job.id] += 1
        elif action == 1:
            if job.attempts:
                attempt = job.attempts[-1]
                new = S.RETRY_WAIT if attempt.number < MAX_ATTEMPTS else S.TIMED_OUT
                if end_attempt(job, attempt, new, AttemptOutcome.TIMED_OUT, 0.0):
                    tally.ends.append((job.id, attempt.number, new))
        elif action == 2:
            if move(job, S.RETRY_WAIT, S.QUEUED):
                tally.requeues += 1
        elif i % 97 == k and move(job, WAITING_STATES, S.CANCELLED):
            tally.cancels += 1


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads far more often than every 5 ms, so that transitions interleave."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("busy_switching")
def test_snapshots_add_up_while_threads_race() -> None:
    ledger = new_ledger()
    stats = ledger.stats
    shared = [queued_job(ledger) for _ in range(SHARED)]
    tallies = [Tally() for _ in range(WORKERS)]
    errors: list[BaseException] = []
    bad_snapshots: list[StatsSnapshot] = []
    snapshots_taken = 0
    start = threading.Barrier(WORKERS + 1)
    workers_done = threading.Event()

    def run_hammer(k: int) -> None:
        try:
            start.wait(5)
            hammer(ledger, shared, k, tallies[k])
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    def watch() -> None:
        nonlocal snapshots_taken
        previous = stats.snapshot()
        try:
            start.wait(5)
            while True:
                done = workers_done.is_set()
                snap = stats.snapshot()
                snapshots_taken += 1
                monotone = (
                    snap.submitted >= previous.submitted
                    and snap.attempts >= previous.attempts
                    and snap.retries >= previous.retries
                    and snap.attempt_timeouts >= previous.attempt_timeouts
                    and snap.finished >= previous.finished
                )
                if not adds_up(snap) or not monotone:
                    bad_snapshots.append(snap)
                previous = snap
                if done:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run_hammer, args=(k,), name=f"hammer-{k}") for k in range(WORKERS)
    ]
    watcher = threading.Thread(target=watch, name="watcher")
    for thread in [*threads, watcher]:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), f"{thread.name} is stuck"
    workers_done.set()
    watcher.join(JOIN_TIMEOUT)
    assert not watcher.is_alive()

    assert not errors, errors
    assert not bad_snapshots, bad_snapshots[:3]
    assert snapshots_taken > 1

    final = stats.snapshot()
    assert adds_up(final)
    own = [job for tally in tallies for job in tally.own]
    every_job = shared + own
    assert final.submitted == len(every_job) == SHARED + WORKERS * ROUNDS
    by_status = Counter(job.status for job in every_job)
    assert final.pending == by_status[S.PENDING]
    assert final.queued == by_status[S.QUEUED]
    assert final.running == by_status[S.RUNNING]
    assert final.waiting_to_retry == by_status[S.RETRY_WAIT]
    assert final.succeeded == by_status[S.SUCCEEDED]
    assert final.failed == by_status[S.FAILED]
    assert final.timed_out == by_status[S.TIMED_OUT]
    assert final.cancelled == by_status[S.CANCELLED]
    assert ledger.live_jobs() == [job for job in every_job if not job.status.is_terminal]

    # Every attempt was started by exactly one thread and ended by at most one.
    starts: Counter[int] = sum((t.starts for t in tallies), Counter())
    ends = [end for tally in tallies for end in tally.ends]
    assert len(ends) == len({(job_id, number) for job_id, number, _ in ends})
    for job in shared:
        assert len(job.attempts) == starts[job.id] <= MAX_ATTEMPTS
        assert [a.number for a in job.attempts] == list(range(1, len(job.attempts) + 1))
        for attempt in job.attempts[:-1]:
            assert attempt.outcome is AttemptOutcome.TIMED_OUT
    own_attempts = sum(len(job.attempts) for job in own)
    assert final.attempts == own_attempts + sum(starts.values())
    shared_retries = sum(1 for _, _, new in ends if new is S.RETRY_WAIT)
    assert final.retries == len(own) + shared_retries
    own_timeouts = sum(
        1 for job in own for a in job.attempts if a.outcome is AttemptOutcome.TIMED_OUT
    )
    assert final.attempt_timeouts == own_timeouts + len(ends)
    requeues = sum(t.requeues for t in tallies)
    assert requeues <= shared_retries
    assert sum(t.cancels for t in tallies) == sum(1 for j in shared if j.status is S.CANCELLED)
