"""Running one attempt of a job, and ending it: by its worker, by a timeout, by shutdown.

Whoever ends an attempt first wins the compare-and-set in :mod:`chronos.job`; the others
see ``False`` and drop what they had (a late result is never applied).

- The worker thread ends its own attempt when the callable returns or raises: in time, it
  succeeded or failed; at or after its deadline, it timed out (whoever sees an overrun first
  wins, so a result that comes too late never counts as a success).  The worker then
  decides what follows (the retry policy), logs and resolves the Future itself, as
  ThreadPoolExecutor runs callbacks on the job's worker.
- The timer thread only *fences* an attempt that passed its deadline (:func:`deadline_due`)
  and hands the rest to the pool's :class:`chronos.pool.handoff.Handoff`
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
from typing import Any

from chronos._ledger import (
    cancel_waiting,
    detach_future,
    end_attempt,
    fence_attempt,
    resolve_cancelled,
    route_of,
    settle_attempt,
    start_attempt,
    succeed_attempt,
)
from chronos.errors import JobInterrupted, JobTimeoutError
from chronos.interrupt import raise_in_thread
from chronos.job import Attempt, AttemptOutcome, Job, forget_frames, timeout_message
from chronos.pool.core import PoolCore
from chronos.pool.threads import WorkerSlot
from chronos.status import JobStatus

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


def run(core: PoolCore, job: Job[Any], slot: WorkerSlot) -> None:
    """Run the next attempt of a queued ``job`` on the calling worker thread.

    The hot path of every job: a no-op job spends most of its time in chronos here, so the
    common case (the attempt returns in time and this thread ends it) takes two critical
    sections, :func:`start_attempt` and :func:`succeed_attempt`, and one round trip of the
    Future.
    """
    now_of = core.now
    now = now_of()
    timeout = job.timeout
    if timeout is None:
        timeout = core.timeout
    deadline = None if timeout is None else now + timeout
    # Read before the attempt starts: once it has, the job may end (timed out) and release
    # its callable while this thread has yet to call it.
    fn, args, kwargs = job.fn, job.args, job.kwargs
    attempt = start_attempt(job, now, slot.name, deadline, slot)
    if attempt is None:  # cancelled while it waited in the queue
        return
    if deadline is not None and deadline < slot.check_at:
        arm_deadline(core, deadline, slot)  # (else the timer's next look at the slot is soon)
    events = core.events
    if events.wants_started:
        events.started(job, attempt)
    slot.running = (job, attempt)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # every outcome of a job is data, never a dead worker
        slot.running = None
        _raised(core, job, attempt, slot, _strip_own_frame(exc), now_of())
        # This frame outlives the call as the f_back of the job's frames in the error's
        # traceback: it must not hold the job (which holds the error), or the two make a
        # cycle that only the garbage collector frees (ThreadPoolExecutor does the same).
        del job, attempt, fn, args, kwargs
        return
    slot.running = None
    now = now_of()
    if deadline is not None and now >= deadline:  # it overran: timed out, result dropped
        error = JobTimeoutError(timeout_message(job, attempt))
        _end_by_worker(core, job, attempt, slot, error, _TIMED_OUT, now)
        return
    if succeed_attempt(job, attempt, now, slot):
        if events.wants_succeeded:
            events.succeeded(job, attempt)
        detach_future(job, result, None).set_result(result)
    else:  # the timer or shutdown ended the attempt first: our result comes too late
        _late(core, job, attempt, slot)


def _strip_own_frame(error: BaseException) -> BaseException:
    """Drop this module's frame from the head of ``error``'s traceback: it holds the job, the
    pool and the slot, and would make a cycle with the error the job keeps."""
    tb = error.__traceback__
    if tb is not None and tb.tb_frame.f_code is run.__code__:
        error.__traceback__ = tb.tb_next
    return error


def _raised(
    core: PoolCore,
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
        _end_by_worker(core, job, attempt, slot, error, _TIMED_OUT, now)
    else:
        _end_by_worker(core, job, attempt, slot, error, AttemptOutcome.FAILED, now)


def _end_by_worker(
    core: PoolCore,
    job: Job[Any],
    attempt: Attempt,
    slot: WorkerSlot,
    error: BaseException,
    outcome: AttemptOutcome,
    now: float,
) -> None:
    """The worker's own attempt failed or overran: decide, end it, and say what follows."""
    attempt.returned = True  # before any retry can be scheduled (see retry_due)
    if slot.release():
        # Abandoned meanwhile (the timer fenced it and evicted us): the attempt is not ours.
        _late(core, job, attempt, slot)
        return
    delay = _retry_delay(core, job, attempt, error, now)
    if delay is not None:
        new = _RETRY_WAIT
    else:
        new = JobStatus.TIMED_OUT if outcome is _TIMED_OUT else JobStatus.FAILED
    if not end_attempt(job, attempt, new, outcome, now, error):
        _late(core, job, attempt, slot)
        return
    _settled(core, job, attempt, error, delay, now)


def _late(core: PoolCore, job: Job[Any], attempt: Attempt, slot: WorkerSlot) -> None:
    """Someone else ended this worker's attempt: drop the outcome, free the slot."""
    slot.release()
    core.events.late_result(job, attempt)
    thread_returned(core, attempt)


def _retry_delay(
    core: PoolCore, job: Job[Any], attempt: Attempt, error: BaseException, now: float
) -> float | None:
    """What the retry policy says (user code: never called on the timer thread)."""
    policy = job.retry if job.retry is not None else core.retry
    if policy is None:
        return None
    elapsed = max(0.0, now - job.attempts[0].started)
    return policy.next_delay(attempt.number, error, elapsed)


def _settled(
    core: PoolCore,
    job: Job[Any],
    attempt: Attempt,
    error: BaseException,
    delay: float | None,
    now: float,
) -> None:
    """The job left RUNNING because ``attempt`` failed or timed out: log it, then schedule
    the retry or resolve the Future.  Runs user code (loggers, callbacks): never on the timer.
    """
    events = core.events
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
        schedule_retry(core, job, now + delay)
        return
    events.gave_up(job, attempt, error)
    detach_future(job, None, error).set_exception(error)


# -- the timer's part: fence, then hand over -------------------------------------------------


def deadline_due(core: PoolCore, slot: WorkerSlot) -> None:
    """On the timer thread: the time to look at ``slot`` came.  If its attempt passed its
    deadline, fence it and hand over; if it runs one with a later deadline, look again then.

    There is one look per slot at a time (give or take a duplicate): a worker arms a look
    only for a deadline earlier than the slot's next one (``slot.check_at``), so a steady
    stream of attempts with one timeout costs the timer one look per slot per timeout.
    """
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
    now = core.now()
    if deadline > now:
        slot.check_at = deadline
        core.timer.call_at(deadline, deadline_due, core, slot)
        return
    if not fence_attempt(current[0], attempt, _TIMED_OUT, now):
        return  # its worker (or shutdown) ended it first
    core.handoff.submit(settle_timed_out, core, current[0], attempt)
    # From the deadline, not from now: the same moment whenever the timer got here.
    core.timer.call_at(deadline + COOPERATION_GRACE, evict_if_running, core, slot, attempt)


def evict_if_running(core: PoolCore, slot: WorkerSlot, attempt: Attempt) -> None:
    """On the timer thread, :data:`COOPERATION_GRACE` after a timeout: abandon the thread
    if it is still inside the attempt; the replacement and the event go to the Handoff."""
    with slot.lock:
        current = slot.current
        if current is None or current[1] is not attempt:
            return  # it returned: a cooperative job, never abandoned
        _abandon_locked(core, slot)
    core.handoff.submit(after_abandon, core, slot, current)


def _abandon_locked(core: PoolCore, slot: WorkerSlot) -> None:
    """Take ``slot`` from its thread, which runs on in an attempt that was ended for it.
    Caller holds ``slot.lock``: the thread may return at once, and must then find itself
    filed as abandoned, to be counted back."""
    current = slot.current
    slot.current = None
    slot.abandoned = True
    core.threads.mark_abandoned(slot)
    if core.settings.interrupt and current is not None and not slot.interrupted:
        _interrupt_locked(slot)


def _interrupt_locked(slot: WorkerSlot) -> None:  # caller holds slot.lock
    """``interrupt_on_timeout``: raise JobInterrupted in the abandoned thread (a C call that
    runs no user code; the thread leaves the pool when it returns).  Sent at the eviction,
    not at the deadline: a thread interrupted while it may still return by itself made a
    coverage-traced run hang (the exception can land in the tracer's own code)."""
    thread = slot.thread
    if thread is not None and thread.ident is not None:
        slot.interrupted = raise_in_thread(thread.ident, JobInterrupted)


def after_abandon(core: PoolCore, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    """On a Handoff thread: replace an abandoned thread (if allowed) and report it."""
    replaced = core.threads.replace_abandoned(slot, replace=True)
    job, attempt = current
    core.events.thread_abandoned(job, attempt, core.stats.abandoned_threads.value, replaced)


def settle_timed_out(core: PoolCore, job: Job[Any], attempt: Attempt) -> None:
    """On a Handoff thread: decide what follows an attempt the timer fenced, and do it."""
    error = JobTimeoutError(timeout_message(job, attempt))
    ended = attempt.ended
    assert ended is not None
    delay = _retry_delay(core, job, attempt, error, ended)
    new = _RETRY_WAIT if delay is not None else JobStatus.TIMED_OUT
    if settle_attempt(job, attempt, new, error):
        _settled(core, job, attempt, error, delay, core.now())


def retry_due(core: PoolCore, job: Job[Any]) -> None:
    """On the backend's delay timer: the backoff of ``job`` ended (the backend held it
    weakly, so one cancelled meanwhile is already gone); one still waiting is handed over."""
    if job.status is _RETRY_WAIT:
        core.handoff.submit(requeue_retry, core, job, job.attempts[-1])


def requeue_retry(core: PoolCore, job: Job[Any], attempt: Attempt) -> None:
    """On a Handoff thread: put a job whose backoff ended back in line (its route: the
    pool's queue or its Dispatcher), unless ``wait_for_abandoned`` holds it for the thread
    of its timed-out attempt, which then re-queues it when it returns."""
    if hold_for_thread(core, job, attempt):
        return
    route_of(job).requeue(job)


# -- scheduling: deadlines on the pool's timer, backoffs in the backend ---------------------


def arm_deadline(core: PoolCore, deadline: float, slot: WorkerSlot) -> None:
    """A worker started an attempt that ends at ``deadline``, before the timer's next look
    at its ``slot``: have the timer look then (see :func:`deadline_due`)."""
    core.start_handoff()  # here, on a worker: never on the timer
    slot.check_at = deadline
    core.timer.call_at(deadline, deadline_due, core, slot)


def schedule_retry(core: PoolCore, job: Job[Any], when: float) -> None:
    """``job`` waits in RETRY_WAIT until ``when``: the backend holds it until then (see
    :func:`retry_due`)."""
    core.start_handoff()
    core.backend.put(job, not_before=when)


def hold_for_thread(core: PoolCore, job: Job[Any], attempt: Attempt) -> bool:
    """With ``wait_for_abandoned``: hold the retry of ``job`` while the thread of its
    timed-out ``attempt`` still runs (True: held; :func:`thread_returned` re-queues)."""
    if not core.settings.wait_for_abandoned:
        return False
    with core.held_lock:
        if attempt.returned:
            return False
        core.held[attempt] = job
        return True


def thread_returned(core: PoolCore, attempt: Attempt) -> None:
    """The thread of an attempt that someone else ended has returned from it."""
    if not core.settings.wait_for_abandoned:
        return  # nothing is ever held: no lock to take
    with core.held_lock:
        attempt.returned = True
        job = core.held.pop(attempt, None) if core.held else None
    if job is not None:
        requeue_retry(core, job, attempt)


# -- shutdown --------------------------------------------------------------------------------


def cancel_running(core: PoolCore, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    """Shutdown cut a running attempt short: cancel its job and abandon its thread."""
    job, attempt = current
    now = core.now()
    cancelled = AttemptOutcome.CANCELLED
    if end_attempt(job, attempt, JobStatus.CANCELLED, cancelled, now, ended_by="shutdown"):
        _abandon_now(core, slot, current)
        _cancelled(core, job)
    else:
        abandon_if_fenced(core, slot)


def abandon_if_fenced(core: PoolCore, slot: WorkerSlot) -> None:
    """Shutdown stops the threads: one still inside an attempt that was already ended for
    it (timed out, within its cooperation grace) is abandoned now, not waited for."""
    current = slot.current
    if current is not None and current[1].outcome is not None:
        _abandon_now(core, slot, current)


def _abandon_now(core: PoolCore, slot: WorkerSlot, current: tuple[Job[Any], Attempt]) -> None:
    with slot.lock:
        evicted = slot.current is current
        if evicted:
            _abandon_locked(core, slot)
    if evicted:
        core.threads.replace_abandoned(slot, replace=False)
        job, attempt = current
        abandoned = core.stats.abandoned_threads.value
        core.events.thread_abandoned(job, attempt, abandoned, replaced=False, reason="shutdown")


def cancel_fenced(core: PoolCore, job: Job[Any]) -> None:
    """Shutdown ends a job whose attempt the timer fenced but nobody settled yet (its
    settlement waits behind a blocked task, say): settled here and now, as it would have
    been, and if that leaves it waiting for a retry, cancelled in its backoff."""
    attempt = job.attempts[-1] if job.attempts else None
    if attempt is None or attempt.outcome is not _TIMED_OUT:
        return
    settle_timed_out(core, job, attempt)
    if cancel_waiting(job, _RETRY_WAIT, core.now(), "shutdown"):
        core.record_unfinished(job)


def _cancelled(core: PoolCore, job: Job[Any]) -> None:
    resolve_cancelled(job)
    core.events.cancelled(job, reason="shutdown")
    core.record_unfinished(job)
