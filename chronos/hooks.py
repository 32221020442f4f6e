"""Lifecycle hooks: subclass :class:`Listener` to hear what happens to a pool's jobs.

A listener is the place for metrics, an HTTP status page, an audit trail: anything that
wants the lifecycle of jobs without editing chronos.  Pass listeners to a pool
(``WorkerPool(..., listeners=[MyListener()])``); its :class:`chronos.events.JobEvents` calls
them after its own logging listener, in the order given, for every event the pool emits.
Override only the hooks you need: :meth:`Listener.wants` tells chronos which ones those are,
and a hook nobody overrides is never called (the per-job hooks of the hot path then cost one
attribute test).

Threads.  A hook runs on the chronos thread where the event happened: a pool's worker
threads, its Handoff threads (what follows a timeout), a Dispatcher's thread, the thread
that calls ``shutdown`` (or the pool's background shutdown thread, or the interpreter's exit
handler), and, for ``job_cancelled``, the thread that cancelled the job (``Future.cancel()``,
``Dispatcher.stop()``).  Hooks never run on the pool's timer thread (deadlines), nor on any
thread of chronos that only keeps time, with one exception: an ``internal_error`` about a
bug in a timer's own bookkeeping is reported from that timer's thread.  Several threads
call the same listener at once: a listener that keeps state must guard it (a lock, or
:class:`chronos.AtomicCounter`).

Hooks must be quick and must not block.  Most run inside a job's accounting, after its state
changed and before its Future is resolved (``job_succeeded``, ``job_failed``,
``job_timed_out``, ``job_gave_up``), or between the worker taking a job and calling it
(``job_started``): a slow hook delays the job's result and holds its worker.  Hand anything
slow (a network call, a disk write) to a thread or queue of your own.

An exception a hook raises is reported on stderr (one line per failing call) and swallowed:
it never kills a chronos thread, never leaves a Future unresolved, never skips another
listener.  (An exception that is not an ``Exception``, like ``KeyboardInterrupt``, goes on.)

The arguments are chronos's own objects: read them, never change them.  ``job`` is the
:class:`chronos.Job`, ``attempt`` the :class:`chronos.Attempt` the event is about (its
``duration`` is set once it ended).

==========================  ===============================  =================================
hook                        when                             runs on
==========================  ===============================  =================================
``job_dispatched``          a Dispatcher moved the job into  the dispatcher's thread
                            the pool's queue (``dispatcher``
                            is the dispatcher's name)
``job_started``             an attempt starts, before the    the worker thread
                            job's callable is called
``job_succeeded``           an attempt returned in time      the worker thread
``job_failed``              an attempt raised (``error``;    the worker thread
                            ``will_retry``)
``job_timed_out``           an attempt passed its deadline   a Handoff thread; the worker
                            (``timeout``, ``will_retry``)    thread if it returned late
                                                             first; shutdown's thread
``job_retry_scheduled``     the job waits ``delay`` seconds  as the job_failed/job_timed_out
                            before its next attempt          just before it
``job_gave_up``             the job failed or timed out for  as the job_failed/job_timed_out
                            good (``error``: the last one)   just before it
``job_cancelled``           the job was cancelled, after its the cancelling thread
                            Future was (``reason``:
                            ``"future.cancel"``,
                            ``"shutdown"``,
                            ``"dispatcher.stop"``...)
``job_late_result``         an attempt someone else ended    the worker thread
                            came back; its outcome dropped
``thread_abandoned``        a thread was left behind in a    a Handoff thread (``timeout``);
                            hung attempt (``reason``:        shutdown's thread
                            ``"timeout"`` or ``"shutdown"``)
``pool_event``              ``pool.shutdown`` (``phase``     shutdown's thread; the
                            started / finished),             dispatcher's thread
                            ``dispatcher.started``,
                            ``dispatcher.stopped``
``internal_error``          a bug in chronos, or an iterable any chronos thread
                            given to ``dispatch()`` raised
==========================  ===============================  =================================

The events and their fields are those of the structured log (see :mod:`chronos.events`),
which is itself a listener: :class:`chronos.events.LoggingListener`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chronos.job import Attempt, Job

__all__ = ["HOOKS", "Listener"]

#: The names of the hooks of :class:`Listener`, in the order of a job's life.
HOOKS = (
    "job_dispatched",
    "job_started",
    "job_succeeded",
    "job_failed",
    "job_timed_out",
    "job_retry_scheduled",
    "job_gave_up",
    "job_cancelled",
    "job_late_result",
    "thread_abandoned",
    "pool_event",
    "internal_error",
)
_HOOK_SET = frozenset(HOOKS)


def check_hook(hook: str) -> None:
    """Raise ``ValueError`` unless ``hook`` names a hook of :class:`Listener`."""
    if hook not in _HOOK_SET:
        raise ValueError(f"hook must be one of {', '.join(HOOKS)}; got {hook!r}")


class Listener:
    """The base of lifecycle listeners: every hook is a documented no-op.

    Subclass it and override the hooks you want (see the module docstring for when each is
    called and on which thread).  A hook must be quick, must not block, and should not
    raise (what it raises is reported on stderr and ignored).

    Which hooks are called is decided once, when the listener is added to a pool, by
    :meth:`wants`: a hook set later on the instance (``listener.job_started = f``) is not
    seen; override it in the class, or override :meth:`wants`.
    """

    def wants(self, hook: str) -> bool:
        """Whether chronos should call ``hook`` (one of :data:`HOOKS`) on this listener.

        The default: True if this listener's class overrides that hook, False for a hook
        left to :class:`Listener`'s no-op.  Override it to decide otherwise (by
        configuration, say); chronos asks when the listener is added to a pool.

        Raises:
            ValueError: ``hook`` is not the name of a hook.
        """
        check_hook(hook)
        return getattr(type(self), hook) is not getattr(Listener, hook)

    # -- a job's life ----------------------------------------------------------------------

    def job_dispatched(self, job: Job[Any], dispatcher: str) -> None:
        """A Dispatcher (named ``dispatcher``) moved ``job`` into the pool's queue."""

    def job_started(self, job: Job[Any], attempt: Attempt) -> None:
        """``attempt`` of ``job`` starts on a worker: its callable is about to be called."""

    def job_succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        """``attempt`` returned in time: ``job`` succeeded (its Future is not resolved yet)."""

    def job_failed(
        self, job: Job[Any], attempt: Attempt, error: BaseException, will_retry: bool
    ) -> None:
        """``attempt`` raised ``error``; ``will_retry`` says whether a retry follows (then
        :meth:`job_retry_scheduled`, else :meth:`job_gave_up`)."""

    def job_timed_out(
        self, job: Job[Any], attempt: Attempt, timeout: float, will_retry: bool
    ) -> None:
        """``attempt`` passed its deadline, ``timeout`` seconds after it started;
        ``will_retry`` as for :meth:`job_failed`."""

    def job_retry_scheduled(self, job: Job[Any], attempt: Attempt, delay: float) -> None:
        """``job`` waits ``delay`` seconds after ``attempt`` before its next attempt."""

    def job_gave_up(self, job: Job[Any], attempt: Attempt, error: BaseException) -> None:
        """``job`` failed or timed out for good; ``error`` is what its Future will raise
        (a :class:`chronos.JobTimeoutError` for a timeout)."""

    def job_cancelled(self, job: Job[Any], reason: str) -> None:
        """``job`` was cancelled (its Future already is); ``reason`` says by whom, e.g.
        ``"future.cancel"``, ``"shutdown"``, ``"dispatcher.stop"``."""

    def job_late_result(self, job: Job[Any], attempt: Attempt) -> None:
        """``attempt`` returned after someone else ended it (a timeout, a shutdown): its
        result or error was dropped."""

    # -- threads, pools, dispatchers ---------------------------------------------------------

    def thread_abandoned(
        self,
        job: Job[Any],
        attempt: Attempt,
        abandoned_threads: int,
        replaced: bool,
        reason: str,
    ) -> None:
        """A worker thread was left behind inside ``attempt``: ``reason`` is ``"timeout"``
        (it overran its deadline and its grace) or ``"shutdown"`` (a shutdown cancelled it);
        ``abandoned_threads`` is the pool's count so far, ``replaced`` whether a new worker
        took its place."""

    def pool_event(self, event: str, fields: Mapping[str, Any]) -> None:
        """A pool or dispatcher step: ``event`` is ``"pool.shutdown"`` (``fields``:
        ``pool``, ``phase`` ``"started"`` or ``"finished"``, and the final counters when
        finished), ``"dispatcher.started"`` (``dispatcher``, ``pool``) or
        ``"dispatcher.stopped"`` (``dispatcher``, ``dispatched``).  ``fields`` is
        read-only."""

    def internal_error(self, where: str, error: BaseException) -> None:
        """A bug in chronos (reported instead of killing a thread), or an iterable given to
        ``Dispatcher.dispatch()`` that raised; ``where`` names the place."""
