"""Shared fixtures: no leaked threads, structlog reset, a fake clock, gates for jobs."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import structlog

from chronos.testing import FakeClock

#: How long (real seconds) a test's threads get to exit after it ends.
THREAD_EXIT_GRACE = 5.0
#: Real seconds a soak test gets beyond ``--soak-seconds`` before pytest-timeout stops it.
SOAK_TIMEOUT_MARGIN = 120.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=60.0,
        help="how long (real seconds) `pytest -m soak` runs the chaos mix (default: 60)",
    )


#: How much longer a test may take when the suite runs under a tracer (``coverage run``
#: makes the CPU-bound tests two to three times slower).
TRACED_TIMEOUT_FACTOR = 3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests run only when ``-m`` names them (``pytest -m soak``), never in a plain run
    (CI); when they run, their timeout follows ``--soak-seconds``.  Under a tracer (coverage)
    every test's own timeout is :data:`TRACED_TIMEOUT_FACTOR` times longer."""
    if sys.gettrace() is not None:
        for item in items:
            marker = item.get_closest_marker("timeout")
            if marker is not None and marker.args:
                longer = pytest.mark.timeout(marker.args[0] * TRACED_TIMEOUT_FACTOR)
                item.add_marker(longer, append=False)
    asked = "soak" in (config.option.markexpr or "")
    seconds: float = config.getoption("--soak-seconds")
    skip = pytest.mark.skip(reason="soak test: run it with `pytest -m soak --soak-seconds N`")
    for item in items:
        if item.get_closest_marker("soak") is None:
            continue
        if asked:
            item.add_marker(pytest.mark.timeout(seconds + SOAK_TIMEOUT_MARGIN))
        else:
            item.add_marker(skip)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (every millisecond) until it holds; fail after ``timeout`` s.

    For states that nothing signals (a job's status between two threads' steps); anything
    that can be waited on (an Event, a Future) is waited on instead.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running.

    Tests that hang jobs on purpose release them (see ``gate``) before they end, so even
    abandoned threads are gone by the time this looks.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_EXIT_GRACE
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.01)
    pytest.fail(f"test leaked threads: {sorted(t.name for t in leaked)}")


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    """Every test starts and ends with structlog unconfigured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


class Gate:
    """A job body that blocks until the test opens the gate; counts who entered.

    ``gate.wait`` is the job; ``gate.entered`` waits (bounded) for n jobs to be inside.
    Opening it at teardown releases hung jobs so no thread outlives the test.
    """

    def __init__(self) -> None:
        self._open = threading.Event()
        self._cond = threading.Condition()
        self.inside = 0

    def wait(self, result: object = None) -> object:
        with self._cond:
            self.inside += 1
            self._cond.notify_all()
        self._open.wait(30)
        return result

    def entered(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.inside >= count, timeout)

    def open(self) -> None:
        self._open.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.open()
