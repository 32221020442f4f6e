"""A final report of a run: what became of the jobs, how long it took, what went wrong.

Call :func:`summarize` on a pool once its jobs are done (after ``shutdown``, typically)::

    report = summarize(pool, futures, wall_time=elapsed, dispatcher=dispatcher)
    print(report.format())

It reads only what chronos makes public: the pool's :class:`chronos.StatsSnapshot`, the
jobs (or their futures) you pass, and optionally a :class:`chronos.Dispatcher` and a
:class:`DispatchMeter`.  The chronos command line prints its demo's report with it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from chronos import (
    SYSTEM_CLOCK,
    Attempt,
    AttemptOutcome,
    Clock,
    Dispatcher,
    Job,
    JobFuture,
    JobStatus,
    JobTimeoutError,
    LatencySummary,
    StatsSnapshot,
    WorkerPool,
)
from chronos._validate import check_clock, check_count, check_number

__all__ = ["DispatchMeter", "JobSummary", "RunReport", "summarize"]

_RULE = "=" * 26


class DispatchMeter:
    """A structlog processor that times the ``job.dispatched`` events of a run.

    Put it first in your processors (and let debug events through to it) to learn the
    achieved dispatch rate over the dispatching window: ``(n - 1) / (last - first)`` for
    ``n`` dispatches, the first at ``first`` and the last at ``last``.  It passes every
    event on unchanged.

    Args:
        clock: the time source (only its ``now()`` is used).

    Raises:
        TypeError: ``clock`` is not a clock instance.

    Thread-safety: called from every chronos thread; its state is guarded by a lock.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock: Clock = check_clock("clock", clock, waits=False)
        self._lock = threading.Lock()  # guards the three fields below
        self._count = 0
        self._first: float | None = None
        self._last: float | None = None

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event_dict.get("event") == "job.dispatched":
            now = self._clock.now()
            with self._lock:
                self._count += 1
                if self._first is None:
                    self._first = now
                self._last = now
        return event_dict

    @property
    def count(self) -> int:
        """Dispatches seen so far."""
        with self._lock:
            return self._count

    @property
    def rate(self) -> float | None:
        """Dispatches per second from the first to the last, or None before the second."""
        with self._lock:
            if self._first is None or self._last is None or self._last <= self._first:
                return None
            return (self._count - 1) / (self._last - self._first)


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One job that did not succeed: where it ended and why."""

    id: int
    name: str
    status: JobStatus
    attempts: int
    error: str | None
    detail: str

    @classmethod
    def of(cls, job: Job[Any]) -> JobSummary:
        attempts = list(job.attempts)  # a copy: the job may still be running
        return cls(
            id=job.id,
            name=job.name,
            status=job.status,
            attempts=len(attempts),
            error=_error(attempts[-1]) if attempts else None,
            detail=_detail(job),
        )


def _error(attempt: Attempt) -> str | None:
    """The repr of what ``attempt`` raised; one form for every timeout.

    A timed-out attempt's error is raised by whichever thread ended it first (the pool's
    timer, or the job stepping out at its deadline), each with its own message: the report
    names the attempt and its timeout the same way whichever it was.
    """
    if attempt.outcome is AttemptOutcome.TIMED_OUT:
        timeout = "" if attempt.deadline is None else f"{attempt.deadline - attempt.started:.3g} s "
        return repr(JobTimeoutError(f"attempt {attempt.number} exceeded its {timeout}timeout"))
    return None if attempt.error is None else repr(attempt.error)


def _detail(job: Job[Any]) -> str:
    n = len(job.attempts)
    attempts = _plural(n, "attempt")
    status = job.status
    if status is JobStatus.CREATED:
        return "never submitted"
    if status is JobStatus.CANCELLED:
        if n == 0:
            return "cancelled before it ran"
        if job.attempts[-1].outcome is AttemptOutcome.CANCELLED:
            return f"cancelled while running attempt {n}"
        return f"cancelled while waiting to retry after {attempts}"
    if status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
        return f"{status.value.replace('_', ' ')} after {attempts}"
    return f"still {status.value} after {attempts}"


@dataclass(frozen=True, slots=True)
class RunReport:
    """Everything the final report says, as data (:meth:`format` renders it).

    Attributes:
        stats: the pool's counters when the report was made.
        wall_time: seconds the run took.
        jobs: how many jobs were passed to :func:`summarize`.
        not_submitted: of those, how many were never submitted (their dispatch was stopped).
        unsuccessful: every job passed in that did not succeed, in the order given; the
            ``error`` of each is the repr of its last attempt's exception, or for a timed-out
            attempt always ``JobTimeoutError('attempt N exceeded its T s timeout')``.
        dispatched: dispatches made by the dispatcher (retries included), if known.
        dispatch_rate: achieved dispatches per second over the dispatching window (from the
            first dispatch to the last), if known.
        target_rate: the dispatcher's rate limit, if it has one.
        interrupted: the run was cut short (Ctrl+C).
        forced: ... and then stopped at once (a second Ctrl+C).
    """

    stats: StatsSnapshot
    wall_time: float
    jobs: int
    not_submitted: int
    unsuccessful: tuple[JobSummary, ...]
    dispatched: int | None = None
    dispatch_rate: float | None = None
    target_rate: float | None = None
    interrupted: bool = False
    forced: bool = False

    @property
    def all_succeeded(self) -> bool:
        """True if every job submitted succeeded and none was left out."""
        s = self.stats
        return s.succeeded == s.submitted and not self.unsuccessful and not self.not_submitted

    @property
    def exit_status(self) -> int:
        """The conventional exit status: 130 if interrupted, else 0 if all succeeded, else 1."""
        if self.interrupted:
            return 130
        return 0 if self.all_succeeded else 1

    def as_dict(self) -> dict[str, Any]:
        """A plain dict, ready for ``json.dumps``."""
        return {
            "stats": self.stats.as_dict(),
            "wall_time": self.wall_time,
            "jobs": self.jobs,
            "not_submitted": self.not_submitted,
            "dispatched": self.dispatched,
            "dispatch_rate": self.dispatch_rate,
            "target_rate": self.target_rate,
            "interrupted": self.interrupted,
            "forced": self.forced,
            "exit_status": self.exit_status,
            "unsuccessful": [
                {
                    "id": j.id,
                    "name": j.name,
                    "status": j.status.value,
                    "attempts": j.attempts,
                    "error": j.error,
                    "detail": j.detail,
                }
                for j in self.unsuccessful
            ],
        }

    def format(self, max_listed: int = 50) -> str:
        """The report as lines of text, for a terminal or a log file.

        Args:
            max_listed: list at most this many of the jobs that did not succeed, >= 0.

        Raises:
            TypeError, ValueError: ``max_listed`` is not an int >= 0.
        """
        check_count("max_listed", max_listed, 0)
        s = self.stats
        lines = [
            f"{_RULE} FINAL REPORT {_RULE}",
            _row(
                "jobs",
                f"{s.submitted} submitted: {s.succeeded} succeeded, {s.failed} failed, "
                f"{s.timed_out} timed out, {s.cancelled} cancelled"
                + (f", {s.in_flight} unfinished" if s.in_flight else ""),
            ),
        ]
        if self.not_submitted:
            lines.append(_row("", f"{self.not_submitted} never submitted"))
        lines += [
            _row("attempts", f"{s.attempts} ({_plural(s.retries, 'retry', 'retries')})"),
            _row("timeouts", f"{_plural(s.attempt_timeouts, 'attempt')} timed out"),
            *self._thread_rows(),
            _row("wall time", f"{self.wall_time:.2f} s"),
            _row("dispatch", self._dispatch_line()),
            _row("queue wait", _percentiles(s.queue_wait)),
            _row("run time", _percentiles(s.run_time)),
        ]
        if self.forced:
            lines.append(_row("interrupted", "yes, twice: running jobs were cancelled at once"))
        elif self.interrupted:
            lines.append(
                _row("interrupted", "yes: waiting jobs cancelled, running ones given the grace")
            )
        if self.unsuccessful:
            lines.append(f"did not succeed ({len(self.unsuccessful)}):")
            for job in self.unsuccessful[:max_listed]:
                error = f": {job.error}" if job.error else ""
                lines.append(f"  #{job.id:<4} {job.name:<12} {job.detail}{error}")
            if len(self.unsuccessful) > max_listed:
                lines.append(f"  ... and {len(self.unsuccessful) - max_listed} more")
        else:
            lines.append("every job succeeded")
        lines.append("=" * (len(_RULE) * 2 + len(" FINAL REPORT ")))
        return "\n".join(lines)

    def _thread_rows(self) -> list[str]:
        # abandoned_threads counts the threads still inside an attempt that the pool ended
        # (by a timeout or a shutdown); abandoned_threads_total every thread it ever left so,
        # including a cooperative job's, which steps out a moment later.
        s = self.stats
        rows = [
            _row(
                "threads",
                f"{s.abandoned_threads} abandoned: still running an attempt that timed out "
                "or was cancelled",
            )
        ]
        if s.abandoned_threads_total:
            returned = max(0, s.abandoned_threads_total - s.abandoned_threads)
            rows.append(
                _row(
                    "",
                    f"{s.abandoned_threads_total} left mid-attempt by a timeout or shutdown, "
                    f"{returned} of them since returned",
                )
            )
        return rows

    def _dispatch_line(self) -> str:
        if self.dispatched is None:
            return "n/a (no dispatcher)"
        text = _plural(self.dispatched, "dispatch", "dispatches")
        shown = self.target_rate if self.target_rate is not None else self.dispatch_rate
        places = 2 if shown is None else _decimal_places(shown)
        if self.dispatch_rate is not None:
            # Rounded down, so that a rate within the limit never prints above it.
            text += f", {_floor(self.dispatch_rate, places)}/s achieved"
        if self.target_rate is not None:
            text += f" (limit {self.target_rate:.{places}f}/s)"
        return text


def _row(label: str, text: str) -> str:
    return f"{label:<12}{text}"


def _plural(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` and the noun that goes with it: 1 retry, 2 retries, 0 attempts."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _decimal_places(rate: float) -> int:
    """Enough decimal places to show three significant digits of ``rate``, at least 2."""
    if rate <= 0 or not math.isfinite(rate):
        return 2
    return max(2, min(9, 2 - math.floor(math.log10(rate))))


def _floor(rate: float, places: int) -> str:
    """``rate`` rounded down to ``places`` decimal places (exactly: no float rounding)."""
    if not math.isfinite(rate):
        return str(rate)
    return str(Decimal(rate).quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _percentiles(summary: LatencySummary) -> str:
    if not summary.count:
        return "no samples"
    return (
        f"p50 {_ms(summary.p50)}, p95 {_ms(summary.p95)}, p99 {_ms(summary.p99)}, "
        f"max {_ms(summary.max)} ({_plural(summary.count, 'sample')})"
    )


def summarize(
    pool: WorkerPool,
    jobs: Iterable[Job[Any] | JobFuture[Any]] = (),
    *,
    wall_time: float,
    dispatcher: Dispatcher | None = None,
    meter: DispatchMeter | None = None,
    interrupted: bool = False,
    forced: bool = False,
) -> RunReport:
    """Report on a run of ``pool``.

    Args:
        pool: the pool that ran the jobs; its stats give every count.
        jobs: the jobs of the run, or their futures; those that did not succeed are listed.
        wall_time: seconds the run took (measure it with the pool's clock).
        dispatcher: the dispatcher that fed the pool, for the dispatch count and rate limit.
        meter: a :class:`DispatchMeter` that saw the run's events, for the achieved rate.
        interrupted: whether the run was cut short.
        forced: whether it was then stopped at once.

    Returns:
        A :class:`RunReport`; ``report.format()`` is its text, ``report.as_dict()`` its data.

    Raises:
        TypeError, ValueError: for a bad argument, naming it.

    Thread-safety: may be called from any thread, at any time; while jobs still run, the
    report is a consistent snapshot of the counters and a recent view of the jobs.
    """
    if not isinstance(pool, WorkerPool):
        raise TypeError(f"pool must be a chronos.WorkerPool, got {type(pool).__name__}")
    all_jobs = _jobs_of(jobs)
    wall_time = check_number("wall_time", wall_time, minimum=0.0, inclusive=True, finite=True)
    if dispatcher is not None and not isinstance(dispatcher, Dispatcher):
        raise TypeError(f"dispatcher must be a chronos.Dispatcher, got {type(dispatcher).__name__}")
    if meter is not None and not isinstance(meter, DispatchMeter):
        raise TypeError(f"meter must be a DispatchMeter, got {type(meter).__name__}")
    stats = pool.stats.snapshot()
    rate = meter.rate if meter is not None else None
    bucket = dispatcher.bucket if dispatcher is not None else None
    return RunReport(
        stats=stats,
        wall_time=wall_time,
        jobs=len(all_jobs),
        not_submitted=sum(1 for job in all_jobs if job.status is JobStatus.CREATED),
        unsuccessful=tuple(
            JobSummary.of(job) for job in all_jobs if job.status is not JobStatus.SUCCEEDED
        ),
        dispatched=dispatcher.dispatched if dispatcher is not None else None,
        dispatch_rate=rate,
        target_rate=bucket.rate if bucket is not None else None,
        interrupted=interrupted or forced,
        forced=forced,
    )


def _jobs_of(jobs: Iterable[Job[Any] | JobFuture[Any]]) -> list[Job[Any]]:
    """The Jobs of ``jobs`` (Jobs, or JobFutures standing for theirs), checked."""
    try:
        items = iter(jobs)
    except TypeError:
        raise TypeError(
            f"jobs must be an iterable of Jobs or JobFutures, got {type(jobs).__name__}"
        ) from None
    all_jobs: list[Job[Any]] = []
    for item in items:
        if isinstance(item, JobFuture):
            all_jobs.append(item.job)
        elif isinstance(item, Job):
            all_jobs.append(item)
        else:
            raise TypeError(f"jobs must hold Jobs or JobFutures, got {type(item).__name__}")
    return all_jobs
