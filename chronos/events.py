"""Structured lifecycle events, through structlog.

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

import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec

import structlog

if TYPE_CHECKING:
    from chronos.job import Attempt, Job

__all__ = ["JobEvents", "default_logger"]

P = ParamSpec("P")


def default_logger() -> Any:
    """The logger a pool uses when none is given (see the module docstring)."""
    if structlog.is_configured():
        return structlog.get_logger("chronos").bind()
    level = logging.getLogger("chronos").level or logging.WARNING
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )


def _never_raises(emit: Callable[P, None]) -> Callable[P, None]:
    """Make a JobEvents method swallow what the logger raises.

    Events are emitted by chronos's own threads in the middle of a job's accounting (after
    its state changed, before its Future is resolved): a logger that raises there (a broken
    processor, a closed or full stream) would leave the job without its outcome or kill the
    thread.  Like ``logging.Handler.handleError``, the failure is reported on stderr, once
    per failing call, and chronos goes on.
    """

    @functools.wraps(emit)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            emit(*args, **kwargs)
        except Exception as exc:
            with contextlib.suppress(Exception):
                print(f"chronos: logging {emit.__name__} failed: {exc!r}", file=sys.stderr)

    return guarded


def _safe_repr(error: BaseException) -> str:
    """``repr(error)``, or a stand-in if the exception's own ``__repr__`` raises."""
    try:
        return repr(error)
    except Exception:
        return f"<{type(error).__qualname__} (repr failed)>"


def _enabled(logger: Any, level: int) -> bool:
    is_enabled_for = getattr(logger, "is_enabled_for", None)
    return True if is_enabled_for is None else bool(is_enabled_for(level))


class JobEvents:
    """Emits the lifecycle events of one pool.

    Thread-safety: stateless after construction; called from every chronos thread.  The
    per-job events of the hot path (started, succeeded, dispatched) are skipped for the
    price of one attribute test when their level is off.  No method ever raises: what the
    logger raises is reported on stderr (see :func:`_never_raises`).
    """

    __slots__ = ("_debug_on", "_info_on", "log")

    def __init__(self, logger: Any) -> None:
        self.log = logger
        self._debug_on = _enabled(logger, logging.DEBUG)
        self._info_on = _enabled(logger, logging.INFO)

    @staticmethod
    def _fields(job: Job[Any], attempt: Attempt | None) -> dict[str, Any]:
        """The bound fields; without an attempt, the job's latest (0: it never ran)."""
        return {
            "job_id": job.id,
            "job_name": job.name,
            "attempt": attempt.number if attempt is not None else len(job.attempts),
            "worker": attempt.worker if attempt is not None else None,
        }

    @_never_raises
    def dispatched(self, job: Job[Any], dispatcher: str) -> None:
        if self._debug_on:
            self.log.debug(
                "job.dispatched",
                job_id=job.id,
                job_name=job.name,
                attempt=len(job.attempts) + 1,  # the attempt this dispatch is for
                worker=None,
                dispatcher=dispatcher,
            )

    @_never_raises
    def started(self, job: Job[Any], attempt: Attempt) -> None:
        if self._debug_on:
            self.log.debug("job.started", **self._fields(job, attempt))

    @_never_raises
    def succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        if self._info_on:
            self.log.info("job.succeeded", duration=attempt.duration, **self._fields(job, attempt))

    @_never_raises
    def failed(
        self, job: Job[Any], attempt: Attempt, error: BaseException, will_retry: bool
    ) -> None:
        if self._info_on:
            self.log.info(
                "job.failed",
                error=_safe_repr(error),
                will_retry=will_retry,
                duration=attempt.duration,
                **self._fields(job, attempt),
            )

    @_never_raises
    def timed_out(self, job: Job[Any], attempt: Attempt, timeout: float, will_retry: bool) -> None:
        if self._info_on:
            self.log.info(
                "job.timed_out",
                timeout=timeout,
                will_retry=will_retry,
                **self._fields(job, attempt),
            )

    @_never_raises
    def retry_scheduled(self, job: Job[Any], attempt: Attempt, delay: float) -> None:
        if self._info_on:
            self.log.info(
                "job.retry_scheduled", delay=round(delay, 6), **self._fields(job, attempt)
            )

    @_never_raises
    def gave_up(self, job: Job[Any], attempt: Attempt, error: BaseException) -> None:
        self.log.error(
            "job.gave_up",
            error=_safe_repr(error),
            attempts=len(job.attempts),
            status=job.status.value,
            exc_info=error,
            **self._fields(job, attempt),
        )

    @_never_raises
    def cancelled(self, job: Job[Any], reason: str) -> None:
        if self._info_on:
            self.log.info("job.cancelled", reason=reason, **self._fields(job, None))

    @_never_raises
    def late_result(self, job: Job[Any], attempt: Attempt) -> None:
        if self._debug_on:
            self.log.debug("job.late_result", **self._fields(job, attempt))

    @_never_raises
    def thread_abandoned(
        self,
        job: Job[Any],
        attempt: Attempt,
        abandoned: int,
        replaced: bool,
        reason: str = "timeout",
    ) -> None:
        """A thread left in a hung attempt: a WARNING when a timeout left it (a job that
        hangs is worth a look), INFO when a shutdown that cancels running jobs did."""
        fields = self._fields(job, attempt)
        if reason == "timeout":
            self.log.warning(
                "pool.thread_abandoned",
                abandoned_threads=abandoned,
                replaced=replaced,
                reason=reason,
                **fields,
            )
        elif self._info_on:
            self.log.info(
                "pool.thread_abandoned",
                abandoned_threads=abandoned,
                replaced=replaced,
                reason=reason,
                **fields,
            )

    @_never_raises
    def pool(self, event: str, **fields: Any) -> None:
        if self._info_on:
            self.log.info(event, **fields)

    @_never_raises
    def internal_error(self, where: str, error: BaseException) -> None:
        self.log.error(
            "chronos.internal_error", where=where, error=_safe_repr(error), exc_info=error
        )
