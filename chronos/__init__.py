"""chronos: run jobs concurrently inside a program, with rate limits, timeouts and retries."""

from chronos.clock import SYSTEM_CLOCK, Clock, SystemClock
from chronos.context import JobContext, current_job
from chronos.dispatcher import Dispatcher, DispatcherStatistics
from chronos.errors import (
    ChronosError,
    IllegalTransitionError,
    JobCancelledError,
    JobInterrupted,
    JobTimeoutError,
    NonRetryableError,
)
from chronos.hooks import Listener
from chronos.job import Attempt, AttemptOutcome, Job, JobFuture
from chronos.pool import PoolStatistics, WorkerPool
from chronos.retry import RetryPolicy
from chronos.shutdown import GracefulShutdown
from chronos.spec import JobSpec
from chronos.stats import AtomicCounter, LatencySummary, Stats, StatsSnapshot
from chronos.status import JobStatus
from chronos.tasks import JobFailedError, JobHandle, Queue, Task
from chronos.ticker import TokenBucket
from chronos.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "SYSTEM_CLOCK",
    "AtomicCounter",
    "Attempt",
    "AttemptOutcome",
    "ChronosError",
    "Clock",
    "Dispatcher",
    "DispatcherStatistics",
    "GracefulShutdown",
    "IllegalTransitionError",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobFuture",
    "JobHandle",
    "JobInterrupted",
    "JobSpec",
    "JobStatus",
    "JobTimeoutError",
    "LatencySummary",
    "Listener",
    "NonRetryableError",
    "PoolStatistics",
    "Queue",
    "RetryPolicy",
    "Stats",
    "StatsSnapshot",
    "SystemClock",
    "Task",
    "TokenBucket",
    "Worker",
    "WorkerPool",
    "__version__",
    "current_job",
]
