"""Running one attempt of a job, and ending it: by its worker, by a timeout, by shutdown.

Whoever ends an attempt first wins the compare-and-set in :mod:`chronos.job`; the others
see ``False`` and drop what they had (a late result is never applied).

- The worker thread ends its own attempt when the callable returns or raises: in time, it
  succeeded or failed; at or after its deadline, it timed out (whoever sees an overrun first
  wins, so a result that comes too late never counts as a success).  The worker then
  decides what follows (the retry policy), logs and resolves the Future itself, as
  ThreadPoolExecutor runs callbacks on the job's worker.
- The timer thread only *fences* an attempt that passed its deadline (:func:`deadline_due`)
  and hands the rest to the pool's :class:`chronos.handoff.Handoff`
  (:func:`settle_timed_out`): the timer never runs user code.  A little later
  (:data:`COOPERATION_GRACE`) it looks again (:func:`evict_if_running`): a cooperative job
  has returned by then and its thread carries on; only a thread still inside the attempt is
  abandoned, counted and replaced.
- Shutdown cancels running attempts (:func:`cancel_running`, :func:`cancel_fenced`).

Thread-safety: :func:`run` runs on a worker thread; :func:`deadline_due` and
:func:`evict_if_running` on the timer thread; :func:`settle_timed_out`,
:func:`retry_due` and :func:`after_abandon` on a Handoff thread; the cancels on whichever
thread shuts the pool down.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

from chronos.errors import JobInterrupted, JobTimeoutError
from chronos.interrupt import raise_in_thread
from chronos.job import (
    Attempt,
    AttemptOutcome,
    Job,
    cancel_waiting,
    detach_future,
    end_attempt,
    fence_attempt,
    forget_frames,
    resolve_cancelled,
    settle_attempt,
    start_attempt,
    succeed_attempt,
    timeout_message,
)
from chronos.status import JobStatus

if TYPE_CHECKING:
    from chronos.pool import WorkerPool
    from chronos.worker import WorkerSlot

__all__ = [
    "COOPERATION_GRACE",
    "cancel_fenced",
    "cancel_running",
    "deadline_due",
    "requeue_retry",
    "retry_due",
    "run",
]

#: Seconds (of the pool's clock) a timed-out attempt's thread has to return before it is
#: abandoned: a cooperative job (``current_job().wait()``/``check()``) returns well within
#: it and is never counted or reported as abandoned.
COOPERATION_GRACE = 0.02

_TIMED_OUT = AttemptOutcome.TIMED_OUT
_RETRY_WAIT = JobStatus.RETRY_WAIT


def run(pool: WorkerPool, job: Job[Any], slot: WorkerSlot) -> None:
    """Run the next attempt of a queued ``job`` on the calling worker thread.

    The hot path of every job: a no-op job spends most of its time in chronos here, so the
    common case (the attempt returns in time and this thread ends it) takes two critical
    sections, :func:`start_attempt` and :func:`succeed_attempt`, and one round trip of the
    Future.
    """
    now_of = pool._now
    now = now_of()
    timeout = job.timeout
    if timeout is None:
        timeout = pool._timeout
    deadline = None if timeout is None else now + timeout
    # Read before the attempt starts: once it has, the job may end (timed out) and release
    # its callable while this thread has yet to call it.
    fn, args, kwargs = job.fn, job.args, job.kwargs
    attempt = start_attempt(job, now, slot.name, deadline, slot)
    if attempt is None:  # cancelled while it waited in the queue
        return
    if deadline is not None and deadline < slot.check_at:
        pool._arm_deadline(deadline, slot)  # (else the timer's next look at the slot is soon)
    events = pool._events
    if events._debug_on:
        events.started(job, attempt)
    slot.running = (job, attempt)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # every outcome of a job is data, never a dead worker
        slot.running = None
        _raised(pool, job, attempt, slot, _strip_own_frame(exc), now_of())
        # This frame outlives the call as the f_back of the job's frames in the error's
        # traceback: it must not hold the job (which holds the error), or the two make a
        # cycle that only the garbage collector frees (ThreadPoolExecutor does the same).
        del job, attempt, fn, args, kwargs
        return
    slot.running = None
    now = now_of()
    if deadline is not None and now >= deadline:  # it overran: timed out, result dropped
        error = JobTimeoutError(timeout_message(job, attempt))
        _end_by_worker(pool, job, attempt, slot, error, _TIMED_OUT, now)
        return
    if succeed_attempt(job, attempt, now, slot):
        if events._info_on:
            events.succeeded(job, attempt)
        detach_future(job, result, None)._succeed(result)
    else:  # the timer or shutdown ended the attempt first: our result comes too late
        _late(pool, job, attempt, slot)


def _strip_own_frame(error: BaseException) -> BaseException:
    """Drop this module's frame from the head of ``error``'s traceback: it holds the job, the
    pool and the slot, and would make a cycle with the error the job keeps."""
    tb = error.__traceback__
    if tb is not None and tb.tb_frame.f_code is run.__code__:
        error.__traceback__ = tb.tb_next
    return error


def _raised(
    pool: WorkerPool,
    job: Job[Any],
    attempt: Attempt,
    slot: WorkerSlot,
    error: BaseException,
    now: float,
) -> None:
    """The attempt raised ``error``.  At or past its deadline it timed out, whatever it
    raised (a cooperative job steps out with JobTimeoutError; another error is its cause)."""
    deadline = attempt.deadline
    if deadline is not None and now >= deadline:
        if not isinstance(error, JobTimeoutError):
            timeout = JobTimeoutError(timeout_message(job, attempt))
            timeout.__cause__ = error
            error = timeout
        _end_by_worker(pool, job, attempt, slot, error, _TIMED_OUT, now)
    else:
        _end_by_worker(pool, job, attempt, slot, error, AttemptOutcome.FAILED, now)


def _end_by_worker(
    pool: WorkerPool,
    job: Job[Any],
    attempt: Attempt,
    slot: WorkerSlot,
    error: BaseException,
    outcome: AttemptOutcome,
    now: float,
) -> None:
    """The worker's own attempt failed or overran: decide, end it, and say what follows."""
    attempt._returned = True  # before any retry can be scheduled (see retry_due)
    if slot.release():
        # Abandoned meanwhile (the timer fenced it and evicted us): the attempt is not ours.
        _late(pool, job, attempt, slot)
        return
    delay = _retry_delay(pool, job, attempt, error, now)
    if delay is not None:
        new = _RETRY_WAIT
    else:
        new = JobStatus.TIMED_OUT if outcome is _TIMED_OUT else JobStatus.FAILED
    if not end_attempt(job, attempt, new, outcome, now, error):
        _late(pool, job, attempt, slot)
        return
    _settled(pool, job, attempt, error, delay, now)


def _late(pool: WorkerPool, job: Job[Any], attempt: Attempt, slot: WorkerSlot) -> None:
    """Someone else ended this worker's attempt: drop the outcome, free the slot."""
    slot.release()
    pool._events.late_result(job, attempt)
    pool._thread_returned(attempt)


def _retry_delay(
    pool: WorkerPool, job: Job[Any], attempt: Attempt, error: BaseException, now: float
) -> float | None:
    """What the retry policy says (user code: never called on the timer thread)."""
    policy = job.retry if job.retry is not None else pool._retry
    if policy is None:
        return None
    elapsed = max(0.0, now - job.attempts[0].started)
    return policy.next_delay(attempt.number, error, elapsed)


def _settled(
    pool: WorkerPool,
    job: Job[Any],
    attempt: Attempt,
    error: BaseException,
    delay: float | None,
    now: float,
) -> None:
    """The job left RUNNING because ``attempt`` failed or timed out: log it, then schedule
    the retry or resolve the Future.  Runs user code (loggers, callbacks): never on the timer.
    """
    events = pool._events
    will_retry = delay is not None
    if attempt.outcome is _TIMED_OUT:
        deadline = attempt.deadline
        timeout = 0.0 if deadline is None else deadline - attempt.started
        events.timed_out(job, attempt, timeout, will_retry)
    else:
        events.failed(job, attempt, error, will_retry)
    if delay is not None:
        forget_frames(error)  # the job goes on: its failed attempt pins nothing
        events.retry_scheduled(job, attempt, delay)
        pool._schedule_retry(job, attempt, now + delay)
        return
    events.gave_up(job, attempt, error)
    detach_future(job, None, error).set_exception(error)


# -- the timer's part: fence, then hand over -------------------------------------------------


def deadline_due(pool_ref: weakref.ref[WorkerPool], slot: WorkerSlot) -> None:
    """On the timer thread: the time to look at ``slot`` came.  If its attempt passed its
    deadline, fence it and hand over; if it runs one with a later deadline, look again then.

    There is one look per slot at a time (give or take a duplicate): a worker arms a look
    only for a deadline earlier than the slot's next one (``slot.check_at``), so a steady
    stream of attempts with one timeout costs the timer one look per slot per timeout.
    """
    pool = pool_ref()
    if pool is None:
        return
    # check_at first, then current (the worker writes them in the other order): a worker
    # that started an attempt meanwhile either sees inf and arms, or is seen here.
    slot.check_at = math.inf
    current = slot.current
    if current is None:
        return
    attempt = current[1]
    deadline = attempt.deadline
    if deadline is None:
        return
    now = pool._clock.now()
    if deadline > now:
        slot.check_at = deadline
        pool._timer.call_at(deadline, deadline_due, pool_ref, slot)
        return
    if not fence_attempt(current[0], attempt, _TIMED_OUT, now):
        return  # its worker (or shutdown) ended it first
    pool._handoff.submit(settle_timed_out, pool, current[0], attempt)
    # From the deadline, not from now: the same moment whenever the timer got here.
    pool._timer.call_at(deadline + COOPERATION_GRACE, evict_if_running, pool_ref, slot, attempt)


def evict_if_running(pool_ref: weakref.ref[WorkerPool], slot: WorkerSlot, attempt: Attempt) -> None:
    """On the timer thread, :data:`COOPERATION_GRACE` after a timeout: abandon the thread
    if it is still inside the attempt; the replacement and the event go to the Handoff."""
    pool = pool_ref()
    if pool is None:
        return
    with slot.lock:
        current = slot.current
        if current is None or current[1] is not attempt:
            return  # it returned: a cooperative job, never abandoned
        _abandon_locked(pool, slot)
    pool._handoff.submit(after_abandon, pool, slot, current)


def _abandon_locked(pool: WorkerPool, slot: WorkerSlot) -> None:
    """Take ``slot`` from its thread, which runs on in an attempt that was ended for it.
    Caller holds ``slot.lock``: the thread may return at once, and must then find itself
    filed as abandoned, to be counted back."""
    current = slot.current
    slot.current = None
    slot.abandoned = True
    pool._mark_abandoned(slot)
    if pool._interrupt and current is not None and not slot.interrupted:
        _interrupt_locked(slot)


def _interrupt_locked(slot: WorkerSlot) -> None:  # caller holds slot.lock
    """``interrupt_on_timeout``: raise JobInterrupted in the abandoned thread (a C call that
    runs no user code; the thread leaves the pool when it returns).  Sent at the eviction,
    not at the deadline: a thread interrupted while it may still return by itself made a
    coverage-traced run hang (the exception can land in the tracer's own code)."""
    thread = slot.thread
    if thread is not None and thread.ident is not None:
        slot.interrupted = raise_in_thread(thread.ident, JobInterrupted)


def after_abandon(pool: WorkerPool, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    """On a Handoff thread: replace an abandoned thread (if allowed) and report it."""
    replaced = pool._abandon(slot, replace=True)
    job, attempt = current
    pool._events.thread_abandoned(job, attempt, pool.stats.abandoned_threads.value, replaced)


def settle_timed_out(pool: WorkerPool, job: Job[Any], attempt: Attempt) -> None:
    """On a Handoff thread: decide what follows an attempt the timer fenced, and do it."""
    error = JobTimeoutError(timeout_message(job, attempt))
    ended = attempt.ended
    assert ended is not None
    delay = _retry_delay(pool, job, attempt, error, ended)
    new = _RETRY_WAIT if delay is not None else JobStatus.TIMED_OUT
    if settle_attempt(job, attempt, new, error):
        _settled(pool, job, attempt, error, delay, pool._clock.now())


def retry_due(
    pool_ref: weakref.ref[WorkerPool], job_ref: weakref.ref[Job[Any]], attempt: Attempt
) -> None:
    """On the timer thread: the backoff after ``attempt`` ended.  The timer holds the job
    weakly, so one cancelled meanwhile is already gone; one still waiting is handed over."""
    pool = pool_ref()
    job = job_ref()
    if pool is None or job is None:
        return
    if job._status is _RETRY_WAIT and job.attempts[-1] is attempt:
        pool._handoff.submit(requeue_retry, pool, job, attempt)


def requeue_retry(pool: WorkerPool, job: Job[Any], attempt: Attempt) -> None:
    """On a Handoff thread: put a job whose backoff ended back in line (its route: the
    pool's queue or its Dispatcher), unless ``wait_for_abandoned`` holds it for the thread
    of its timed-out attempt, which then re-queues it when it returns."""
    if pool._hold_for_thread(job, attempt):
        return
    route = job._route
    assert route is not None
    route.requeue(job)


# -- shutdown --------------------------------------------------------------------------------


def cancel_running(pool: WorkerPool, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    """Shutdown cut a running attempt short: cancel its job and abandon its thread."""
    job, attempt = current
    now = pool._clock.now()
    cancelled = AttemptOutcome.CANCELLED
    if end_attempt(job, attempt, JobStatus.CANCELLED, cancelled, now, ended_by="shutdown"):
        _abandon_now(pool, slot, current)
        _cancelled(pool, job)
    else:
        abandon_if_fenced(pool, slot)


def abandon_if_fenced(pool: WorkerPool, slot: WorkerSlot) -> None:
    """Shutdown stops the threads: one still inside an attempt that was already ended for
    it (timed out, within its cooperation grace) is abandoned now, not waited for."""
    current = slot.current
    if current is not None and current[1].outcome is not None:
        _abandon_now(pool, slot, current)


def _abandon_now(pool: WorkerPool, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    with slot.lock:
        evicted = slot.current is current
        if evicted:
            _abandon_locked(pool, slot)
    if evicted:
        pool._abandon(slot, replace=False)
        job, attempt = current
        abandoned = pool.stats.abandoned_threads.value
        pool._events.thread_abandoned(job, attempt, abandoned, replaced=False, reason="shutdown")


def cancel_fenced(pool: WorkerPool, job: Job[Any]) -> None:
    """Shutdown ends a job whose attempt the timer fenced but nobody settled yet (its
    settlement waits behind a blocked task, say): settled here and now, as it would have
    been, and if that leaves it waiting for a retry, cancelled in its backoff."""
    attempt = job.attempts[-1] if job.attempts else None
    if attempt is None or attempt.outcome is not _TIMED_OUT:
        return
    settle_timed_out(pool, job, attempt)
    if cancel_waiting(job, _RETRY_WAIT, pool._clock.now(), "shutdown"):
        pool._record_unfinished(job)


def _cancelled(pool: WorkerPool, job: Job[Any]) -> None:
    resolve_cancelled(job)
    pool._events.cancelled(job, reason="shutdown")
    pool._record_unfinished(job)
