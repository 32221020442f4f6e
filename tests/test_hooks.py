"""Lifecycle hooks: Listener, its wants(), and JobEvents fanning events out to listeners."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import pytest

import chronos
from chronos import Attempt, Job, JobTimeoutError, Listener, RetryPolicy, WorkerPool
from chronos.events import JobEvents, LoggingListener
from chronos.hooks import HOOKS
from chronos.testing import FakeClock
from tests.conftest import Gate

Call = tuple[Any, ...]


class Recorder(Listener):
    """Records every hook call as ``(hook, *args)``, and the thread it ran on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.threads: list[threading.Thread] = []

    def _record(self, *call: Any) -> None:
        with self._lock:
            self.calls.append(call)
            self.threads.append(threading.current_thread())

    def named(self, *hooks: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call[0] in hooks]

    def job_dispatched(self, job: Job[Any], dispatcher: str) -> None:
        self._record("job_dispatched", job, dispatcher)

    def job_started(self, job: Job[Any], attempt: Attempt) -> None:
        self._record("job_started", job, attempt)

    def job_succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        self._record("job_succeeded", job, attempt)

    def job_failed(
        self, job: Job[Any], attempt: Attempt, error: BaseException, will_retry: bool
    ) -> None:
        self._record("job_failed", job, attempt, error, will_retry)

    def job_timed_out(
        self, job: Job[Any], attempt: Attempt, timeout: float, will_retry: bool
    ) -> None:
        self._record("job_timed_out", job, attempt, timeout, will_retry)

    def job_retry_scheduled(self, job: Job[Any], attempt: Attempt, delay: float) -> None:
        self._record("job_retry_scheduled", job, attempt, delay)

    def job_gave_up(self, job: Job[Any], attempt: Attempt, error: BaseException) -> None:
        self._record("job_gave_up", job, attempt, error)

    def job_cancelled(self, job: Job[Any], reason: str) -> None:
        self._record("job_cancelled", job, reason)

    def job_late_result(self, job: Job[Any], attempt: Attempt) -> None:
        self._record("job_late_result", job, attempt)

    def thread_abandoned(
        self,
        job: Job[Any],
        attempt: Attempt,
        abandoned_threads: int,
        replaced: bool,
        reason: str,
    ) -> None:
        self._record("thread_abandoned", job, attempt, abandoned_threads, replaced, reason)

    def pool_event(self, event: str, fields: Mapping[str, Any]) -> None:
        self._record("pool_event", event, dict(fields))

    def internal_error(self, where: str, error: BaseException) -> None:
        self._record("internal_error", where, error)


class Outcomes(Listener):
    """Overrides two hooks only."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def job_succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        self.seen.append(f"succeeded {job.name} #{attempt.number}")

    def job_gave_up(self, job: Job[Any], attempt: Attempt, error: BaseException) -> None:
        self.seen.append(f"gave up {job.name} #{attempt.number}")


class Boom(Listener):
    """Raises from every hook it overrides."""

    def job_succeeded(self, job: Job[Any], attempt: Attempt) -> None:
        raise RuntimeError("boom")

    def pool_event(self, event: str, fields: Mapping[str, Any]) -> None:
        raise RuntimeError("boom")


class LevelLogger:
    """A logger with a level and every call dropped (for the wants_* flags)."""

    def __init__(self, level: int) -> None:
        self.level = level

    def is_enabled_for(self, level: int) -> bool:
        return level >= self.level

    def _drop(self, event: str, **fields: object) -> None:
        pass

    debug = info = warning = error = _drop


class ListLogger:
    """Every level on; keeps ``(method, event, fields)`` for each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, object]]] = []

    def is_enabled_for(self, level: int) -> bool:
        return True

    def debug(self, event: str, **fields: object) -> None:
        self.calls.append(("debug", event, fields))

    def info(self, event: str, **fields: object) -> None:
        self.calls.append(("info", event, fields))

    def warning(self, event: str, **fields: object) -> None:
        self.calls.append(("warning", event, fields))

    def error(self, event: str, **fields: object) -> None:
        self.calls.append(("error", event, fields))


def job_and_attempt() -> tuple[Job[Any], Attempt]:
    return Job(abs, (-1,)), Attempt(number=1, worker="w", started=0.0)


# -- Listener.wants ------------------------------------------------------------------------


def test_wants_is_true_for_the_hooks_a_subclass_overrides() -> None:
    assert not any(Listener().wants(hook) for hook in HOOKS)
    outcomes = Outcomes()
    assert {hook for hook in HOOKS if outcomes.wants(hook)} == {"job_succeeded", "job_gave_up"}

    class Inherited(Outcomes):
        def job_started(self, job: Job[Any], attempt: Attempt) -> None:
            pass

    wanted = {hook for hook in HOOKS if Inherited().wants(hook)}
    assert wanted == {"job_succeeded", "job_gave_up", "job_started"}
    assert all(Recorder().wants(hook) for hook in HOOKS)
    with pytest.raises(ValueError, match="hook must be one of"):
        outcomes.wants("job_exploded")
    with pytest.raises(ValueError, match="'wants'"):
        outcomes.wants("wants")


def test_hooks_are_no_ops_and_wants_can_be_overridden() -> None:
    job, attempt = job_and_attempt()
    listener = Listener()
    assert listener.job_succeeded(job, attempt) is None  # type: ignore[func-returns-value]
    assert listener.pool_event("pool.shutdown", {}) is None  # type: ignore[func-returns-value]

    class Picky(Recorder):
        def wants(self, hook: str) -> bool:
            return hook == "job_cancelled"

    picky = Picky()
    events = JobEvents(LevelLogger(logging.CRITICAL + 1), [picky])
    events.succeeded(job, attempt)
    events.cancelled(job, "test")
    assert picky.calls == [("job_cancelled", job, "test")]
    assert not events.wants_succeeded


def test_logging_listener_wants_the_hooks_whose_level_is_on() -> None:
    def wanted(level: int) -> set[str]:
        listener = LoggingListener(LevelLogger(level))
        return {hook for hook in HOOKS if listener.wants(hook)}

    assert wanted(logging.DEBUG) == set(HOOKS)
    assert wanted(logging.INFO) == set(HOOKS) - {
        "job_dispatched",
        "job_started",
        "job_late_result",
    }
    # WARNING and ERROR are always called (the logger filters them), as they always were.
    always = {"job_gave_up", "thread_abandoned", "internal_error"}
    assert wanted(logging.WARNING) == wanted(logging.CRITICAL + 1) == always

    class NoLevel:  # no is_enabled_for: every hook
        debug = info = warning = error = LevelLogger._drop

    no_level = LoggingListener(NoLevel())
    assert all(no_level.wants(hook) for hook in HOOKS)
    with pytest.raises(ValueError, match="hook must be one of"):
        no_level.wants("job_exploded")


# -- JobEvents -----------------------------------------------------------------------------


def test_each_event_reaches_the_logger_then_each_listener_with_its_arguments() -> None:
    logger = ListLogger()
    first, second = Recorder(), Recorder()
    events = JobEvents(logger, [first, second])
    job, attempt = job_and_attempt()
    error = ValueError("no")
    events.dispatched(job, "d1")
    events.started(job, attempt)
    events.succeeded(job, attempt)
    events.failed(job, attempt, error, True)
    events.timed_out(job, attempt, 2.5, False)
    events.retry_scheduled(job, attempt, 0.25)
    events.gave_up(job, attempt, error)
    events.cancelled(job, "future.cancel")
    events.late_result(job, attempt)
    events.thread_abandoned(job, attempt, 3, True)
    events.thread_abandoned(job, attempt, 4, False, reason="shutdown")
    events.pool("pool.shutdown", pool="p", phase="started")
    events.internal_error("worker", error)
    expected: list[Call] = [
        ("job_dispatched", job, "d1"),
        ("job_started", job, attempt),
        ("job_succeeded", job, attempt),
        ("job_failed", job, attempt, error, True),
        ("job_timed_out", job, attempt, 2.5, False),
        ("job_retry_scheduled", job, attempt, 0.25),
        ("job_gave_up", job, attempt, error),
        ("job_cancelled", job, "future.cancel"),
        ("job_late_result", job, attempt),
        ("thread_abandoned", job, attempt, 3, True, "timeout"),
        ("thread_abandoned", job, attempt, 4, False, "shutdown"),
        ("pool_event", "pool.shutdown", {"pool": "p", "phase": "started"}),
        ("internal_error", "worker", error),
    ]
    assert first.calls == expected
    assert second.calls == expected
    assert [(method, event) for method, event, _ in logger.calls] == [
        ("debug", "job.dispatched"),
        ("debug", "job.started"),
        ("info", "job.succeeded"),
        ("info", "job.failed"),
        ("info", "job.timed_out"),
        ("info", "job.retry_scheduled"),
        ("error", "job.gave_up"),
        ("info", "job.cancelled"),
        ("debug", "job.late_result"),
        ("warning", "pool.thread_abandoned"),
        ("info", "pool.thread_abandoned"),
        ("info", "pool.shutdown"),
        ("error", "chronos.internal_error"),
    ]
    bound = {"job_id": job.id, "job_name": "abs", "attempt": 1, "worker": "w"}
    assert logger.calls[2][2] == {"duration": None, **bound}
    assert logger.calls[3][2] == {
        "error": "ValueError('no')",
        "will_retry": True,
        "duration": None,
        **bound,
    }
    assert events.listeners == (first, second)


def test_the_logging_listener_is_called_first() -> None:
    logger = ListLogger()
    seen_by_listener: list[int] = []

    class After(Listener):
        def job_succeeded(self, job: Job[Any], attempt: Attempt) -> None:
            seen_by_listener.append(len(logger.calls))

    events = JobEvents(logger, [After()])
    events.succeeded(*job_and_attempt())
    assert seen_by_listener == [1]


def test_a_listener_that_raises_does_not_stop_the_next_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorder = Recorder()
    events = JobEvents(LevelLogger(logging.WARNING), [Boom(), recorder])
    job, attempt = job_and_attempt()
    events.succeeded(job, attempt)  # does not raise
    events.pool("dispatcher.started", dispatcher="d", pool="p")
    assert recorder.named("job_succeeded", "pool_event") == [
        ("job_succeeded", job, attempt),
        ("pool_event", "dispatcher.started", {"dispatcher": "d", "pool": "p"}),
    ]
    err = capsys.readouterr().err
    assert "chronos: listener Boom.job_succeeded failed: RuntimeError('boom')" in err
    assert "chronos: listener Boom.pool_event failed: RuntimeError('boom')" in err


def test_pool_event_fields_are_read_only() -> None:
    class Meddler(Listener):
        def pool_event(self, event: str, fields: Mapping[str, Any]) -> None:
            fields["phase"] = "meddled"  # type: ignore[index]

    recorder = Recorder()
    events = JobEvents(LevelLogger(logging.CRITICAL), [Meddler(), recorder])
    events.pool("pool.shutdown", pool="p", phase="started")
    assert recorder.calls == [("pool_event", "pool.shutdown", {"pool": "p", "phase": "started"})]


def test_the_wants_flags_follow_the_logger_level_and_the_listeners() -> None:
    events = JobEvents(LevelLogger(logging.WARNING))
    flags = (events.wants_dispatched, events.wants_started, events.wants_succeeded)
    assert flags == (False, False, False)

    class Starts(Listener):
        def job_started(self, job: Job[Any], attempt: Attempt) -> None:
            pass

    starts, outcomes = Starts(), Outcomes()
    events.add_listener(starts)
    events.add_listener(outcomes)
    assert events.listeners == (starts, outcomes)
    flags = (events.wants_dispatched, events.wants_started, events.wants_succeeded)
    assert flags == (False, True, True)
    events.remove_listener(starts)
    assert list(events.listeners) == [outcomes]
    assert (events.wants_started, events.wants_succeeded) == (False, True)

    chatty = JobEvents(LevelLogger(logging.DEBUG))
    assert (chatty.wants_dispatched, chatty.wants_started, chatty.wants_succeeded) == (
        True,
        True,
        True,
    )
    with pytest.raises(AttributeError, match="read-only"):
        chatty.wants_succeeded = False  # type: ignore[misc]
    with pytest.raises(AttributeError, match="read-only"):
        chatty.wants_started = False  # type: ignore[misc]


def test_add_and_remove_listener() -> None:
    events = JobEvents(LevelLogger(logging.WARNING))
    recorder = Recorder()
    job, attempt = job_and_attempt()
    events.succeeded(job, attempt)
    events.add_listener(recorder)
    events.succeeded(job, attempt)
    with pytest.raises(ValueError, match="already added"):
        events.add_listener(recorder)
    events.remove_listener(recorder)
    events.succeeded(job, attempt)
    assert recorder.calls == [("job_succeeded", job, attempt)]
    assert events.listeners == ()
    with pytest.raises(ValueError, match="not added"):
        events.remove_listener(recorder)
    with pytest.raises(TypeError, match=r"listener must be a chronos\.Listener"):
        events.add_listener(print)  # type: ignore[arg-type]


def test_listeners_are_validated() -> None:
    logger = LevelLogger(logging.WARNING)
    with pytest.raises(TypeError, match=r"listeners must hold chronos\.Listener.*int at index 1"):
        JobEvents(logger, [Recorder(), 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="listeners must be an iterable"):
        JobEvents(logger, Recorder())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="listeners must be an iterable"):
        JobEvents(logger, 3)  # type: ignore[arg-type]
    recorder = Recorder()
    with pytest.raises(ValueError, match="same listener twice"):
        JobEvents(logger, [recorder, recorder])
    assert JobEvents(logger, None).listeners == ()
    assert JobEvents(logger, iter([recorder])).listeners == (recorder,)


def test_listener_is_exported() -> None:
    assert chronos.Listener is Listener
    assert "Listener" in chronos.__all__


# -- a pool calling its listeners --------------------------------------------------------------
# (These need WorkerPool(listeners=...).)


def test_a_success_is_heard() -> None:
    recorder, outcomes = Recorder(), Outcomes()
    with WorkerPool(1, listeners=[recorder, outcomes]) as pool:
        future = pool.submit(abs, -3)
        assert future.result(timeout=5) == 3
        # Hooks run before the Future is resolved: they are all in.
        job = future.job
        started, succeeded = recorder.named("job_started", "job_succeeded")
        assert started[0] == "job_started" and started[1] is job
        assert succeeded[0] == "job_succeeded" and succeeded[1] is job
        assert succeeded[2] is started[2] is job.attempts[0]
        assert succeeded[2].number == 1 and succeeded[2].duration is not None
    assert outcomes.seen == ["succeeded abs #1"]
    shutdown = [call[2]["phase"] for call in recorder.named("pool_event")]
    assert shutdown == ["started", "finished"]
    assert threading.main_thread() not in recorder.threads[:2]  # on the worker


def test_a_failure_then_a_retry_then_a_success_is_heard() -> None:
    outcomes = iter([ValueError("first"), None])
    error_seen: list[BaseException] = []

    def flaky() -> str:
        error = next(outcomes)
        if error is not None:
            error_seen.append(error)
            raise error
        return "ok"

    recorder = Recorder()
    policy = RetryPolicy(max_attempts=2, backoff=0.0)
    with WorkerPool(1, retry=policy, listeners=[recorder]) as pool:
        future = pool.submit(flaky)
        assert future.result(timeout=5) == "ok"
        job = future.job
        first, second = job.attempts
        job_hooks = [c for c in recorder.calls if c[0] != "pool_event"]
        assert job_hooks == [
            ("job_started", job, first),
            ("job_failed", job, first, error_seen[0], True),
            ("job_retry_scheduled", job, first, 0.0),
            ("job_started", job, second),
            ("job_succeeded", job, second),
        ]


def test_a_timeout_is_heard(clock: FakeClock, gate: Gate) -> None:
    recorder = Recorder()
    pool = WorkerPool(1, timeout=5.0, clock=clock, listeners=[recorder])
    try:
        future = pool.submit_job(Job(gate.wait, retry=RetryPolicy(max_attempts=1)))
        assert gate.entered(1)
        clock.advance(5.0)
        error = future.exception(timeout=5)
        assert isinstance(error, JobTimeoutError)
        job = future.job
        attempt = job.attempts[0]
        assert recorder.named("job_timed_out", "job_gave_up") == [
            ("job_timed_out", job, attempt, 5.0, False),
            ("job_gave_up", job, attempt, error),
        ]
    finally:
        gate.open()
        pool.shutdown()


def test_a_cancel_is_heard(gate: Gate) -> None:
    recorder = Recorder()
    with WorkerPool(1, listeners=[recorder]) as pool:
        blocker = pool.submit(gate.wait)
        assert gate.entered(1)
        waiting = pool.submit(abs, -1)
        assert waiting.cancel()
        # Called on the thread that cancelled, before cancel() returned.
        assert recorder.named("job_cancelled") == [("job_cancelled", waiting.job, "future.cancel")]
        gate.open()
        blocker.result(timeout=5)


def test_a_listener_that_raises_loses_no_job(capsys: pytest.CaptureFixture[str]) -> None:
    recorder = Recorder()
    with WorkerPool(2, listeners=[Boom(), recorder]) as pool:
        futures = [pool.submit(abs, -n) for n in range(5)]
        assert [f.result(timeout=5) for f in futures] == list(range(5))
        assert len(recorder.named("job_succeeded")) == 5
    assert len(recorder.named("pool_event")) == 2
    err = capsys.readouterr().err
    assert err.count("chronos: listener Boom.job_succeeded failed: RuntimeError('boom')") == 5
    assert err.count("chronos: listener Boom.pool_event failed") == 2
