"""Running one attempt of a job, and ending it: by its worker, by a timeout, by shutdown.

Whoever ends an attempt first wins the compare-and-set in :func:`chronos.job.end_attempt`;
the others see ``False`` and drop what they had (a late result is never applied).  The
winner resolves the job's Future, or schedules the retry, and logs.

Thread-safety: :func:`run` runs on a worker thread, :func:`on_deadline` on the pool's timer
thread, :func:`cancel_running` on whichever thread shuts the pool down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chronos.errors import JobInterrupted, JobTimeoutError
from chronos.interrupt import raise_in_thread
from chronos.job import (
    Attempt,
    AttemptOutcome,
    Job,
    end_attempt,
    resolve_cancelled,
    start_attempt,
    succeed_attempt,
)
from chronos.status import JobStatus

if TYPE_CHECKING:
    from chronos.pool import WorkerPool
    from chronos.worker import WorkerSlot

__all__ = ["cancel_running", "on_deadline", "run"]


def run(pool: WorkerPool, job: Job[Any], slot: WorkerSlot) -> None:
    """Run the next attempt of a queued ``job`` on the calling worker thread.

    The hot path of every job: a no-op job spends most of its time in chronos here, so the
    common case (the attempt returns and this thread ends it) takes two critical sections,
    :func:`start_attempt` and :func:`succeed_attempt`, and one round trip of the Future.
    """
    now_of = pool._now
    now = now_of()
    timeout = job.timeout
    if timeout is None:
        timeout = pool._timeout
    deadline = None if timeout is None else now + timeout
    attempt = start_attempt(job, now, slot.name, deadline, slot)
    if attempt is None:  # cancelled while it waited in the queue
        return
    if deadline is not None:
        pool._timer.deadline_armed(deadline)
    events = pool._events
    if events._debug_on:
        events.started(job, attempt)
    slot.running = (job, attempt)
    try:
        result = job.fn(*job.args, **job.kwargs)
    except BaseException as exc:  # every outcome of a job is data, never a dead worker
        slot.running = None
        slot.release()
        _failed_by_worker(pool, job, attempt, exc, now_of())
        return
    slot.running = None
    if succeed_attempt(job, attempt, now_of(), slot):
        if events._info_on:
            events.succeeded(job, attempt)
        job.future._succeed(result)
    else:  # the timer or shutdown ended the attempt first: our result comes too late
        slot.release()
        events.late_result(job, attempt)


def _failed_by_worker(
    pool: WorkerPool, job: Job[Any], attempt: Attempt, error: BaseException, now: float
) -> None:
    """The attempt raised ``error``; its worker has released its slot."""
    # A cooperative job that stepped out at its deadline (JobContext.check() or wait())
    # timed out, whether or not the timer got there first.
    deadline_passed = attempt.deadline is not None and now >= attempt.deadline
    if deadline_passed and isinstance(error, JobTimeoutError):
        _failed(pool, job, attempt, error, AttemptOutcome.TIMED_OUT, now)
    else:
        _failed(pool, job, attempt, error, AttemptOutcome.FAILED, now)


def on_deadline(pool: WorkerPool, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    """The timer saw ``current`` pass its deadline: time it out and free its worker slot."""
    job, attempt = current
    error = JobTimeoutError(
        f"job #{job.id} ({job.name}) attempt {attempt.number} exceeded its "
        f"{_timeout_of(pool, job):g}s timeout"
    )
    _failed(pool, job, attempt, error, AttemptOutcome.TIMED_OUT, pool._clock.now(), slot, current)
    # If the worker ended the attempt first it is about to clear current itself; clearing it
    # here too keeps the timer from seeing this deadline again.
    with slot.lock:
        if slot.current is current:
            slot.current = None


def cancel_running(pool: WorkerPool, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    """Shutdown cut a running attempt short: cancel its job and abandon its thread."""
    job, attempt = current
    if end_attempt(job, attempt, JobStatus.CANCELLED, AttemptOutcome.CANCELLED, pool._clock.now()):
        _evict(pool, slot, current, replace=False)
        resolve_cancelled(job)
        pool._events.cancelled(job, reason="shutdown")
        pool._record_unfinished(job)


def _failed(
    pool: WorkerPool,
    job: Job[Any],
    attempt: Attempt,
    error: BaseException,
    outcome: AttemptOutcome,
    now: float,
    slot: WorkerSlot | None = None,
    current: tuple[Job[Any], Attempt] | None = None,
) -> None:
    """An attempt raised or timed out: retry it later, or fail the job for good.

    ``slot`` and ``current`` are given for a timeout, whose thread is still in the attempt.
    """
    policy = job.retry if job.retry is not None else pool._retry
    delay = None
    if policy is not None:
        delay = policy.next_delay(attempt.number, error, now - job.attempts[0].started)
    if delay is not None:
        new = JobStatus.RETRY_WAIT
    else:
        new = JobStatus.TIMED_OUT if outcome is AttemptOutcome.TIMED_OUT else JobStatus.FAILED
    events = pool._events
    if not end_attempt(job, attempt, new, outcome, now, error):
        if slot is None:  # the worker lost: its outcome comes too late (the timer just lost)
            events.late_result(job, attempt)
        return
    will_retry = delay is not None
    if slot is not None and current is not None:  # the timer ended it: free the slot
        _evict(pool, slot, current, replace=True)
    if outcome is AttemptOutcome.TIMED_OUT:
        events.timed_out(job, attempt, _timeout_of(pool, job), will_retry)
    else:
        events.failed(job, attempt, error, will_retry)
    if delay is not None:
        events.retry_scheduled(job, attempt, delay)
        pool._timer.call_at(now + delay, _retry_due, job)
        return
    events.gave_up(job, attempt, error)
    job.future.set_running_or_notify_cancel()
    job.future.set_exception(error)


def _timeout_of(pool: WorkerPool, job: Job[Any]) -> float:
    timeout = job.timeout if job.timeout is not None else pool._timeout
    assert timeout is not None
    return timeout


def _retry_due(job: Job[Any]) -> None:
    route = job._route
    assert route is not None
    route.requeue(job)


def _evict(
    pool: WorkerPool, slot: WorkerSlot, current: tuple[Job[Any], Attempt], *, replace: bool
) -> None:
    """Abandon the thread of an attempt someone else ended, if it is still running it."""
    with slot.lock:
        if slot.current is not current:
            return  # it returned already and will carry on as a normal worker
        slot.current = None
        slot.abandoned = True
        # Filed as abandoned (and counted) before slot.lock is released: the thread may
        # return at once, and _rejoin must find it there to count it back.
        pool._mark_abandoned(slot)
        thread = slot.thread
        if pool._interrupt and thread is not None and thread.ident is not None:
            slot.interrupted = raise_in_thread(thread.ident, JobInterrupted)
    replaced = pool._abandon(slot, replace)
    job, attempt = current
    pool._events.thread_abandoned(job, attempt, pool.stats.abandoned_threads.value, replaced)
