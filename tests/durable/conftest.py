"""Fixtures of the durable backend contract: a factory per backend, and a settable clock.

The conformance suite (``test_conformance.py``) takes ``backend`` (or ``open_backend``, to
open several clients on one store) and ``store_clock``, and nothing else, so every backend
in :data:`FACTORIES` passes the same tests unchanged.  To add one: write a factory that
opens it on a fresh, private store named ``store.name`` (a file in ``store.directory``, a
Redis key prefix, a PostgreSQL schema) whose time is ``store.clock`` (a server-clock
backend takes the test clock as a test-only offset added to its server's time), and that
calls ``pytest.skip`` when its server is not reachable.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chronos.backends.durable import DurableBackend
from chronos.backends.sqlite import SQLiteBackend

#: Where every test clock starts (seconds since the epoch: 2023-11-14).
EPOCH = 1_700_000_000.0


class StoreClock:
    """Wall-clock seconds that move only when a test says so: the store's clock.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, start: float = EPOCH) -> None:
        self._lock = threading.Lock()  # guards _now
        self._now = start

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (>= 0)."""
        assert seconds >= 0
        with self._lock:
            self._now += seconds


@dataclass(frozen=True)
class Store:
    """A fresh, private store for one backend: its name, a directory and its clock."""

    directory: Path
    clock: StoreClock
    name: str = field(default_factory=lambda: uuid.uuid4().hex)


BackendFactory = Callable[[Store], DurableBackend]


def make_sqlite(store: Store) -> DurableBackend:
    return SQLiteBackend(store.directory / f"{store.name}.db", clock=store.clock)


#: Every backend the conformance suite runs on.
FACTORIES: dict[str, BackendFactory] = {"sqlite": make_sqlite}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> BackendFactory:
    """The factory of each backend in turn."""
    return FACTORIES[request.param]


@pytest.fixture
def store_clock() -> StoreClock:
    return StoreClock()


@pytest.fixture
def store(tmp_path: Path, store_clock: StoreClock) -> Store:
    return Store(tmp_path, store_clock)


@pytest.fixture
def open_backend(factory: BackendFactory, store: Store) -> Iterator[Callable[[], DurableBackend]]:
    """Opens clients of the test's store (each one a backend object of its own, as another
    process would have); closes them all at the end."""
    opened: list[DurableBackend] = []

    def open_() -> DurableBackend:
        backend = factory(store)
        opened.append(backend)
        return backend

    yield open_
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(open_backend: Callable[[], DurableBackend]) -> DurableBackend:
    """A backend on a fresh store, on the test's clock."""
    return open_backend()
