"""Lifecycle events: one structured event each, with the job bound."""

from __future__ import annotations

import subprocess
import sys

import structlog
from structlog.testing import capture_logs

from chronos import Dispatcher, Job, RetryPolicy, WorkerPool
from chronos.testing import FakeClock
from tests.conftest import Gate


def test_every_lifecycle_event_is_logged_with_the_job_bound(clock: FakeClock, gate: Gate) -> None:
    calls = iter([ValueError("first"), None])

    def flaky() -> str:
        error = next(calls)
        if error is not None:
            raise error
        return "ok"

    with capture_logs() as logs:
        policy = RetryPolicy(max_attempts=2, backoff=0.0, jitter=False)
        pool = WorkerPool(max_workers=2, timeout=5.0, retry=policy, clock=clock)
        with Dispatcher(pool) as dispatcher:
            assert dispatcher.submit(flaky).result(timeout=5) == "ok"
            hung = pool.submit_job(Job(gate.wait, retry=RetryPolicy(max_attempts=1)))
            assert gate.entered(1)
            clock.advance(5.0)
            assert hung.exception(timeout=5) is not None
        gate.open()
        pool.shutdown()
    events = [e["event"] for e in logs]
    for expected in [
        "job.dispatched",
        "job.started",
        "job.failed",
        "job.retry_scheduled",
        "job.succeeded",
        "job.timed_out",
        "pool.thread_abandoned",
        "job.gave_up",
        "pool.shutdown",
    ]:
        assert expected in events, (expected, events)
    for entry in logs:
        if entry["event"].startswith("job."):
            assert {"job_id", "job_name", "attempt", "worker"} <= entry.keys(), entry
    retry = next(e for e in logs if e["event"] == "job.retry_scheduled")
    assert retry["delay"] == 0.0 and retry["attempt"] == 1


def test_importing_chronos_does_not_configure_structlog() -> None:
    code = "import structlog, chronos; print(structlog.is_configured())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_unconfigured_structlog_gets_only_warnings(capsys: object) -> None:
    assert not structlog.is_configured()
    with WorkerPool(max_workers=1) as pool:
        pool.submit(str, 1).result(timeout=5)

        def boom() -> None:
            raise ValueError("visible")

        pool.submit(boom).exception(timeout=5)
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    assert "job.started" not in captured.err and "job.succeeded" not in captured.err
    assert "job.failed" in captured.err and "visible" in captured.err
    assert captured.out == ""
