"""Bad input gets an early, clear error that names the parameter."""

from __future__ import annotations

from typing import Any

import pytest

from chronos import Dispatcher, Job, RetryPolicy, WorkerPool, current_job


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_workers": 0}, ValueError, "max_workers must be >= 1"),
        ({"max_workers": -3}, ValueError, "max_workers must be >= 1"),
        ({"max_workers": 2.5}, TypeError, "max_workers must be an int"),
        ({"max_workers": True}, TypeError, "max_workers must be an int"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": -1.0}, ValueError, "timeout must be > 0"),
        ({"timeout": float("nan")}, ValueError, "timeout must be > 0"),
        ({"timeout": float("inf")}, ValueError, "timeout must be finite"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"retry": 3}, TypeError, "retry must be a RetryPolicy"),
        ({"queue_size": -1}, ValueError, "queue_size must be >= 0"),
        ({"max_abandoned_threads": -1}, ValueError, "max_abandoned_threads must be >= 0"),
        ({"exit_grace": -1}, ValueError, "exit_grace must be >= 0"),
        ({"thread_name_prefix": 3}, TypeError, "thread_name_prefix must be a str"),
        ({"initializer": 3}, TypeError, "initializer must be a callable"),
    ],
)
def test_worker_pool_rejects(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        WorkerPool(**kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((42,), {}, TypeError, "fn must be callable, got int"),
        ((print, 5), {}, TypeError, "args must be a tuple"),
        ((print,), {"kwargs": [1]}, TypeError, "kwargs must be a mapping"),
        ((print,), {"name": 1}, TypeError, "name must be a str"),
        ((print,), {"timeout": 0}, ValueError, "timeout must be > 0"),
        ((print,), {"retry": "x"}, TypeError, "retry must be a RetryPolicy"),
    ],
)
def test_job_rejects(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Job(*args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts must be an int"),
        ({"backoff": -1}, ValueError, "backoff must be >= 0"),
        ({"backoff": 2, "max_backoff": 1}, ValueError, "max_backoff must be >= backoff"),
        ({"multiplier": 0.5}, ValueError, "multiplier must be >= 1"),
        ({"deadline": 0}, ValueError, "deadline must be > 0"),
        ({"retry_on": "ValueError"}, TypeError, "retry_on must be an exception class"),
        ({"never_retry_on": (int,)}, TypeError, "never_retry_on must be an exception class"),
        ({"wait": 5}, TypeError, "wait must be a tenacity wait_base"),
        ({"stop": 5}, TypeError, "stop must be a tenacity stop_base"),
        ({"retry": 5}, TypeError, "retry must be a tenacity retry_base"),
    ],
)
def test_retry_policy_rejects(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"interval": 0}, ValueError, "interval must be > 0"),
        ({"interval": -0.3}, ValueError, "interval must be > 0"),
        ({"rate": 0}, ValueError, "rate must be > 0"),
        ({"rate": float("inf")}, ValueError, "rate must be finite"),
        ({"rate": 10, "burst": 0}, ValueError, "burst must be >= 1"),
        ({"rate": 10, "burst": 1.5}, TypeError, "burst must be an int"),
        ({"interval": 1, "rate": 1}, ValueError, "give interval or rate, not both"),
        ({"burst": 3}, ValueError, "burst goes with rate"),
    ],
)
def test_dispatcher_rejects(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with WorkerPool(max_workers=1) as pool, pytest.raises(error, match=message):
        Dispatcher(pool, **kwargs)


def test_dispatcher_needs_a_pool() -> None:
    with pytest.raises(TypeError, match=r"pool must be a chronos\.WorkerPool"):
        Dispatcher("pool")  # type: ignore[arg-type]


def test_wrong_states() -> None:
    with WorkerPool(max_workers=1) as pool:
        dispatcher = Dispatcher(pool)
        dispatcher.start()
        with pytest.raises(RuntimeError, match="started once"):
            dispatcher.start()
        with pytest.raises(TypeError, match="pass arguments to Job"):
            dispatcher.submit(Job(print), 1)
        with pytest.raises(TypeError, match="fn must be callable"):
            dispatcher.submit(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not iterable"):
            dispatcher.dispatch(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"job must be a chronos\.Job"):
            pool.submit_job("job")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="fn must be callable"):
            pool.submit(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="grace must be >= 0"):
            pool.shutdown(grace=-1)
        dispatcher.close()
        with pytest.raises(RuntimeError, match="closed Dispatcher"):
            dispatcher.submit(print)
        with pytest.raises(RuntimeError, match="closed Dispatcher"):
            dispatcher.dispatch([])
        dispatcher.join(5)
    with pytest.raises(RuntimeError, match="outside a job"):
        current_job()
