"""Structured lifecycle events, through structlog.

chronos never configures structlog.  A pool binds its logger once, when it is created:

- if the application configured structlog (``structlog.is_configured()``), chronos logs
  through ``structlog.get_logger("chronos")`` with the application's processors and level;
- otherwise chronos logs only warnings and errors, to stderr, with structlog's default
  processors, so an application that never heard of structlog is not flooded with one line
  per job.  Configure structlog (before creating the pool) to see every event.

Every event is one call with ``job_id``, ``job_name``, ``attempt`` and ``worker`` bound:

========================  ========  =====================================================
event                     level     when
========================  ========  =====================================================
``job.dispatched``        debug     a Dispatcher moved the job into the pool's queue
``job.started``           debug     an attempt started on a worker
``job.succeeded``         info      an attempt returned
``job.failed``            warning   an attempt raised (``will_retry`` says what follows)
``job.timed_out``         warning   an attempt passed its deadline
``job.retry_scheduled``   info      the job waits ``delay`` seconds before its next attempt
``job.gave_up``           error     the job failed or timed out for good
``job.cancelled``         info      the job was cancelled (``reason`` says by what)
``job.late_result``       debug     an abandoned attempt finished; its outcome was dropped
``pool.thread_abandoned`` warning   a worker thread was left behind in a hung attempt
``pool.shutdown``         info      shutdown started / finished
========================  ========  =====================================================
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
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
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
        self.log.warning(
            "job.failed",
            error=repr(error),
            will_retry=will_retry,
            duration=attempt.duration,
            **self._fields(job, attempt),
        )

    @_never_raises
    def timed_out(self, job: Job[Any], attempt: Attempt, timeout: float, will_retry: bool) -> None:
        self.log.warning(
            "job.timed_out", timeout=timeout, will_retry=will_retry, **self._fields(job, attempt)
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
            error=repr(error),
            attempts=len(job.attempts),
            status=job.status.value,
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
        self, job: Job[Any], attempt: Attempt, abandoned: int, replaced: bool
    ) -> None:
        self.log.warning(
            "pool.thread_abandoned",
            abandoned_threads=abandoned,
            replaced=replaced,
            **self._fields(job, attempt),
        )

    @_never_raises
    def pool(self, event: str, **fields: Any) -> None:
        if self._info_on:
            self.log.info(event, **fields)

    @_never_raises
    def internal_error(self, where: str, error: BaseException) -> None:
        self.log.error("chronos.internal_error", where=where, error=repr(error), exc_info=error)
