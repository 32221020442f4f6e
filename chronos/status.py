"""The states of a job, and which of them are terminal."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TERMINAL_STATES", "JobStatus"]


class JobStatus(StrEnum):
    """Where a job is in its life.

    ``CREATED`` jobs have not been submitted yet.  ``PENDING`` jobs wait in a Dispatcher for
    the rate limit, ``QUEUED`` jobs wait in the pool's queue, ``RUNNING`` jobs run an attempt
    on a worker thread, ``RETRY_WAIT`` jobs wait out their backoff without holding a thread.
    The last four are terminal: a job reaches exactly one of them, exactly once.
    """

    CREATED = "created"
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "waiting_to_retry"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for succeeded, failed, timed out and cancelled."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}
)
