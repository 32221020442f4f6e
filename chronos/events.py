"""Structured lifecycle events, through structlog, and the listeners that hear them.

A pool's :class:`JobEvents` is where chronos reports what happens to its jobs: the core
calls one of its methods per event.  It hands each event to its :class:`LoggingListener`
(the structured log described below) and then to the :class:`chronos.Listener` objects
given to the pool (``WorkerPool(listeners=[...])``) or added later
(:meth:`JobEvents.add_listener`), in that order; :mod:`chronos.hooks` says which hook each
event calls, on which thread, and what a hook may do.  A listener is called only for the
hooks it wants (:meth:`chronos.Listener.wants`): the logging listener leaves out the DEBUG
and INFO events while the logger has that level off, so an event that no listener wants
costs the core one attribute test.  A
listener that raises is reported on stderr; the next one is still called, and chronos goes
on.  The hooks are named after the events: ``job.succeeded`` calls ``job_succeeded``,
``pool.thread_abandoned`` ``thread_abandoned``, ``chronos.internal_error``
``internal_error``, and ``pool.shutdown`` and ``dispatcher.*`` ``pool_event``.

chronos never configures structlog.  A pool binds its logger once, when it is created:

- if the application configured structlog (``structlog.is_configured()``), chronos logs
  through ``structlog.get_logger("chronos")`` with the application's processors and level;
- otherwise chronos logs to stderr, with structlog's default processors, what needs a human:
  a job that gave up (ERROR, with the traceback of its last error) and a thread left behind
  in a hung attempt (WARNING).  The level is the stdlib ``logging.getLogger("chronos")``'s
  if it was set (``logging.getLogger("chronos").setLevel(logging.ERROR)`` quiets the
  warnings, ``logging.CRITICAL`` everything), WARNING otherwise.
- ``WorkerPool(logger=...)`` takes any structlog logger instead, e.g.
  ``structlog.make_filtering_bound_logger(logging.ERROR)`` wrapped around your own.

Configure structlog (or the level) *before* creating a pool: a pool made earlier keeps the
logger it bound, so it goes on printing warnings and errors only.

Every job event is one call with ``job_id``, ``job_name`` (the callable's qualified name,
never a ``repr`` of it or of its arguments), ``attempt`` and ``worker`` bound; the other
fields are listed below.  Routine steps of a job's life are DEBUG or INFO; what a user must
act on (a job that gave up, a stuck thread) is WARNING or above.  Nothing is rendered for a
level that nobody listens to.

===========================  ========  ==========================================================
event                        level     when, and its own fields
===========================  ========  ==========================================================
``job.dispatched``           debug     a Dispatcher moved the job into the pool's queue
                                       (``dispatcher``)
``job.started``              debug     an attempt started on a worker
``job.succeeded``            info      an attempt returned in time (``duration``)
``job.failed``               info      an attempt raised (``error``: its repr, ``will_retry``,
                                       ``duration``)
``job.timed_out``            info      an attempt passed its deadline (``timeout``,
                                       ``will_retry``)
``job.retry_scheduled``      info      the job waits ``delay`` seconds before its next attempt
``job.gave_up``              error     the job failed or timed out for good (``error``,
                                       ``attempts``, ``status``; the traceback as ``exc_info``)
``job.cancelled``            info      the job was cancelled (``reason``)
``job.late_result``          debug     an attempt someone else ended came back; its outcome
                                       was dropped
``pool.thread_abandoned``    warning   a worker thread was left behind in a hung attempt
                                       (``abandoned_threads``, ``replaced``, ``reason``:
                                       ``timeout``; INFO for ``shutdown``, which cancelled
                                       it on purpose)
``pool.shutdown``            info      shutdown started / finished (``pool``, ``phase``; the
                                       final counters when finished)
``dispatcher.started``       info      a Dispatcher's thread started (``dispatcher``, ``pool``)
``dispatcher.stopped``       info      it exited (``dispatcher``, ``dispatched``)
``chronos.internal_error``   error     a bug in chronos, or an iterable given to dispatch()
                                       that raised (``where``, ``error``, ``exc_info``)
===========================  ========  ==========================================================
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog

from chronos.hooks import HOOKS, Listener
from chronos.logging_listener import LoggingListener, report_failure

if TYPE_CHECKING:
    from chronos.job import Attempt, Job

__all__ = ["JobEvents", "LoggingListener", "default_logger"]


def default_logger() -> Any:
    """The logger a pool uses when none is given (see the module docstring)."""
    if structlog.is_configured():
        return structlog.get_logger("chronos").bind()
    level = logging.getLogger("chronos").level or logging.WARNING
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )


_Hooks = tuple[Callable[..., None], ...]
#: Attributes that only :meth:`JobEvents._publish` writes (see ``JobEvents.__setattr__``).
_READ_ONLY = frozenset({"wants_dispatched", "wants_started", "wants_succeeded"})


class JobEvents:
    """Emits the lifecycle events of one pool to its listeners.

    Args:
        logger: the structlog logger of its :class:`LoggingListener`, always called first.
        listeners: :class:`chronos.Listener` instances, called next, in this order (None:
            none).  Each is asked which hooks it wants (:meth:`chronos.Listener.wants`) once,
            here or in :meth:`add_listener`.

    Raises:
        TypeError: ``listeners`` is not an iterable of :class:`chronos.Listener` instances.
        ValueError: it holds the same listener twice.

    Each method is one event (the core calls them): it calls the matching hook of every
    listener that wants it, each call guarded on its own: what a listener raises is reported
    on stderr (``chronos: listener <class>.<hook> failed: <error>``) and the next listener
    is called.  No event method ever raises an ``Exception``.

    The per-job events of the hot path are skipped for the price of one attribute test when
    no listener wants them: callers test the read-only flags :attr:`wants_dispatched`,
    :attr:`wants_started` and :attr:`wants_succeeded` first.

    Thread-safety: the events are emitted from every chronos thread and take no lock.
    :meth:`add_listener` and :meth:`remove_listener` may be called from any thread: they
    publish new immutable tuples of hooks (copy-on-write), so every event emitted after one
    returns sees the change, and an event being emitted meanwhile sees either state.
    """

    __slots__ = (
        "_entries",
        "_lock",
        "_logging",
        "_on_internal_error",
        "_on_job_cancelled",
        "_on_job_dispatched",
        "_on_job_failed",
        "_on_job_gave_up",
        "_on_job_late_result",
        "_on_job_retry_scheduled",
        "_on_job_started",
        "_on_job_succeeded",
        "_on_job_timed_out",
        "_on_pool_event",
        "_on_thread_abandoned",
        "log",
        "wants_dispatched",
        "wants_started",
        "wants_succeeded",
    )

    log: Any
    _lock: threading.Lock
    _logging: LoggingListener
    _entries: tuple[tuple[Listener, frozenset[str]], ...]  # the logging listener's first
    # The bound hooks of the listeners that want each hook, in call order.
    _on_job_dispatched: _Hooks
    _on_job_started: _Hooks
    _on_job_succeeded: _Hooks
    _on_job_failed: _Hooks
    _on_job_timed_out: _Hooks
    _on_job_retry_scheduled: _Hooks
    _on_job_gave_up: _Hooks
    _on_job_cancelled: _Hooks
    _on_job_late_result: _Hooks
    _on_thread_abandoned: _Hooks
    _on_pool_event: _Hooks
    _on_internal_error: _Hooks

    if TYPE_CHECKING:  # read-only for type checkers; plain slots (a fast read) at run time

        @property
        def wants_dispatched(self) -> bool:
            """Some listener wants :meth:`dispatched`: else callers skip it."""

        @property
        def wants_started(self) -> bool:
            """Some listener wants :meth:`started`: else callers skip it."""

        @property
        def wants_succeeded(self) -> bool:
            """Some listener wants :meth:`succeeded`: else callers skip it."""

    def __init__(self, logger: Any, listeners: Iterable[Listener] | None = ()) -> None:
        object.__setattr__(self, "log", logger)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_logging", LoggingListener(logger))
        given: list[Listener] = []
        if listeners is not None:
            if isinstance(listeners, Listener) or not isinstance(listeners, Iterable):
                raise TypeError(
                    "listeners must be an iterable of chronos.Listener instances, not "
                    f"{type(listeners).__name__}"
                )
            for index, listener in enumerate(listeners):
                if not isinstance(listener, Listener):
                    raise TypeError(
                        "listeners must hold chronos.Listener instances; got "
                        f"{type(listener).__name__} at index {index}"
                    )
                if any(listener is other for other in given):
                    raise ValueError(f"listeners holds the same listener twice: {listener!r}")
                given.append(listener)
        self._publish(tuple(_entry(listener) for listener in [self._logging, *given]))

    def __setattr__(self, name: str, value: object) -> None:
        if name in _READ_ONLY:
            raise AttributeError(f"JobEvents.{name} is read-only")
        object.__setattr__(self, name, value)

    # -- listeners ---------------------------------------------------------------------------

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The listeners given or added, in call order; the :class:`LoggingListener` of
        ``logger``, always called first, is not among them."""
        return tuple(listener for listener, _ in self._entries[1:])

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` too, after the others, for every event emitted from now on.

        Raises:
            TypeError: ``listener`` is not a :class:`chronos.Listener` instance.
            ValueError: it was added already.
        """
        if not isinstance(listener, Listener):
            raise TypeError(
                f"listener must be a chronos.Listener instance, not {type(listener).__name__}"
            )
        entry = _entry(listener)  # its wants(): user code, asked outside the lock
        with self._lock:
            if any(listener is other for other, _ in self._entries):
                raise ValueError(f"listener already added: {listener!r}")
            self._publish((*self._entries, entry))

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (an event being emitted meanwhile may still call it).

        Raises:
            ValueError: it is not one of :attr:`listeners`.
        """
        with self._lock:
            kept = tuple(entry for entry in self._entries[1:] if entry[0] is not listener)
            if len(kept) == len(self._entries) - 1:
                raise ValueError(f"listener not added: {listener!r}")
            self._publish((self._entries[0], *kept))

    def _publish(self, entries: tuple[tuple[Listener, frozenset[str]], ...]) -> None:
        """Install ``entries`` (the caller holds ``_lock``, or is ``__init__``): the hook
        tuples first, then the flags, so an emitter that sees a flag set finds its hooks."""
        setattr_ = object.__setattr__
        setattr_(self, "_entries", entries)
        for hook in HOOKS:
            bound = tuple(getattr(listener, hook) for listener, wants in entries if hook in wants)
            setattr_(self, "_on_" + hook, bound)
        setattr_(self, "wants_dispatched", bool(self._on_job_dispatched))
        setattr_(self, "wants_started", bool(self._on_job_started))
        setattr_(self, "wants_succeeded", bool(self._on_job_succeeded))

    # -- the events: each calls one hook on the listeners that want it -----------------------
    # (The three of the hot path loop inline: one call less than through _emit.)

    def dispatched(self, job: Job[Any], dispatcher: str) -> None:
        for hook in self._on_job_dispatched:
            try:
                hook(job, dispatcher)
            except Exception as exc:
                _hook_failed(hook, exc)

    def started(self, job: Job[Any], attempt: Attempt) -> None:
        for hook in self._on_job_started:
            try:
                hook(job, attempt)
            except Exception as exc:
                _hook_failed(hook, exc)

    def succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        for hook in self._on_job_succeeded:
            try:
                hook(job, attempt)
            except Exception as exc:
                _hook_failed(hook, exc)

    def failed(
        self, job: Job[Any], attempt: Attempt, error: BaseException, will_retry: bool
    ) -> None:
        _emit(self._on_job_failed, job, attempt, error, will_retry)

    def timed_out(self, job: Job[Any], attempt: Attempt, timeout: float, will_retry: bool) -> None:
        _emit(self._on_job_timed_out, job, attempt, timeout, will_retry)

    def retry_scheduled(self, job: Job[Any], attempt: Attempt, delay: float) -> None:
        _emit(self._on_job_retry_scheduled, job, attempt, delay)

    def gave_up(self, job: Job[Any], attempt: Attempt, error: BaseException) -> None:
        _emit(self._on_job_gave_up, job, attempt, error)

    def cancelled(self, job: Job[Any], reason: str) -> None:
        _emit(self._on_job_cancelled, job, reason)

    def late_result(self, job: Job[Any], attempt: Attempt) -> None:
        _emit(self._on_job_late_result, job, attempt)

    def thread_abandoned(
        self,
        job: Job[Any],
        attempt: Attempt,
        abandoned: int,
        replaced: bool,
        reason: str = "timeout",
    ) -> None:
        _emit(self._on_thread_abandoned, job, attempt, abandoned, replaced, reason)

    def pool(self, event: str, **fields: Any) -> None:
        # Read-only: one listener cannot change what the next one sees.
        _emit(self._on_pool_event, event, MappingProxyType(fields))

    def internal_error(self, where: str, error: BaseException) -> None:
        _emit(self._on_internal_error, where, error)


def _emit(hooks: _Hooks, *args: Any) -> None:
    """Call each of ``hooks``; what one raises is reported, and the next is called."""
    for hook in hooks:
        try:
            hook(*args)
        except Exception as exc:
            _hook_failed(hook, exc)


def _hook_failed(hook: Callable[..., None], error: BaseException) -> None:
    listener = getattr(hook, "__self__", hook)
    name = getattr(hook, "__name__", "hook")
    report_failure(f"listener {type(listener).__qualname__}.{name}", error)


def _entry(listener: Listener) -> tuple[Listener, frozenset[str]]:
    """``listener`` and the hooks it wants (asked once, here)."""
    return listener, frozenset(hook for hook in HOOKS if listener.wants(hook))
