"""The books of a pool: run records, and the one transition function that moves jobs.

Every status change of every job goes through :func:`_apply`, called with the owning pool's
:class:`Ledger` lock held.  It refuses moves the state machine does not allow (see
:mod:`chronos.job`), updates the pool's :class:`chronos.Stats` in the same critical section,
and keeps the ledger's set of unfinished jobs.  Callers move jobs with compare-and-set
helpers (:func:`move`, :func:`start_attempt`, :func:`end_attempt`...): when a worker and the
timeout watchdog race to end the same attempt, exactly one wins and the other gets ``False``.

The moves every job makes are written out inline, for speed, in :func:`admit`,
:func:`release_pending`, :func:`start_attempt` and :func:`succeed_attempt`: each names
:func:`_apply` (and :meth:`chronos.Stats._record`) as its original, and those list them.

Longer than the ~400 lines the house style aims at, on purpose: the transition function
and its inlined copies must stay side by side, where a change to one is seen next to the
others.

This module is the one writer of a job's run record (``Job._status``, ``_future``,
``_ledger``...) and of the Stats counters: ruff's SLF001 is waived for it alone.

Thread-safety: every function takes the ledger lock itself; none runs user code, blocks,
or starts a thread while holding it.  :func:`resolve_cancelled` runs done-callbacks (user
code), after the move and outside the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chronos.errors import IllegalTransitionError
from chronos.job import (
    _NO_KWARGS,
    Attempt,
    AttemptOutcome,
    Job,
    JobFuture,
    _released,
    callable_name,
)
from chronos.stats import Stats
from chronos.status import TERMINAL_STATES, JobStatus

if TYPE_CHECKING:
    from chronos.events import JobEvents

__all__ = [
    "WAITING_STATES",
    "AttemptHolder",
    "JobTracker",
    "Ledger",
    "Route",
    "admit",
    "cancel_event",
    "cancel_waiting",
    "detach_future",
    "end_attempt",
    "fence_attempt",
    "legal_moves",
    "move",
    "release_pending",
    "resolve_cancelled",
    "route_of",
    "settle_attempt",
    "start_attempt",
    "succeed_attempt",
]

T = TypeVar("T")
_S = JobStatus

_LEGAL: dict[JobStatus, frozenset[JobStatus]] = {
    _S.CREATED: frozenset({_S.PENDING, _S.QUEUED}),
    _S.PENDING: frozenset({_S.QUEUED, _S.CANCELLED, _S.FAILED}),
    _S.QUEUED: frozenset({_S.RUNNING, _S.CANCELLED, _S.FAILED}),
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.TIMED_OUT, _S.RETRY_WAIT, _S.CANCELLED}),
    _S.RETRY_WAIT: frozenset({_S.QUEUED, _S.PENDING, _S.CANCELLED, _S.FAILED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.TIMED_OUT: frozenset(),
    _S.CANCELLED: frozenset(),
}
#: States from which a job can be cancelled without touching a running thread.
WAITING_STATES = frozenset({_S.PENDING, _S.QUEUED, _S.RETRY_WAIT})

# Module globals for the hot paths: an attribute of an Enum class costs a lookup each time.
_CREATED = JobStatus.CREATED
_PENDING = JobStatus.PENDING
_QUEUED = JobStatus.QUEUED
_RUNNING = JobStatus.RUNNING
_RETRY_WAIT = JobStatus.RETRY_WAIT
_SUCCEEDED = JobStatus.SUCCEEDED
_CANCELLED = JobStatus.CANCELLED
_OUTCOME_SUCCEEDED = AttemptOutcome.SUCCEEDED


def legal_moves(status: JobStatus) -> frozenset[JobStatus]:
    """The states a job in ``status`` may move to next."""
    return _LEGAL[status]


class AttemptHolder(Protocol):
    """Where a worker publishes its running attempt (a worker slot)."""

    current: tuple[Job[Any], Attempt] | None


class Route(Protocol):
    """Where a job re-enters after its retry backoff: its WorkerPool or its Dispatcher.  A
    job in flight holds its route (and so its pool) strongly."""

    def requeue(self, job: Job[Any]) -> None:
        """Put ``job``, whose backoff ended (it is RETRY_WAIT), back in line."""
        ...


class JobTracker:
    """Counts the unfinished jobs of one producer (a Dispatcher), kept by the ledger.

    ``count`` is +1 at admission and -1 when a job becomes terminal, under the ledger lock;
    at 0, ``on_zero()`` is called, still under that lock: it must only set an Event.

    Thread-safety: written under the ledger lock only; reading ``count`` elsewhere gives a
    recent value.
    """

    __slots__ = ("count", "on_zero")

    def __init__(self, on_zero: Callable[[], None]) -> None:
        self.count = 0
        self.on_zero = on_zero


class Ledger:
    """The books of one pool: its Stats, its unfinished jobs, and whether it still admits.

    Thread-safety: all state is guarded by :attr:`lock` (the Stats lock); the transition
    helpers of this module take it.  :attr:`drained` is set once the ledger is closed and no
    job is unfinished.
    """

    def __init__(self, stats: Stats, events: JobEvents) -> None:
        self.stats = stats
        self.events = events
        self.lock = stats.lock
        self.closed = False  # guarded by lock; once True, admit() refuses
        self.drained = threading.Event()
        self._live: dict[int, Job[Any]] = {}  # guarded by lock: every admitted, unfinished job

    def close(self) -> bool:
        """Refuse further admissions.  Returns True for the call that closed it."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            if not self._live:
                self.drained.set()
            return True

    def request_stop(self, job: Job[Any]) -> bool:
        """Tell the running attempt of ``job`` to stop (see :meth:`chronos.Job.request_stop`).

        Raises:
            ValueError: ``job`` belongs to another ledger.
        """
        if job._ledger is not self:
            raise ValueError(f"{job!r} is not a job of this pool")
        with self.lock:
            if job._status is not _RUNNING:
                return False
            attempt = job.attempts[-1]
            if attempt.outcome is not None:
                return False
            _signal_cancel(attempt)
            return True

    def live_jobs(self) -> list[Job[Any]]:
        """Every admitted job that is not terminal yet, oldest first."""
        with self.lock:
            return list(self._live.values())

    def cancel_waiting(self, job: Job[Any], reason: str) -> bool:
        """Cancel ``job`` if it waits (pending, queued, in backoff): see :func:`cancel_waiting`.

        Raises:
            ValueError: ``job`` belongs to another ledger.
        """
        if job._ledger is not self:
            raise ValueError(f"{job!r} is not a job of this pool")
        return cancel_waiting(job, WAITING_STATES, 0.0, reason)


def detach_future(job: Job[T], result: T | None, error: BaseException | None) -> JobFuture[T]:
    """The Future of a job that just became terminal, which the caller then resolves.

    Breaks the job <-> Future cycle (the job keeps a copy of the outcome instead) and, unless
    the job was cancelled, releases its callable and arguments.  Called once per job, by the
    thread whose transition made it terminal.
    """
    future = job._future
    assert future is not None, "detach_future() called twice"
    job._future = None
    job._result = result
    job._error = error
    if job._status is not _CANCELLED:
        if job._name is None:
            job._name = callable_name(job.fn)
        job.fn = _released
        job.args = ()
        job.kwargs = _NO_KWARGS
    return future


def resolve_cancelled(job: Job[Any]) -> None:
    """Resolve the Future of a job that just became CANCELLED (waiters are told before any
    done-callback runs)."""
    detach_future(job, None, None).resolve_cancelled()


def cancel_waiting(
    job: Job[Any], expected: JobStatus | frozenset[JobStatus], now: float, reason: str
) -> bool:
    """Cancel a job that waits (in ``expected``): the move, its Future, its event.

    Returns:
        True if this call cancelled it; False if it was no longer in ``expected``.
    """
    if not move(job, expected, JobStatus.CANCELLED, now):
        return False
    resolve_cancelled(job)
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # move() succeeded: admitted
    ledger.events.cancelled(job, reason=reason)
    return True


# -- the transition function and its compare-and-set helpers -------------------------------


def _check_legal(job: Job[Any], new: JobStatus) -> None:
    old = job._status
    if new not in _LEGAL[old]:
        raise IllegalTransitionError(f"job #{job.id}: {old.value} -> {new.value} is not allowed")


def _apply(
    job: Job[Any],
    ledger: Ledger,
    new: JobStatus,
    now: float,
    *,
    queue_wait: float | None = None,
    run_time: float | None = None,
    timed_out: bool = False,
) -> None:
    """Write ``job._status`` and the books: the general transition.

    The caller holds ``ledger.lock`` and has checked the move (:func:`_check_legal`).  The
    moves of the hot paths (:func:`admit`, :func:`release_pending`, :func:`start_attempt`,
    :func:`succeed_attempt`) do the same writes inline, for speed; nothing else writes a
    status.
    """
    old = job._status
    job._status = new
    if new is _QUEUED:
        job._queued_at = now
    ledger.stats._record(old, new, queue_wait=queue_wait, run_time=run_time, timed_out=timed_out)
    if old is _CREATED:
        ledger._live[job.id] = job
    elif new in TERMINAL_STATES:
        del ledger._live[job.id]
        if ledger.closed and not ledger._live:
            ledger.drained.set()
        _tracked_finished(job)


def _tracked_finished(job: Job[Any]) -> None:
    """``job`` just became terminal: count it off its producer's tracker.  Caller holds the
    ledger lock.  (Inlined in :func:`succeed_attempt`.)"""
    tracker = job._tracker
    if tracker is not None:
        tracker.count -= 1
        if not tracker.count:
            tracker.on_zero()


def admit(
    job: Job[Any],
    ledger: Ledger,
    new: JobStatus,
    now: float,
    route: Route,
    tracker: JobTracker | None = None,
) -> None:
    """Submit ``job`` to the pool that keeps ``ledger``: CREATED -> PENDING or QUEUED.

    Raises:
        TypeError: ``job`` is not a Job.
        ValueError: the job was submitted before.
        RuntimeError: the pool is shut down.
    """
    if not isinstance(job, Job):
        raise TypeError(f"job must be a chronos.Job, got {type(job).__name__}")
    with ledger.lock:
        if job._ledger is not None or job._status is not _CREATED:
            raise ValueError(f"{job!r} was already submitted; a Job can be submitted once")
        if new is not _QUEUED and new is not _PENDING:
            _check_legal(job, new)  # raises: a job is admitted as queued or pending only
        if ledger.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        job._ledger = ledger
        job._route = route
        job._tracker = tracker
        # _apply(job, ledger, new, now), inline:
        job._status = new
        job._queued_at = now
        stats = ledger.stats
        stats.submitted += 1
        stats._counts[new] += 1
        ledger._live[job.id] = job
        if tracker is not None:
            tracker.count += 1


def move(
    job: Job[Any], expected: JobStatus | frozenset[JobStatus], new: JobStatus, now: float = 0.0
) -> bool:
    """Compare-and-set between waiting states (never into or out of RUNNING).

    Returns:
        True if the job was in ``expected`` (one state or a set) and is now in ``new``.

    Raises:
        IllegalTransitionError: ``new`` or ``expected`` is RUNNING (use start_attempt or
            end_attempt), or the state machine does not allow the move.
    """
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None, "move() on a job that was never submitted"
    if new is _RUNNING or (
        expected is _RUNNING or (isinstance(expected, frozenset) and _RUNNING in expected)
    ):
        raise IllegalTransitionError("move() never enters or leaves RUNNING: use the attempts")
    with ledger.lock:
        status = job._status
        if status is not expected and (
            not isinstance(expected, frozenset) or status not in expected
        ):
            return False
        _check_legal(job, new)
        _apply(job, ledger, new, now)
        return True


def release_pending(job: Job[Any], now: float) -> bool:
    """PENDING -> QUEUED: a Dispatcher lets ``job`` into the pool's queue.

    :func:`move` for the move every dispatched job makes, with its writes inline.

    Returns:
        True if the job was pending; False if it is not any more (cancelled meanwhile).
    """
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None
    with ledger.lock:
        if job._status is not _PENDING:
            return False
        job._status = _QUEUED  # PENDING -> QUEUED is always legal
        job._queued_at = now
        counts = ledger.stats._counts
        counts[_PENDING] -= 1
        counts[_QUEUED] += 1
        return True


def start_attempt(
    job: Job[Any], now: float, worker: str, deadline: float | None, holder: AttemptHolder
) -> Attempt | None:
    """QUEUED -> RUNNING with a new Attempt, or None if the job is no longer queued.

    The attempt is published on ``holder.current`` in the same critical section, so whoever
    sees the job RUNNING (shutdown, under the same lock) also finds the thread running it.
    """
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None
    with ledger.lock:
        if job._status is not _QUEUED:
            return None  # QUEUED -> RUNNING is always legal
        attempts = job.attempts
        attempt = Attempt(len(attempts) + 1, worker, now, deadline)
        attempts.append(attempt)
        holder.current = (job, attempt)
        # _apply(job, ledger, RUNNING, now, queue_wait=...), inline:
        job._status = _RUNNING
        stats = ledger.stats
        counts = stats._counts
        counts[_QUEUED] -= 1
        counts[_RUNNING] += 1
        stats.attempts += 1
        stats._queue_wait.observe(now - job._queued_at)
        return attempt


def succeed_attempt(job: Job[Any], attempt: Attempt, now: float, holder: AttemptHolder) -> bool:
    """RUNNING -> SUCCEEDED, by the worker whose ``attempt`` returned: :func:`end_attempt`
    for the common case, which also clears ``holder.current`` in the same critical section.

    Returns:
        True if this call ended the attempt; False if someone else already did (the
        worker's thread is then still published on ``holder``, for the evictor to find).
    """
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None
    with ledger.lock:
        if job._status is not _RUNNING or attempt.outcome is not None:
            return False  # (a RUNNING job's last attempt is the one running: see fencing)
        attempt.ended = now
        attempt.outcome = _OUTCOME_SUCCEEDED
        holder.current = None
        # _apply(job, ledger, SUCCEEDED, now, run_time=...), inline:
        job._status = _SUCCEEDED
        stats = ledger.stats
        counts = stats._counts
        counts[_RUNNING] -= 1
        counts[_SUCCEEDED] += 1
        stats._run_time.observe(now - attempt.started)
        live = ledger._live
        del live[job.id]
        if not live and ledger.closed:
            ledger.drained.set()
        tracker = job._tracker
        if tracker is not None:  # _tracked_finished(job), inline
            tracker.count -= 1
            if not tracker.count:
                tracker.on_zero()
        return True


def _runs(job: Job[Any], attempt: Attempt) -> bool:
    """``attempt`` is ``job``'s running attempt, not ended yet.  Caller holds the ledger lock
    (:func:`succeed_attempt` has the same test inline)."""
    return job._status is _RUNNING and job.attempts[-1] is attempt and attempt.outcome is None


def end_attempt(
    job: Job[Any],
    attempt: Attempt,
    new: JobStatus,
    outcome: AttemptOutcome,
    now: float,
    error: BaseException | None = None,
    ended_by: str | None = None,
) -> bool:
    """RUNNING -> ``new``, only if ``attempt`` is still running (fencing): what
    :func:`fence_attempt` and then :func:`settle_attempt` do, in one critical section.

    Returns:
        True if this call ended the attempt; False if someone else already did.
    """
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None
    with ledger.lock:
        if not _runs(job, attempt):
            return False
        _check_legal(job, new)
        attempt.ended = now
        attempt.outcome = outcome
        attempt.error = error
        attempt.ended_by = ended_by
        if outcome is not _OUTCOME_SUCCEEDED:
            _signal_cancel(attempt)
        _apply(
            job,
            ledger,
            new,
            now,
            run_time=now - attempt.started,
            timed_out=outcome is AttemptOutcome.TIMED_OUT,
        )
        return True


def fence_attempt(job: Job[Any], attempt: Attempt, outcome: AttemptOutcome, now: float) -> bool:
    """End ``attempt`` without deciding what follows: the first half of :func:`end_attempt`.

    The timer fences an attempt that passed its deadline: from here the attempt's thread
    can no longer end it (its result is dropped) and its cancel Event is set, while the job
    stays RUNNING until :func:`settle_attempt` (on another thread: deciding may run user
    code, the retry policy) moves it on.

    Returns:
        True if this call ended the attempt; False if someone else already did.
    """
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None
    with ledger.lock:
        if not _runs(job, attempt):
            return False
        attempt.ended = now
        attempt.outcome = outcome
        attempt.ended_by = "timer"
        _signal_cancel(attempt)
        if outcome is AttemptOutcome.TIMED_OUT:
            ledger.stats.attempt_timeouts += 1  # counted with the outcome, as end_attempt does
        return True


def settle_attempt(
    job: Job[Any], attempt: Attempt, new: JobStatus, error: BaseException | None
) -> bool:
    """RUNNING -> ``new`` for a job whose ``attempt`` was fenced: the second half.

    Returns:
        True if this call moved the job; False if someone else settled it first (shutdown
        cancels a fenced job whose settlement is late).
    """
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None
    with ledger.lock:
        ended = attempt.ended
        if job._status is not _RUNNING or job.attempts[-1] is not attempt or ended is None:
            return False
        _check_legal(job, new)
        if attempt.error is None:
            attempt.error = error
        _apply(job, ledger, new, ended, run_time=ended - attempt.started)  # (timeout counted)
        return True


def _signal_cancel(attempt: Attempt) -> None:
    """Tell the code of an attempt that it should stop.  Caller holds the ledger lock."""
    attempt.stop_requested = True
    if attempt._stop_event is not None:
        attempt._stop_event.set()


def cancel_event(job: Job[Any], attempt: Attempt) -> threading.Event:
    """The Event set when ``attempt`` is cancelled or times out (created on first use)."""
    ledger: Ledger = job._ledger  # type: ignore[assignment]  # a JobBook: this ledger
    assert ledger is not None
    with ledger.lock:
        if attempt._stop_event is None:
            attempt._stop_event = threading.Event()
            if attempt.stop_requested:
                attempt._stop_event.set()
        return attempt._stop_event


def route_of(job: Job[Any]) -> Route:
    """Where ``job`` re-enters after a retry backoff (it was admitted)."""
    route: Route | None = job._route
    assert route is not None, "route_of() a job that was never submitted"
    return route
