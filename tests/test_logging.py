"""Lifecycle events: one structured event each, with the job bound."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import structlog
from structlog.testing import capture_logs

from chronos import Dispatcher, Job, RetryPolicy, WorkerPool
from chronos.pool.attempts import COOPERATION_GRACE
from chronos.testing import FakeClock
from tests.conftest import Gate, wait_until


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
            clock.advance(COOPERATION_GRACE)  # the hung thread is abandoned
            wait_until(lambda: pool.stats.snapshot().abandoned_threads == 1)
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
    # One line for the job that gave up (with its traceback), nothing for routine steps.
    assert "job.failed" not in captured.err
    assert "job.gave_up" in captured.err and "visible" in captured.err
    assert "Traceback" in captured.err and 'raise ValueError("visible")' in captured.err
    assert captured.out == ""


class BrokenLogger:
    """A logger whose every call raises, as a broken processor or a closed stream would."""

    def is_enabled_for(self, level: int) -> bool:
        return True

    def _fail(self, event: str, **fields: object) -> None:
        raise OSError(f"cannot log {event}")

    debug = info = warning = error = _fail


@pytest.mark.timeout(30)
def test_a_logger_that_raises_loses_no_job(capsys: pytest.CaptureFixture[str]) -> None:
    """Every event is emitted in the middle of a job's accounting: a logger that raises must
    not leave a Future unresolved nor kill a thread; the failures are reported on stderr."""
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=2, backoff=1.0, jitter=False)
    with WorkerPool(2, logger=BrokenLogger(), clock=clock) as pool:
        dispatcher = Dispatcher(pool).start()
        ok = [pool.submit(abs, -n) for n in range(20)] + [dispatcher.submit(abs, -1)]
        failing = pool.submit_job(Job(int, ("x",), retry=policy))
        assert [f.result(timeout=5) for f in ok] == [*range(20), 1]
        assert clock.wait_for_waiters(1)  # the retry waits on the timer
        clock.advance(1.0)
        assert isinstance(failing.exception(timeout=5), ValueError)
        assert len(failing.job.attempts) == 2
        dispatcher.close()
        assert dispatcher.join(timeout=5)
    snapshot = pool.stats.snapshot()
    assert (snapshot.succeeded, snapshot.failed, snapshot.in_flight) == (21, 1, 0)
    err = capsys.readouterr().err
    assert "chronos: logging succeeded failed: OSError('cannot log job.succeeded')" in err
    assert "chronos: logging gave_up failed" in err


def test_the_stdlib_chronos_logger_level_quiets_or_opens_chronos(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without structlog configured, ``logging.getLogger("chronos")``'s level is the one
    documented way to choose what chronos prints (WARNING when it is not set)."""
    chronos_logger = logging.getLogger("chronos")

    def boom() -> None:
        raise ValueError("loud")

    try:
        chronos_logger.setLevel(logging.CRITICAL)
        with WorkerPool(max_workers=1) as pool:
            pool.submit(boom).exception(timeout=5)
        assert capsys.readouterr().err == ""  # quiet: not even the job that gave up

        chronos_logger.setLevel(logging.INFO)
        with WorkerPool(max_workers=1) as pool:
            pool.submit(boom).exception(timeout=5)
        err = capsys.readouterr().err
        assert "job.failed" in err and "job.gave_up" in err  # routine steps too, at INFO
    finally:
        chronos_logger.setLevel(logging.NOTSET)
