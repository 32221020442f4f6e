"""The public exports are pinned: changing them is a deliberate act."""

from __future__ import annotations

import chronos


def test_public_exports() -> None:
    assert set(chronos.__all__) == {
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
    }
    for name in chronos.__all__:
        assert getattr(chronos, name) is not None


def test_error_tree() -> None:
    assert issubclass(chronos.JobTimeoutError, chronos.ChronosError)
    assert issubclass(chronos.JobTimeoutError, TimeoutError)
    assert issubclass(chronos.IllegalTransitionError, RuntimeError)
    assert not issubclass(chronos.JobInterrupted, Exception)


def test_worker_pool_is_an_executor() -> None:
    import concurrent.futures

    assert issubclass(chronos.WorkerPool, concurrent.futures.Executor)
