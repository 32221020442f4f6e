"""Bad input gets an early, clear error that names the parameter: the whole public API.

Every public constructor and method of what ``chronos`` exports (and of ``chronos.testing``
and ``chronos.cli.report``) is called with wrong types, out-of-range values, and in wrong states.
Each case names the exception type and a message fragment: the parameter for a bad value,
what is wrong for a bad state.  The promise is an early ``TypeError`` or ``ValueError``
(``RuntimeError`` for a wrong state) raised before anything changed, never a hang, a silent
drop, or a confusing error from deep inside.

Conventions the cases follow, read from the code: a bool is refused wherever a number is
expected (``chronos/_validate.py``); ``inf`` is refused where it would mean "no limit", which
is spelt ``None`` (``timeout must be finite; pass None for no timeout``); the flags that
mirror ``ThreadPoolExecutor.shutdown`` (``wait``, ``cancel_futures``) take any truthy value,
as there.

Where chronos breaks the promise today the case stays: :data:`DEFECTS` says how, and marks it
``xfail(strict=True)``.  Once a defect is fixed its case passes, and strict xfail fails the
run until the entry is removed.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, TypeVar

import pytest
import tenacity

import chronos
import chronos.cli.report
import chronos.testing
from chronos import (
    SYSTEM_CLOCK,
    Dispatcher,
    GracefulShutdown,
    Job,
    JobStatus,
    JobTimeoutError,
    RetryPolicy,
    WorkerPool,
    current_job,
)
from tests.conftest import Gate, wait_until

#: The cases call the API with wrong types on purpose: through these aliases mypy lets them.
api: Any = chronos
TB: Any = chronos.TokenBucket
FC: Any = chronos.testing.FakeClock
AC: Any = chronos.AtomicCounter
summarize: Any = chronos.cli.report.summarize

T = TypeVar("T")
Errors = type[BaseException] | tuple[type[BaseException], ...]

NAN = math.nan
INF = math.inf
#: Finite, but beyond what ``threading`` can wait for (``threading.TIMEOUT_MAX``, about
#: 9.2e9 s on Linux): 317 years.
HUGE = 1e10

#: Every case chronos fails today, by "<matrix>: <case id>", and how it fails: such a case is
#: marked xfail(strict=True).  Empty: the ~75 this suite found are fixed (see the git log).
DEFECTS: dict[str, str] = {}
_used: set[str] = set()


def show(value: object) -> str:
    """A short, stable name for a value in a test id."""
    name = getattr(value, "__name__", None)
    if isinstance(name, str):
        return name
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text


def matrix(name: str, rows: list[tuple[Any, ...]]) -> list[Any]:
    """Parameters ``(call or kwargs, error, match)`` of a matrix, marked from DEFECTS.

    A row is ``(id, call, error, match)``, or ``(kwargs, error, match)`` named after the
    keyword arguments.
    """
    params = []
    for row in rows:
        values: list[Any]
        if isinstance(row[0], dict):
            ident = ",".join(f"{key}={show(value)}" for key, value in row[0].items())
            values = list(row)
        else:
            ident, *values = row
        key = f"{name}: {ident}"
        assert key not in _used, f"two cases are called {key}"
        _used.add(key)
        reason = DEFECTS.get(key)
        marks = (
            () if reason is None else (pytest.mark.xfail(strict=True, reason=f"defect: {reason}"),)
        )
        params.append(pytest.param(*values, id=ident, marks=marks))
    return params


def dispose(obj: object) -> None:
    """Undo what a call that should have raised built anyway (a defect's case)."""
    if isinstance(obj, Dispatcher):
        obj.stop()
    elif isinstance(obj, WorkerPool):
        # A pool with a garbage logger cannot even log its own shutdown.
        with contextlib.suppress(AttributeError):
            obj.shutdown()


def check(call: Callable[[], object], error: Errors, match: str) -> None:
    built: list[object] = []
    try:
        with pytest.raises(error, match=match):
            built.append(call())
    finally:
        for obj in built:
            dispose(obj)


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2)
    yield p
    p.shutdown(cancel_futures=True, grace=5.0)


@pytest.fixture
def dispatcher(pool: WorkerPool) -> Iterator[Dispatcher]:
    d = Dispatcher(pool).start()
    yield d
    d.stop()


# -- WorkerPool ------------------------------------------------------------------------------

POOL_ARGS = matrix(
    "WorkerPool",
    [
        ({"max_workers": 0}, ValueError, "max_workers must be greater than 0"),
        ({"max_workers": -3}, ValueError, "max_workers must be greater than 0"),
        ({"max_workers": 2.5}, TypeError, "max_workers must be an int, got float"),
        ({"max_workers": True}, TypeError, "max_workers must be an int, got bool"),
        ({"max_workers": "4"}, TypeError, "max_workers must be an int, got str"),
        ({"thread_name_prefix": 3}, TypeError, "thread_name_prefix must be a str, got int"),
        ({"initializer": 3}, TypeError, "initializer must be a callable"),
        ({"initializer": "print"}, TypeError, "initializer must be a callable"),
        ({"initargs": 5}, TypeError, "initargs"),
        ({"initargs": None}, TypeError, "initargs"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": -1.0}, ValueError, "timeout must be > 0"),
        ({"timeout": NAN}, ValueError, "timeout must be > 0"),
        ({"timeout": INF}, ValueError, "timeout must be finite; pass None"),
        ({"timeout": "1"}, TypeError, "timeout must be a number, got str"),
        ({"timeout": True}, TypeError, "timeout must be a number, got bool"),
        ({"retry": 3}, TypeError, "retry must be a RetryPolicy, got int"),
        ({"retry": RetryPolicy}, TypeError, "retry must be a RetryPolicy, got type"),
        ({"retry": {"max_attempts": 3}}, TypeError, "retry must be a RetryPolicy, got dict"),
        ({"queue_size": -1}, ValueError, "queue_size must be >= 0, got -1"),
        ({"queue_size": 1.5}, TypeError, "queue_size must be an int, got float"),
        ({"queue_size": None}, TypeError, "queue_size must be an int, got NoneType"),
        ({"queue_size": True}, TypeError, "queue_size must be an int, got bool"),
        ({"max_abandoned_threads": -1}, ValueError, "max_abandoned_threads must be >= 0"),
        ({"max_abandoned_threads": 1.0}, TypeError, "max_abandoned_threads must be an int"),
        ({"max_abandoned_threads": True}, TypeError, "max_abandoned_threads must be an int"),
        ({"interrupt_on_timeout": "no"}, TypeError, "interrupt_on_timeout"),
        ({"exit_grace": -1}, ValueError, "exit_grace must be >= 0"),
        ({"exit_grace": NAN}, ValueError, "exit_grace must be >= 0"),
        ({"exit_grace": "5"}, TypeError, "exit_grace must be a number, got str"),
        ({"exit_grace": None}, TypeError, "exit_grace must be a number, got NoneType"),
        ({"exit_grace": INF}, ValueError, "exit_grace"),
        ({"clock": 3}, TypeError, "clock"),
        ({"clock": chronos.testing.FakeClock}, TypeError, "clock"),
        ({"logger": 3}, TypeError, "logger"),
    ],
)


@pytest.mark.parametrize(("kwargs", "error", "match"), POOL_ARGS)
def test_worker_pool_rejects(kwargs: dict[str, Any], error: Errors, match: str) -> None:
    check(lambda: WorkerPool(**kwargs), error, match)


POOL_CALLS = matrix(
    "WorkerPool.method",
    [
        ("submit(None)", lambda p: p.submit(None), TypeError, "fn must be callable, got NoneType"),
        ("submit(3)", lambda p: p.submit(3), TypeError, "fn must be callable, got int"),
        ("submit_job('j')", lambda p: p.submit_job("j"), TypeError, r"must be a chronos\.Job"),
        ("submit_job(None)", lambda p: p.submit_job(None), TypeError, r"Job, got NoneType"),
        ("submit_job(abs)", lambda p: p.submit_job(abs), TypeError, r"must be a chronos\.Job"),
        ("map(3,[1])", lambda p: p.map(3, [1]), TypeError, "fn must be callable, got int"),
        ("map(abs,3)", lambda p: p.map(abs, 3), TypeError, "iterables"),
        ("map(timeout='1')", lambda p: p.map(abs, [1], timeout="1"), TypeError, "timeout"),
        ("map(timeout=nan)", lambda p: p.map(abs, [1], timeout=NAN), ValueError, "timeout"),
        ("shutdown(grace=-1)", lambda p: p.shutdown(grace=-1), ValueError, "grace must be >= 0"),
        ("shutdown(grace=nan)", lambda p: p.shutdown(grace=NAN), ValueError, "grace must be >="),
        ("shutdown(grace='1')", lambda p: p.shutdown(grace="1"), TypeError, "grace must be a n"),
        ("shutdown(grace=True)", lambda p: p.shutdown(grace=True), TypeError, "grace.*got bool"),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), POOL_CALLS)
def test_worker_pool_methods_reject(
    pool: WorkerPool, call: Callable[[WorkerPool], object], error: Errors, match: str
) -> None:
    check(lambda: call(pool), error, match)
    assert pool.submit(abs, -1).result(timeout=5) == 1  # refused early: the pool still runs


# -- Job -------------------------------------------------------------------------------------

JOB_CALLS = matrix(
    "Job",
    [
        ("fn=42", lambda: api.Job(42), TypeError, "fn must be callable, got int"),
        ("fn=None", lambda: api.Job(None), TypeError, "fn must be callable, got NoneType"),
        ("fn='print'", lambda: api.Job("print"), TypeError, "fn must be callable, got str"),
        ("args=5", lambda: api.Job(abs, 5), TypeError, "args must be a tuple, got int"),
        ("args=None", lambda: api.Job(abs, None), TypeError, "args must be a tuple, got None"),
        ("args='ab'", lambda: api.Job(abs, "ab"), TypeError, "args must be a tuple, got str"),
        ("args={}", lambda: api.Job(abs, {1: 2}), TypeError, "args must be a tuple, got dict"),
        ("kwargs=[1]", lambda: api.Job(abs, (), [1]), TypeError, "kwargs must be a mapping"),
        ("kwargs='a'", lambda: api.Job(abs, (), "a"), TypeError, "kwargs must be a mapping"),
        ("kwargs={1:2}", lambda: api.Job(abs, (), {1: 2}), TypeError, "kwargs"),
        ("name=1", lambda: api.Job(abs, name=1), TypeError, "name must be a str, got int"),
        ("name=b'x'", lambda: api.Job(abs, name=b"x"), TypeError, "name must be a str, got byt"),
        ("timeout=0", lambda: api.Job(abs, timeout=0), ValueError, "timeout must be > 0"),
        ("timeout=-1", lambda: api.Job(abs, timeout=-1), ValueError, "timeout must be > 0"),
        ("timeout=nan", lambda: api.Job(abs, timeout=NAN), ValueError, "timeout must be > 0"),
        ("timeout=inf", lambda: api.Job(abs, timeout=INF), ValueError, "timeout must be fini"),
        ("timeout='1'", lambda: api.Job(abs, timeout="1"), TypeError, "timeout.*got str"),
        ("timeout=True", lambda: api.Job(abs, timeout=True), TypeError, "timeout.*got bool"),
        ("retry='x'", lambda: api.Job(abs, retry="x"), TypeError, "retry must be a RetryPolicy"),
        ("retry=3", lambda: api.Job(abs, retry=3), TypeError, "retry must be a RetryPolicy"),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), JOB_CALLS)
def test_job_rejects(call: Callable[[], object], error: Errors, match: str) -> None:
    check(call, error, match)


# -- RetryPolicy -----------------------------------------------------------------------------

EXC = "must be an exception class or a tuple of them"

RETRY_ARGS = matrix(
    "RetryPolicy",
    [
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1, got 0"),
        ({"max_attempts": -1}, ValueError, "max_attempts must be >= 1"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts must be an int, got float"),
        ({"max_attempts": True}, TypeError, "max_attempts must be an int, got bool"),
        ({"max_attempts": "3"}, TypeError, "max_attempts must be an int, got str"),
        ({"max_attempts": None}, TypeError, "max_attempts must be an int, got NoneType"),
        ({"backoff": -1}, ValueError, "backoff must be >= 0"),
        ({"backoff": NAN}, ValueError, "backoff must be >= 0"),
        ({"backoff": "0.1"}, TypeError, "backoff must be a number, got str"),
        ({"backoff": True}, TypeError, "backoff must be a number, got bool"),
        ({"backoff": None}, TypeError, "backoff must be a number, got NoneType"),
        ({"backoff": INF}, ValueError, "backoff"),
        ({"max_backoff": -1}, ValueError, "max_backoff must be >= 0"),
        ({"max_backoff": NAN}, ValueError, "max_backoff must be >= 0"),
        ({"max_backoff": "1"}, TypeError, "max_backoff must be a number, got str"),
        ({"max_backoff": True}, TypeError, "max_backoff must be a number, got bool"),
        ({"backoff": 2, "max_backoff": 1}, ValueError, "max_backoff must be >= backoff"),
        ({"multiplier": 0.5}, ValueError, "multiplier must be >= 1"),
        ({"multiplier": NAN}, ValueError, "multiplier must be >= 1"),
        ({"multiplier": "2"}, TypeError, "multiplier must be a number, got str"),
        ({"multiplier": True}, TypeError, "multiplier must be a number, got bool"),
        ({"multiplier": None}, TypeError, "multiplier must be a number, got NoneType"),
        ({"multiplier": INF}, ValueError, "multiplier must be finite"),
        ({"max_backoff": INF}, ValueError, "max_backoff must be finite"),
        ({"deadline": 0}, ValueError, "deadline must be > 0"),
        ({"deadline": -1}, ValueError, "deadline must be > 0"),
        ({"deadline": NAN}, ValueError, "deadline must be > 0"),
        ({"deadline": "1"}, TypeError, "deadline must be a number, got str"),
        ({"deadline": True}, TypeError, "deadline must be a number, got bool"),
        ({"jitter": "no"}, TypeError, "jitter"),
        ({"retry_on": "ValueError"}, TypeError, f"retry_on {EXC}"),
        ({"retry_on": None}, TypeError, f"retry_on {EXC}"),
        ({"retry_on": [ValueError]}, TypeError, f"retry_on {EXC}"),
        ({"retry_on": (int,)}, TypeError, f"retry_on {EXC}"),
        ({"retry_on": ValueError()}, TypeError, f"retry_on {EXC}"),
        ({"never_retry_on": (int,)}, TypeError, f"never_retry_on {EXC}"),
        ({"never_retry_on": "x"}, TypeError, f"never_retry_on {EXC}"),
        ({"wait": 5}, TypeError, "wait must be a tenacity wait_base"),
        ({"wait": tenacity.stop_after_attempt(3)}, TypeError, "wait must be a tenacity wait_"),
        ({"stop": 5}, TypeError, "stop must be a tenacity stop_base"),
        ({"stop": tenacity.wait_fixed(1)}, TypeError, "stop must be a tenacity stop_base"),
        ({"retry": 5}, TypeError, "retry must be a tenacity retry_base"),
    ],
)


@pytest.mark.parametrize(("kwargs", "error", "match"), RETRY_ARGS)
def test_retry_policy_rejects(kwargs: dict[str, Any], error: Errors, match: str) -> None:
    check(lambda: RetryPolicy(**kwargs), error, match)


NEXT_DELAY_CALLS = matrix(
    "RetryPolicy.next_delay",
    [
        ("attempt_number='1'", lambda r: r.next_delay("1", OSError(), 0.0), TypeError, "attempt"),
        ("attempt_number=0", lambda r: r.next_delay(0, OSError(), 0.0), ValueError, "attempt"),
        ("error='boom'", lambda r: r.next_delay(1, "boom", 0.0), TypeError, "error"),
        ("elapsed='x'", lambda r: r.next_delay(1, OSError(), "x"), TypeError, "elapsed"),
        ("elapsed=nan", lambda r: r.next_delay(1, OSError(), NAN), ValueError, "elapsed"),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), NEXT_DELAY_CALLS)
def test_retry_policy_next_delay_rejects(
    call: Callable[[RetryPolicy], object], error: Errors, match: str
) -> None:
    policy = RetryPolicy(deadline=10.0)
    check(lambda: call(policy), error, match)


# -- Dispatcher ------------------------------------------------------------------------------

DISPATCHER_ARGS = matrix(
    "Dispatcher",
    [
        ({"interval": 0}, ValueError, "interval must be > 0"),
        ({"interval": -0.3}, ValueError, "interval must be > 0"),
        ({"interval": NAN}, ValueError, "interval must be > 0"),
        ({"interval": INF}, ValueError, "interval must be finite"),
        ({"interval": 1e-320}, ValueError, "interval must be finite and representable"),
        ({"interval": "1"}, TypeError, "interval must be a number, got str"),
        ({"interval": True}, TypeError, "interval must be a number, got bool"),
        ({"rate": 0}, ValueError, "rate must be > 0"),
        ({"rate": -1}, ValueError, "rate must be > 0"),
        ({"rate": NAN}, ValueError, "rate must be > 0"),
        ({"rate": INF}, ValueError, "rate must be finite"),
        ({"rate": "10"}, TypeError, "rate must be a number, got str"),
        ({"rate": True}, TypeError, "rate must be a number, got bool"),
        ({"rate": 10, "burst": 0}, ValueError, "burst must be >= 1"),
        ({"rate": 10, "burst": -1}, ValueError, "burst must be >= 1"),
        ({"rate": 10, "burst": 1.5}, TypeError, "burst must be an int, got float"),
        ({"rate": 10, "burst": True}, TypeError, "burst must be an int, got bool"),
        ({"rate": 10, "burst": "2"}, TypeError, "burst must be an int, got str"),
        ({"interval": 1, "rate": 1}, ValueError, "give interval or rate, not both"),
        ({"burst": 3}, ValueError, "burst goes with rate"),
        ({"interval": 1, "burst": 2}, ValueError, "burst goes with rate"),
        ({"clock": 3}, TypeError, "clock"),
        ({"name": 3}, TypeError, "name"),
    ],
)


@pytest.mark.parametrize(("kwargs", "error", "match"), DISPATCHER_ARGS)
def test_dispatcher_rejects(
    pool: WorkerPool, kwargs: dict[str, Any], error: Errors, match: str
) -> None:
    check(lambda: Dispatcher(pool, **kwargs), error, match)


@pytest.mark.parametrize(
    ("make", "got"),
    [(lambda: "pool", "str"), (lambda: None, "NoneType"), (ThreadPoolExecutor, "ThreadPool")],
    ids=["str", "None", "ThreadPoolExecutor"],
)
def test_dispatcher_needs_a_worker_pool(make: Callable[[], object], got: str) -> None:
    check(
        lambda: api.Dispatcher(make()), TypeError, rf"pool must be a chronos\.WorkerPool, got {got}"
    )


DISPATCHER_CALLS = matrix(
    "Dispatcher.method",
    [
        ("submit(3)", lambda d: d.submit(3), TypeError, "fn must be callable, got int"),
        ("submit(None)", lambda d: d.submit(None), TypeError, "fn must be callable, got NoneT"),
        ("submit(Job,1)", lambda d: d.submit(Job(abs), 1), TypeError, r"arguments to Job\(\.\."),
        ("submit(Job,x=1)", lambda d: d.submit(Job(abs), x=1), TypeError, r"not to submit\(\)"),
        ("dispatch(3)", lambda d: d.dispatch(3), TypeError, "jobs"),
        ("dispatch(None)", lambda d: d.dispatch(None), TypeError, "jobs"),
        ("join('1')", lambda d: d.join("1"), TypeError, "timeout"),
        ("join(nan)", lambda d: d.join(NAN), ValueError, "timeout"),
        ("stop('1')", lambda d: d.stop("1"), TypeError, "timeout"),
        ("stop(nan)", lambda d: d.stop(NAN), ValueError, "timeout"),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), DISPATCHER_CALLS)
def test_dispatcher_methods_reject(
    dispatcher: Dispatcher, call: Callable[[Dispatcher], object], error: Errors, match: str
) -> None:
    check(lambda: call(dispatcher), error, match)
    assert dispatcher.submit(abs, -1).result(timeout=5) == 1  # refused early: still open


def test_a_bad_item_of_a_dispatched_iterable_is_reported_in_source_errors(
    dispatcher: Dispatcher,
) -> None:
    """An iterable is consumed lazily, on the dispatcher's thread: a bad item cannot raise
    in dispatch(), so it is logged and kept in source_errors, never dropped silently."""
    twice = Job(abs, (-1,))
    dispatcher.dispatch([twice, twice, 3])  # type: ignore[list-item]
    dispatcher.close()
    assert dispatcher.join(timeout=5)
    assert twice.future.result(timeout=5) == 1
    first, second = dispatcher.source_errors
    assert isinstance(first, ValueError)
    assert "was already submitted; a Job can be submitted once" in str(first)
    assert isinstance(second, TypeError)
    assert "a dispatched item must be a chronos.Job or a callable, got 3" in str(second)


# -- GracefulShutdown ------------------------------------------------------------------------

SHUTDOWN_ARGS = matrix(
    "GracefulShutdown",
    [
        ({"grace": -1}, ValueError, "grace must be >= 0"),
        ({"grace": NAN}, ValueError, "grace must be >= 0"),
        ({"grace": "5"}, TypeError, "grace must be a number, got str"),
        ({"grace": True}, TypeError, "grace must be a number, got bool"),
        ({"grace": None}, TypeError, "grace must be a number, got NoneType"),
        ({"signals": 3}, TypeError, "signals"),
        ({"signals": [999]}, ValueError, "signals"),
        ({"signals": ["SIGINT"]}, TypeError, "signals"),
        ({"signals": [signal.SIGKILL]}, ValueError, "signals"),
    ],
)


@pytest.mark.parametrize(("kwargs", "error", "match"), SHUTDOWN_ARGS)
def test_graceful_shutdown_rejects(
    pool: WorkerPool, kwargs: dict[str, Any], error: Errors, match: str
) -> None:
    check(lambda: GracefulShutdown(pool, **kwargs), error, match)


SHUTDOWN_TARGETS = matrix(
    "GracefulShutdown.targets",
    [
        ("pool='pool'", lambda p: api.GracefulShutdown("p"), TypeError, r"pool must be a chronos"),
        ("pool=None", lambda p: api.GracefulShutdown(None), TypeError, r"WorkerPool, got NoneTy"),
        ("dispatchers='d'", lambda p: api.GracefulShutdown(p, "d"), TypeError, "dispatchers must"),
        ("dispatchers=pool", lambda p: api.GracefulShutdown(p, p), TypeError, "got WorkerPool"),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), SHUTDOWN_TARGETS)
def test_graceful_shutdown_needs_a_pool_and_dispatchers(
    pool: WorkerPool, call: Callable[[WorkerPool], object], error: Errors, match: str
) -> None:
    check(lambda: call(pool), error, match)


# -- TokenBucket, FakeClock, AtomicCounter, Stats ----------------------------------------------

BLOCK_CALLS = matrix(
    "block",
    [
        ("TokenBucket(rate=0)", lambda: TB(0, start=0), ValueError, "rate must be > 0"),
        ("TokenBucket(rate=-1)", lambda: TB(-1, start=0), ValueError, "rate must be > 0"),
        ("TokenBucket(rate=nan)", lambda: TB(NAN, start=0), ValueError, "rate must be > 0"),
        ("TokenBucket(rate=inf)", lambda: TB(INF, start=0), ValueError, "rate must be finite"),
        ("TokenBucket(rate='1')", lambda: TB("1", start=0), TypeError, "rate.*number, got str"),
        ("TokenBucket(rate=True)", lambda: TB(True, start=0), TypeError, "rate.*got bool"),
        ("TokenBucket(rate=None)", lambda: TB(None, start=0), TypeError, "rate.*got NoneType"),
        ("TokenBucket(burst=0)", lambda: TB(1, 0, start=0), ValueError, "burst must be >= 1"),
        ("TokenBucket(burst=1.5)", lambda: TB(1, 1.5, start=0), TypeError, "burst.*got float"),
        ("TokenBucket(burst=True)", lambda: TB(1, True, start=0), TypeError, "burst.*got bool"),
        ("TokenBucket(start='x')", lambda: TB(1, start="x"), TypeError, "start"),
        ("TokenBucket(start=None)", lambda: TB(1, start=None), TypeError, "start"),
        ("TokenBucket(start=nan)", lambda: TB(1, start=NAN), ValueError, "start"),
        ("every(0)", lambda: TB.every(0, start=0), ValueError, "interval must be > 0"),
        ("every(-1)", lambda: TB.every(-1, start=0), ValueError, "interval must be > 0"),
        ("every(nan)", lambda: TB.every(NAN, start=0), ValueError, "interval must be > 0"),
        ("every(inf)", lambda: TB.every(INF, start=0), ValueError, "interval must be finite"),
        ("every(1e-320)", lambda: TB.every(1e-320, start=0), ValueError, "and representable"),
        ("every('1')", lambda: TB.every("1", start=0), TypeError, "interval.*number, got str"),
        ("every(True)", lambda: TB.every(True, start=0), TypeError, "interval.*got bool"),
        ("try_acquire('x')", lambda: TB(1, start=0).try_acquire("x"), TypeError, "now"),
        ("try_acquire(nan)", lambda: TB(1, start=0).try_acquire(NAN), ValueError, "now"),
        ("FakeClock('x')", lambda: FC("x"), TypeError, "start"),
        ("FakeClock(None)", lambda: FC(None), TypeError, "start"),
        ("FakeClock(nan)", lambda: FC(NAN), ValueError, "start"),
        ("FakeClock(max_real_wait=-1)", lambda: FC(max_real_wait=-1), ValueError, "max_real"),
        ("FakeClock(max_real_wait='x')", lambda: FC(max_real_wait="x"), TypeError, "max_real"),
        ("FakeClock.advance(-1)", lambda: FC().advance(-1), ValueError, "seconds must be >= 0"),
        ("FakeClock.advance('1')", lambda: FC().advance("1"), TypeError, "seconds"),
        ("FakeClock.advance(None)", lambda: FC().advance(None), TypeError, "seconds"),
        ("FakeClock.advance(nan)", lambda: FC().advance(NAN), ValueError, "seconds"),
        ("FakeClock.set(nan)", lambda: FC().set(NAN), ValueError, "now"),
        ("FakeClock.set('x')", lambda: FC().set("x"), TypeError, "now"),
        (
            "FakeClock.wait_for_waiters('1')",
            lambda: FC().wait_for_waiters("1", 0.01),
            TypeError,
            "count",
        ),
        (
            "FakeClock.wait_for_waiters(timeout='x')",
            lambda: FC().wait_for_waiters(1, "x"),
            TypeError,
            "timeout",
        ),
        ("AtomicCounter('x')", lambda: AC("x"), TypeError, "value"),
        ("AtomicCounter(1.5)", lambda: AC(1.5), TypeError, "value"),
        ("AtomicCounter.increment('x')", lambda: AC().increment("x"), TypeError, "amount"),
        ("AtomicCounter.increment(1.5)", lambda: AC().increment(1.5), TypeError, "amount"),
        ("AtomicCounter.decrement('x')", lambda: AC().decrement("x"), TypeError, "amount"),
        ("Stats.count('bogus')", lambda: api.Stats().count("bogus"), ValueError, "status"),
        ("Stats.count(3)", lambda: api.Stats().count(3), TypeError, "status"),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), BLOCK_CALLS)
def test_building_blocks_reject(call: Callable[[], object], error: Errors, match: str) -> None:
    check(call, error, match)


# -- chronos.cli.report ------------------------------------------------------------------------


@pytest.fixture
def finished_pool() -> WorkerPool:
    with WorkerPool(1) as p:
        p.submit(abs, -1).result(timeout=5)
    return p


def unsuccessful_report(pool: WorkerPool) -> Any:
    return summarize(pool, [Job(abs)], wall_time=1.0)  # a job never submitted is listed


REPORT_CALLS = matrix(
    "report",
    [
        ("summarize('pool')", lambda p: summarize("pool", wall_time=1.0), TypeError, "pool"),
        ("summarize(jobs=[3])", lambda p: summarize(p, [3], wall_time=1.0), TypeError, "jobs"),
        ("summarize(jobs=3)", lambda p: summarize(p, 3, wall_time=1.0), TypeError, "jobs"),
        ("summarize(wall_time='1')", lambda p: summarize(p, wall_time="1"), TypeError, "wall_t"),
        ("summarize(wall_time=-1)", lambda p: summarize(p, wall_time=-1), ValueError, "wall_t"),
        ("summarize(wall_time=nan)", lambda p: summarize(p, wall_time=NAN), ValueError, "wall_t"),
        (
            "summarize(dispatcher='d')",
            lambda p: summarize(p, wall_time=1.0, dispatcher="d"),
            TypeError,
            "dispatcher",
        ),
        (
            "summarize(meter='m')",
            lambda p: summarize(p, wall_time=1.0, meter="m"),
            TypeError,
            "meter",
        ),
        ("summarize()", lambda p: summarize(p), TypeError, "required keyword-only.*'wall_time'"),
        (
            "RunReport.format(max_listed=-1)",
            lambda p: unsuccessful_report(p).format(max_listed=-1),
            ValueError,
            "max_listed",
        ),
        (
            "RunReport.format(max_listed='x')",
            lambda p: unsuccessful_report(p).format(max_listed="x"),
            TypeError,
            "max_listed",
        ),
        ("DispatchMeter(clock=3)", lambda p: api.cli.report.DispatchMeter(3), TypeError, "clock"),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), REPORT_CALLS)
def test_report_rejects(
    finished_pool: WorkerPool, call: Callable[[WorkerPool], object], error: Errors, match: str
) -> None:
    check(lambda: call(finished_pool), error, match)


# -- JobContext ------------------------------------------------------------------------------


def in_a_job(pool: WorkerPool, body: Callable[[], object]) -> object:
    """``body()`` run as a job: what it returns or raises."""
    return pool.submit(body).result(timeout=5)


CONTEXT_CALLS = matrix(
    "JobContext",
    [
        ("JobContext(3,4,5)", lambda p: api.JobContext(3, 4, 5), TypeError, "job"),
        (
            "wait('1')",
            lambda p: in_a_job(p, lambda: api.current_job().wait("1")),
            TypeError,
            "timeout",
        ),
        (
            "wait(nan)",
            lambda p: in_a_job(p, lambda: current_job().wait(NAN)),
            ValueError,
            "timeout",
        ),
    ],
)


@pytest.mark.parametrize(("call", "error", "match"), CONTEXT_CALLS)
def test_job_context_rejects(
    pool: WorkerPool, call: Callable[[WorkerPool], object], error: Errors, match: str
) -> None:
    check(lambda: call(pool), error, match)


# -- wrong states ----------------------------------------------------------------------------


class Env:
    """Pools and dispatchers for a wrong-state case; all of them are shut down at the end."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.pools: list[WorkerPool] = []
        self.dispatchers: list[Dispatcher] = []
        self.pool = self.new_pool()

    def new_pool(self, **kwargs: Any) -> WorkerPool:
        pool = WorkerPool(2, **kwargs)
        self.pools.append(pool)
        return pool

    def dispatcher(self, pool: WorkerPool | None = None, *, start: bool = True) -> Dispatcher:
        d = Dispatcher(pool or self.pool)
        self.dispatchers.append(d)
        return d.start() if start else d

    def shut(self) -> WorkerPool:
        self.pool.shutdown()
        return self.pool

    def close(self) -> None:
        self.gate.open()
        for d in self.dispatchers:
            d.stop()
        for pool in self.pools:
            pool.shutdown(cancel_futures=True, grace=5.0)


@pytest.fixture
def env(gate: Gate) -> Iterator[Env]:
    e = Env(gate)
    yield e
    e.close()


def terminate_then_submit(env: Env) -> object:
    env.pool.terminate()
    return env.pool.submit(abs, -1)


def submit_while_shutting_down(env: Env) -> object:
    env.pool.submit(env.gate.wait)
    assert env.gate.entered(1)
    env.pool.shutdown(wait=False)
    return env.pool.submit(abs, -1)


def submit_a_finished_job_again(env: Env) -> object:
    job = Job(abs, (-1,))
    env.pool.submit_job(job).result(timeout=5)
    return env.pool.submit_job(job)


def submit_a_running_job_again(env: Env) -> object:
    job = Job(env.gate.wait)
    env.pool.submit_job(job)
    assert env.gate.entered(1)
    return env.pool.submit_job(job)


def submit_a_job_to_a_second_pool(env: Env) -> object:
    job = Job(abs, (-1,))
    env.pool.submit_job(job)
    return env.new_pool().submit_job(job)


def submit_a_dispatched_job_to_the_pool(env: Env) -> object:
    job = Job(abs, (-1,))
    env.dispatcher().submit(job)
    return env.pool.submit_job(job)


def dispatch_a_submitted_job(env: Env) -> object:
    job = Job(abs, (-1,))
    env.pool.submit_job(job)
    return env.dispatcher().submit(job)


def submit_to_a_broken_pool(env: Env) -> object:
    def fail() -> None:
        raise OSError("initializer failed on purpose")

    pool = env.new_pool(initializer=fail)
    with pytest.raises(BrokenThreadPool):
        pool.submit(abs, -1).result(timeout=5)
    return pool.submit(abs, -1)


def closed(env: Env, how: str) -> Dispatcher:
    d = env.dispatcher()
    if how == "close":
        d.close()
    elif how == "stop":
        d.stop()
    else:
        env.pool.shutdown()
    return d


def enter_graceful_shutdown_off_the_main_thread(env: Env) -> object:
    guard = GracefulShutdown(env.pool)
    raised: list[BaseException] = []

    def enter() -> None:
        try:
            with guard:
                pass
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=enter, name="not-main")
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    if raised:
        raise raised[0]
    return guard


def set_a_fake_clock_back(env: Env) -> object:
    clock = chronos.testing.FakeClock(10.0)
    clock.set(9.0)
    return clock


AFTER_SHUTDOWN = "cannot schedule new futures after shutdown"
TWICE = "was already submitted; a Job can be submitted once"
CLOSED_SUBMIT = "cannot submit to a closed Dispatcher"
CLOSED_DISPATCH = "cannot dispatch to a closed Dispatcher"

STATES = matrix(
    "state",
    [
        (
            "pool.submit-after-shutdown",
            lambda e: e.shut().submit(abs),
            RuntimeError,
            AFTER_SHUTDOWN,
        ),
        (
            "pool.submit_job-after-shutdown",
            lambda e: e.shut().submit_job(Job(abs)),
            RuntimeError,
            AFTER_SHUTDOWN,
        ),
        ("pool.map-after-shutdown", lambda e: e.shut().map(abs, [1]), RuntimeError, AFTER_SHUTDOWN),
        ("pool.submit-after-terminate", terminate_then_submit, RuntimeError, AFTER_SHUTDOWN),
        ("pool.submit-shutting-down", submit_while_shutting_down, RuntimeError, AFTER_SHUTDOWN),
        ("pool.submit_job-finished-job", submit_a_finished_job_again, ValueError, TWICE),
        ("pool.submit_job-running-job", submit_a_running_job_again, ValueError, TWICE),
        ("pool.submit_job-to-a-second-pool", submit_a_job_to_a_second_pool, ValueError, TWICE),
        ("pool.submit_job-dispatched-job", submit_a_dispatched_job_to_the_pool, ValueError, TWICE),
        ("dispatcher.submit-submitted-job", dispatch_a_submitted_job, ValueError, TWICE),
        ("pool.submit-broken", submit_to_a_broken_pool, BrokenThreadPool, "initializer failed"),
        ("dispatcher.start-twice", lambda e: e.dispatcher().start(), RuntimeError, "started once"),
        (
            "dispatcher.submit-after-close",
            lambda e: closed(e, "close").submit(abs),
            RuntimeError,
            CLOSED_SUBMIT,
        ),
        (
            "dispatcher.dispatch-after-close",
            lambda e: closed(e, "close").dispatch([print]),
            RuntimeError,
            CLOSED_DISPATCH,
        ),
        (
            "dispatcher.submit-after-stop",
            lambda e: closed(e, "stop").submit(abs),
            RuntimeError,
            CLOSED_SUBMIT,
        ),
        (
            "dispatcher.dispatch-after-stop",
            lambda e: closed(e, "stop").dispatch([print]),
            RuntimeError,
            CLOSED_DISPATCH,
        ),
        (
            "dispatcher.submit-after-pool-shutdown",
            lambda e: closed(e, "pool").submit(abs),
            RuntimeError,
            CLOSED_SUBMIT,
        ),
        (
            "dispatcher.dispatch-after-pool-shutdown",
            lambda e: closed(e, "pool").dispatch([print]),
            RuntimeError,
            CLOSED_DISPATCH,
        ),
        (
            "new-dispatcher-of-a-shut-pool.submit",
            lambda e: e.dispatcher(e.shut(), start=False).submit(abs),
            RuntimeError,
            CLOSED_SUBMIT,
        ),
        (
            "new-dispatcher-of-a-shut-pool.dispatch",
            lambda e: e.dispatcher(e.shut(), start=False).dispatch([print]),
            RuntimeError,
            CLOSED_DISPATCH,
        ),
        (
            "GracefulShutdown-off-the-main-thread",
            enter_graceful_shutdown_off_the_main_thread,
            RuntimeError,
            "must be entered from the main thread",
        ),
        ("current_job()-outside-a-job", lambda e: current_job(), RuntimeError, "outside a job"),
        ("FakeClock.set-backwards", set_a_fake_clock_back, ValueError, "cannot go back"),
    ],
)


@pytest.mark.parametrize(("scenario", "error", "match"), STATES)
def test_wrong_state_is_refused(
    env: Env, scenario: Callable[[Env], object], error: Errors, match: str
) -> None:
    check(lambda: scenario(env), error, match)


def test_repeated_lifecycle_calls_are_harmless(env: Env) -> None:
    """What may be called twice (shutdown, terminate, close, stop, join) never raises."""
    assert env.pool.submit(abs, -1).result(timeout=5) == 1
    unstarted = env.dispatcher(start=False)
    assert unstarted.join(timeout=0)
    assert unstarted.stop() == []
    d = env.dispatcher()
    d.close()
    d.close()
    assert d.join(timeout=5)
    assert d.stop() == []
    assert d.stop() == []
    env.pool.shutdown()
    env.pool.shutdown()
    env.pool.shutdown(wait=False, cancel_futures=True)
    env.pool.terminate()
    assert env.pool.unfinished_jobs() == []
    assert env.pool.threads() == []


def test_graceful_shutdown_refuses_a_second_enter(pool: WorkerPool) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    guard = GracefulShutdown(pool)
    guard.__enter__()
    first_pipe, first_watcher = guard._pipe, guard._watcher
    try:
        with pytest.raises(RuntimeError, match="entered"):
            guard.__enter__()
    finally:
        guard.__exit__(None, None, None)
        # Undo what a second enter did, so that the defect leaks nothing into other tests.
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if first_watcher is not None and first_watcher.is_alive():
            assert first_pipe is not None
            os.write(first_pipe[1], b"x")  # it sees guard._exiting and returns
            first_watcher.join(timeout=5)
            for fd in first_pipe:
                os.close(fd)


# -- numbers too large to wait for ---------------------------------------------------------
#
# A finite number of seconds beyond threading.TIMEOUT_MAX passes every check, and
# Event.wait() on it raises OverflowError in the thread that waits: the pool's timer thread
# (then no timeout and no retry of that pool would fire again), a dispatcher's thread (its job
# in hand would stay PENDING for ever), or the thread that finishes a shutdown.  Found by this
# suite; SystemClock.wait_until and WorkerPool.shutdown now cap such waits at TIMEOUT_MAX
# (292 years).  Refusing such numbers early with a ValueError naming them passes too.


class FarWaitClock:
    """The system clock, telling the test which thread starts a wait of 1e9 s or more."""

    def __init__(self) -> None:
        self.far_wait = threading.Event()
        self.waiter: threading.Thread | None = None

    def now(self) -> float:
        return SYSTEM_CLOCK.now()

    def wait_until(self, wakeup: threading.Event, deadline: float | None) -> bool:
        if deadline is not None and deadline - self.now() >= 1e9:
            self.waiter = threading.current_thread()
            self.far_wait.set()
        return SYSTEM_CLOCK.wait_until(wakeup, deadline)

    def survived(self) -> bool:
        """The thread that started the far wait is alive a second later.

        With the defect it dies of the OverflowError at once.  (The second is spent only once
        that is fixed: this check can go then.)
        """
        assert self.far_wait.wait(timeout=5), "nothing waited for the far deadline"
        assert self.waiter is not None
        self.waiter.join(timeout=1.0)
        return self.waiter.is_alive()


def unless_refused(name: str, make: Callable[[], T]) -> T | None:
    """``make()``, or None if it refused a huge value with a ValueError naming ``name``:
    refusing it early fixes the defect too."""
    try:
        return make()
    except ValueError as exc:
        if name not in str(exc):
            raise
        return None


@pytest.mark.parametrize("where", ["pool", "job"])
def test_a_huge_timeout_is_refused_or_harmless(where: str, gate: Gate) -> None:
    assert threading.TIMEOUT_MAX < HUGE
    clock = FarWaitClock()
    timeout = HUGE if where == "pool" else None
    pool = unless_refused("timeout", lambda: WorkerPool(2, timeout=timeout, clock=clock))
    long = unless_refused("timeout", lambda: Job(gate.wait, timeout=HUGE))
    if pool is None or long is None:
        return
    try:
        pool.submit_job(long)
        assert clock.survived(), "the pool's timer thread died"
        short = pool.submit_job(Job(gate.wait, timeout=0.05))
        assert isinstance(short.exception(timeout=5), JobTimeoutError)
    finally:
        gate.open()
        pool.shutdown()


def test_a_huge_retry_backoff_is_refused_or_harmless(gate: Gate) -> None:
    clock = FarWaitClock()
    # Without jitter the first retry waits HUGE seconds exactly, not a random part of them.
    policy = unless_refused(
        "backoff", lambda: RetryPolicy(backoff=HUGE, max_backoff=HUGE, jitter=False)
    )
    if policy is None:
        return
    pool = WorkerPool(2, clock=clock)
    try:
        failing = pool.submit_job(Job(int, ("not a number",), retry=policy))
        assert clock.survived(), "the pool's timer thread died"
        assert failing.job.status is JobStatus.RETRY_WAIT
        short = pool.submit_job(Job(gate.wait, timeout=0.05))
        assert isinstance(short.exception(timeout=5), JobTimeoutError)
    finally:
        gate.open()
        pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize(
    "limit", [{"interval": HUGE}, {"rate": 1 / HUGE}], ids=["interval", "rate"]
)
def test_a_huge_dispatch_interval_is_refused_or_harmless(limit: dict[str, Any]) -> None:
    clock = FarWaitClock()
    pool = WorkerPool(1)
    try:
        dispatcher = unless_refused(
            next(iter(limit)), lambda: Dispatcher(pool, clock=clock, **limit)
        )
        if dispatcher is None:
            return
        dispatcher.start()
        assert dispatcher.submit(abs, -1).result(timeout=5) == 1
        second = dispatcher.submit(abs, -2)  # waits for its token, HUGE seconds away
        assert clock.survived(), "the dispatcher's thread died"
        assert dispatcher.stop(timeout=5) == [second.job]
        assert second.cancelled()
    finally:
        pool.shutdown(cancel_futures=True)  # the job the dead thread held is still PENDING


@pytest.mark.parametrize("grace", [INF, HUGE], ids=["inf", "1e10"])
def test_a_huge_shutdown_grace_is_refused_or_waits(grace: float, gate: Gate) -> None:
    pool = WorkerPool(1)
    running = pool.submit(gate.wait, "done")
    try:
        assert gate.entered(1)

        def shut_down() -> bool:
            pool.shutdown(wait=False, grace=grace)
            return True

        if unless_refused("grace", shut_down) is None:
            gate.open()
            assert pool.submit(abs, -1).result(timeout=5) == 1  # refused before it closed
            return
        finishers = [t for t in pool.threads() if t.name.endswith("_shutdown")]
        assert len(finishers) == 1, "the shutdown thread died at once"
        finishers[0].join(timeout=1.0)
        assert finishers[0].is_alive(), "the shutdown thread died"
        gate.open()
        assert running.result(timeout=5) == "done"
        wait_until(lambda: not pool.threads())
    finally:
        gate.open()
        pool.shutdown()


def test_job_context_wait_inf_is_refused_or_waits_until_cancelled() -> None:
    outcome: list[object] = []
    started = threading.Event()

    def job() -> None:
        started.set()
        try:
            outcome.append(current_job().wait(INF))
        except BaseException as exc:
            outcome.append(exc)
            raise

    pool = WorkerPool(1)
    try:
        pool.submit(job)
        assert started.wait(timeout=5)
    finally:
        pool.terminate()  # cancels the attempt: a wait that works returns True
    wait_until(lambda: bool(outcome))
    [result] = outcome
    assert result is True or (isinstance(result, ValueError) and "timeout" in str(result))


def test_every_defect_names_a_case() -> None:
    """No stale entry in DEFECTS: each one marks a case of a matrix."""
    assert set(DEFECTS) <= _used, set(DEFECTS) - _used
