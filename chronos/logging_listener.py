"""The structured log of a pool's lifecycle events, as a :class:`chronos.Listener`.

:class:`LoggingListener` makes one structlog call per event: the event names, levels and
fields are listed in :mod:`chronos.events`, and the logger a pool uses by default is
:func:`chronos.events.default_logger`.  Every pool's :class:`chronos.events.JobEvents` calls
one first, before the listeners given to the pool.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chronos.hooks import HOOKS, Listener, check_hook

if TYPE_CHECKING:
    from chronos.job import Attempt, Job

__all__ = ["LoggingListener"]


def safe_repr(error: BaseException) -> str:
    """``repr(error)``, or a stand-in if the exception's own ``__repr__`` raises."""
    try:
        return repr(error)
    except Exception:
        return f"<{type(error).__qualname__} (repr failed)>"


def report_failure(what: str, error: BaseException) -> None:
    """Say on stderr that ``what`` failed (``chronos: <what> failed: <repr>``), and go on.

    Events are emitted by chronos's own threads in the middle of a job's accounting (after
    its state changed, before its Future is resolved): a logger or listener that raises
    there (a broken processor, a closed or full stream, a bug) would leave the job without
    its outcome or kill the thread.  Like ``logging.Handler.handleError``, the failure is
    reported on stderr, once per failing call, and chronos goes on.
    """
    with contextlib.suppress(Exception):
        print(f"chronos: {what} failed: {safe_repr(error)}", file=sys.stderr)


def _enabled(logger: Any, level: int) -> bool:
    is_enabled_for = getattr(logger, "is_enabled_for", None)
    return True if is_enabled_for is None else bool(is_enabled_for(level))


def _fields(job: Job[Any], attempt: Attempt | None) -> dict[str, Any]:
    """The bound fields; without an attempt, the job's latest (0: it never ran)."""
    return {
        "job_id": job.id,
        "job_name": job.name,
        "attempt": attempt.number if attempt is not None else len(job.attempts),
        "worker": attempt.worker if attempt is not None else None,
    }


#: The hooks logged at DEBUG or INFO: a logger with that level off does not want them.  The
#: others (WARNING and ERROR) are always called, as they always were: the logger filters
#: them itself.  (thread_abandoned is INFO only for a shutdown, and checks it itself.)
_DEBUG_HOOKS = frozenset({"job_dispatched", "job_started", "job_late_result"})
_INFO_HOOKS = frozenset(
    {
        "job_succeeded",
        "job_failed",
        "job_timed_out",
        "job_retry_scheduled",
        "job_cancelled",
        "pool_event",
    }
)


class LoggingListener(Listener):
    """Logs each lifecycle event as one structlog call on ``logger`` (any object with
    ``debug``, ``info``, ``warning`` and ``error`` methods).

    It wants (:meth:`wants`) every hook but those logged at DEBUG or INFO while ``logger``
    has that level off (asked once, through its ``is_enabled_for`` if it has one): a pool
    whose logger is at WARNING never calls ``job_started``.  No hook ever raises: what the
    logger raises is reported on stderr as ``chronos: logging <event> failed: <error>``.
    (Each hook catches it itself rather than through a decorator: one call less on the hot
    path.)

    Thread-safety: stateless after construction; called from every chronos thread.
    """

    def __init__(self, logger: Any) -> None:
        self.log = logger
        self._info_on = _enabled(logger, logging.INFO)
        off: set[str] = set()
        if not _enabled(logger, logging.DEBUG):
            off |= _DEBUG_HOOKS
        if not self._info_on:
            off |= _INFO_HOOKS
        self._wanted = frozenset(HOOKS) - off

    def wants(self, hook: str) -> bool:
        check_hook(hook)
        return hook in self._wanted

    def job_dispatched(self, job: Job[Any], dispatcher: str) -> None:
        try:
            self.log.debug(
                "job.dispatched",
                job_id=job.id,
                job_name=job.name,
                attempt=len(job.attempts) + 1,  # the attempt this dispatch is for
                worker=None,
                dispatcher=dispatcher,
            )
        except Exception as exc:
            report_failure("logging dispatched", exc)

    def job_started(self, job: Job[Any], attempt: Attempt) -> None:
        try:
            self.log.debug("job.started", **_fields(job, attempt))
        except Exception as exc:
            report_failure("logging started", exc)

    def job_succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        try:
            self.log.info("job.succeeded", duration=attempt.duration, **_fields(job, attempt))
        except Exception as exc:
            report_failure("logging succeeded", exc)

    def job_failed(
        self, job: Job[Any], attempt: Attempt, error: BaseException, will_retry: bool
    ) -> None:
        try:
            self.log.info(
                "job.failed",
                error=safe_repr(error),
                will_retry=will_retry,
                duration=attempt.duration,
                **_fields(job, attempt),
            )
        except Exception as exc:
            report_failure("logging failed", exc)

    def job_timed_out(
        self, job: Job[Any], attempt: Attempt, timeout: float, will_retry: bool
    ) -> None:
        try:
            self.log.info(
                "job.timed_out", timeout=timeout, will_retry=will_retry, **_fields(job, attempt)
            )
        except Exception as exc:
            report_failure("logging timed_out", exc)

    def job_retry_scheduled(self, job: Job[Any], attempt: Attempt, delay: float) -> None:
        try:
            self.log.info("job.retry_scheduled", delay=round(delay, 6), **_fields(job, attempt))
        except Exception as exc:
            report_failure("logging retry_scheduled", exc)

    def job_gave_up(self, job: Job[Any], attempt: Attempt, error: BaseException) -> None:
        try:
            self.log.error(
                "job.gave_up",
                error=safe_repr(error),
                attempts=len(job.attempts),
                status=job.status.value,
                exc_info=error,
                **_fields(job, attempt),
            )
        except Exception as exc:
            report_failure("logging gave_up", exc)

    def job_cancelled(self, job: Job[Any], reason: str) -> None:
        try:
            self.log.info("job.cancelled", reason=reason, **_fields(job, None))
        except Exception as exc:
            report_failure("logging cancelled", exc)

    def job_late_result(self, job: Job[Any], attempt: Attempt) -> None:
        try:
            self.log.debug("job.late_result", **_fields(job, attempt))
        except Exception as exc:
            report_failure("logging late_result", exc)

    def thread_abandoned(
        self,
        job: Job[Any],
        attempt: Attempt,
        abandoned_threads: int,
        replaced: bool,
        reason: str,
    ) -> None:
        """A WARNING when a timeout left the thread (a job that hangs is worth a look), INFO
        when a shutdown that cancels running jobs did."""
        try:
            if reason == "timeout":
                emit = self.log.warning
            elif self._info_on:
                emit = self.log.info
            else:
                return
            emit(
                "pool.thread_abandoned",
                abandoned_threads=abandoned_threads,
                replaced=replaced,
                reason=reason,
                **_fields(job, attempt),
            )
        except Exception as exc:
            report_failure("logging thread_abandoned", exc)

    def pool_event(self, event: str, fields: Mapping[str, Any]) -> None:
        try:
            self.log.info(event, **fields)
        except Exception as exc:
            report_failure("logging pool", exc)

    def internal_error(self, where: str, error: BaseException) -> None:
        try:
            self.log.error(
                "chronos.internal_error", where=where, error=safe_repr(error), exc_info=error
            )
        except Exception as exc:
            report_failure("logging internal_error", exc)
