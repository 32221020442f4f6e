"""What a running job can know about itself: ``chronos.current_job()``.

A cooperative job checks its context to stop promptly when its attempt times out or is
cancelled by shutdown::

    def crawl(urls):
        ctx = chronos.current_job()
        for url in urls:
            ctx.check()              # raises once the attempt timed out or was cancelled
            fetch(url, timeout=ctx.remaining())
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from chronos._ledger import cancel_event
from chronos._validate import check_clock, check_optional_number
from chronos.clock import Clock
from chronos.errors import JobCancelledError, JobTimeoutError
from chronos.job import Attempt, Job, timeout_message

__all__ = ["JobContext", "current_job"]

_local = threading.local()


class JobContext:
    """The running attempt of a job, seen from inside it.

    Args:
        job: the job.
        attempt: its running attempt.
        clock: the pool's clock.

    Raises:
        TypeError: for a bad argument, naming it.

    Thread-safety: made for the thread that runs the attempt; its properties may be read
    from any thread.
    """

    __slots__ = ("_clock", "attempt", "job")

    def __init__(self, job: Job[Any], attempt: Attempt, clock: Clock) -> None:
        if not isinstance(job, Job):
            raise TypeError(f"job must be a chronos.Job, got {type(job).__name__}")
        if not isinstance(attempt, Attempt):
            raise TypeError(f"attempt must be a chronos.Attempt, got {type(attempt).__name__}")
        self.job = job
        self.attempt = attempt
        self._clock = check_clock("clock", clock)

    @classmethod
    def _of(cls, job: Job[Any], attempt: Attempt, clock: Clock) -> JobContext:
        """A context of what a worker runs: nothing to check (current_job's path)."""
        context: JobContext = cls.__new__(cls)
        context.job = job
        context.attempt = attempt
        context._clock = clock
        return context

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def attempt_number(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return self.attempt.number

    @property
    def deadline(self) -> float | None:
        """The clock reading at which this attempt times out, or None."""
        return self.attempt.deadline

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without a timeout."""
        if self.attempt.deadline is None:
            return None
        return max(0.0, self.attempt.deadline - self._clock.now())

    @property
    def cancelled(self) -> bool:
        """True once the attempt timed out, was cancelled by shutdown, was asked to stop
        (:meth:`chronos.Job.request_stop`: a durable job's cancel), or passed its deadline."""
        if self.attempt.stop_requested:
            return True
        deadline = self.attempt.deadline
        return deadline is not None and self._clock.now() >= deadline

    def check(self) -> None:
        """Raise if the job should stop.

        Raises:
            JobTimeoutError: the attempt passed its deadline.
            JobCancelledError: the attempt was cancelled (shutdown) or asked to stop.
        """
        deadline = self.attempt.deadline
        if deadline is not None and self._clock.now() >= deadline:
            raise JobTimeoutError(timeout_message(self.job, self.attempt))
        if self.attempt.stop_requested:
            raise JobCancelledError(
                f"job #{self.job.id} attempt {self.attempt.number} was cancelled"
            )

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds (to the deadline if None), waking at cancellation.

        Use it instead of ``time.sleep`` in a cooperative job.

        Returns:
            True if the attempt was cancelled or timed out (stop now), False otherwise.

        Raises:
            TypeError, ValueError: ``timeout`` is not None nor a number >= 0.
        """
        timeout = check_optional_number("timeout", timeout, minimum=0.0, inclusive=True)
        event = cancel_event(self.job, self.attempt)
        deadline = self.attempt.deadline
        if timeout is not None:
            until = self._clock.now() + timeout
            deadline = until if deadline is None else min(deadline, until)
        self._clock.wait_until(event, deadline)
        return self.cancelled


class _Running(Protocol):
    """A worker slot as the context sees it: the attempt its thread runs, or None."""

    running: tuple[Job[Any], Attempt] | None


def current_job() -> JobContext:
    """The context of the job running on this thread.

    Raises:
        RuntimeError: called outside a job run by chronos.
    """
    slot: _Running | None = getattr(_local, "slot", None)
    running = slot.running if slot is not None else None
    if running is None:
        raise RuntimeError("current_job() called outside a job run by a chronos WorkerPool")
    job, attempt = running
    clock: Clock = _local.clock
    return JobContext._of(job, attempt, clock)  # noqa: SLF001 -- its unchecked constructor


def bind_worker(slot: _Running, clock: Clock) -> None:
    """Make this thread a worker: :func:`current_job` reads ``slot.running`` from now on.

    The worker sets ``slot.running`` around every attempt it runs: an attribute store per
    job instead of a thread-local one.
    """
    _local.slot = slot
    _local.clock = clock
