"""The Backend contract: the one way jobs enter and leave a pool.

Every producer (``WorkerPool.submit``, a :class:`chronos.Dispatcher`, a retry after its
backoff) *puts* a job, with an optional not-before time; workers *take* one, or *claim* up
to their free slots.  The in-memory backend (:mod:`chronos.backends.memory`) is the
default and the trivial case of the contract; durable backends (SQLite, Redis, PostgreSQL)
implement the same methods over a store that outlives the process.

The contract has two halves:

- **The queue** (every backend, every job): :meth:`Backend.put` (bounded: it waits while
  the backend is full, giving up when its job ends or a stop Event is set),
  :meth:`Backend.put_nowait` (never waits: admitted work that must not queue behind the
  bound), :meth:`Backend.take` and :meth:`Backend.claim`, :meth:`Backend.room`,
  :meth:`Backend.wake_putters`, :meth:`Backend.close` and :meth:`Backend.statistics`.
- **The lease** (what a claimer on another machine needs): each claim carries a fencing
  token; :meth:`Backend.heartbeat` extends held claims and says which were lost,
  :meth:`Backend.finish` applies an outcome only for the live ``(job, token)`` and answers
  :class:`FinishResult`, :meth:`Backend.release` hands back claimed jobs that never
  started (the drain), :meth:`Backend.recover` returns expired claims and promotes due
  delayed jobs.  In memory the claimer and the queue share one process and the pool's
  ledger fences every attempt, so a lease can only be lost by a crash that takes the whole
  queue with it: the memory backend implements the lease half trivially (heartbeats never
  lose, finishes apply once), and the durable ones for real.

A *delayed* put (``not_before``) is held by the backend, never by the producer: in memory on
the backend's own timer, durably in a scheduled state.  When it comes due, the memory
backend hands the job to its ``on_due`` callback (the pool sends it back through the route
it came by, so that a Dispatcher's retries pass its rate limit again), or makes it ready.

Thread-safety: every method of a backend may be called from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar, runtime_checkable

__all__ = ["Backend", "BackendStatistics", "Claim", "FinishResult"]

J = TypeVar("J")


class FinishResult(StrEnum):
    """What a :meth:`Backend.finish` did."""

    #: The outcome was recorded: the token was the live one.
    APPLIED = "applied"
    #: The same token was already finished (a replayed call): counts as a success.
    DUPLICATE = "duplicate"
    #: The claim was lost (its lease expired and the job went to someone else): the outcome
    #: was dropped, and counted.
    FENCED = "fenced"


@dataclass(frozen=True, slots=True)
class Claim(Generic[J]):
    """One claimed job and the fencing token of its claim."""

    job: J
    token: int


@dataclass(frozen=True, slots=True)
class BackendStatistics:
    """A snapshot of one backend (trio's ``statistics()`` style): immutable, and read at one
    moment, so that metrics and an HTTP API never reach into a backend.

    Attributes:
        kind: the backend's kind (``"memory"``, ``"sqlite"``...).
        ready: jobs that a worker may take now.
        delayed: jobs held until their not-before time.
        claimed: jobs claimed through :meth:`Backend.claim` and not finished or released.
        waiting_producers: producers blocked in :meth:`Backend.put` on a full backend.
        maxsize: the bound of ready jobs (0: none).
        closed: :meth:`Backend.close` was called.
        applied, duplicates, fenced: finishes answered so, since the backend was made.
    """

    kind: str
    ready: int
    delayed: int
    claimed: int
    waiting_producers: int
    maxsize: int
    closed: bool
    applied: int = 0
    duplicates: int = 0
    fenced: int = 0


@runtime_checkable
class Backend(Protocol[J]):
    """Where a pool's jobs wait.  See the module docstring for the contract."""

    def put(
        self, job: J, *, not_before: float | None = None, stop: threading.Event | None = None
    ) -> bool:
        """Add ``job``; ready at once, or held until the clock reaches ``not_before``.

        Waits while the backend is full (backpressure; a delayed put never waits), but
        gives up as soon as the job is finished (cancelled meanwhile) or ``stop`` is set:
        whoever sets them calls :meth:`wake_putters`.

        Returns:
            True if the job was put; False if it gave up (or the backend is closed).
        """
        ...

    def put_nowait(self, job: J) -> None:
        """Add ``job`` ready at once, past the bound; never waits (work already admitted
        that must not queue behind it: retries, jobs submitted by the pool's own workers)."""
        ...

    def take(self) -> J | None:
        """Remove and return the next ready job, waiting for one; None once closed (the
        claim of one job by a worker of this process: no token, no lease)."""
        ...

    def claim(self, limit: int, timeout: float | None = None) -> list[Claim[J]]:
        """Claim up to ``limit`` ready jobs (a claimer's free slots), each with a fencing
        token; wait up to ``timeout`` seconds (None: no limit) for the first.  Returns []
        if none came or the backend is closed."""
        ...

    def heartbeat(self, claims: Sequence[Claim[J]]) -> list[Claim[J]]:
        """Extend the leases of ``claims`` in one call; return those that were lost."""
        ...

    def finish(self, claim: Claim[J]) -> FinishResult:
        """Acknowledge the end of ``claim`` (the terminal write), fenced by its token."""
        ...

    def release(self, claims: Sequence[Claim[J]]) -> None:
        """Hand back claimed jobs that never started (a draining claimer): ready again."""
        ...

    def recover(self) -> int:
        """Return expired claims to ready and promote due delayed jobs; how many moved."""
        ...

    def room(self) -> int:
        """How many more ready jobs fit before :meth:`put` waits (approximate)."""
        ...

    def wake_putters(self) -> None:
        """Make every blocked :meth:`put` look again at its job and its stop Event."""
        ...

    def close(self) -> None:
        """Wake every taker: :meth:`take` returns None, :meth:`claim` [] from now on, once
        what is ready is gone; delayed jobs are dropped.  Idempotent."""
        ...

    def statistics(self) -> BackendStatistics:
        """A snapshot of the backend's counts."""
        ...
