"""PoolStatistics: a frozen snapshot of one pool, for metrics, an HTTP API and tests.

In trio's style: every field is documented, the snapshot is immutable, and reading one
takes no lock that a job's path needs for long (the job counts are the Stats snapshot,
taken under the ledger lock; the thread counts under the thread book's lock).
"""

from __future__ import annotations

from dataclasses import dataclass

from chronos.backends.base import BackendStatistics
from chronos.pool.core import PoolCore
from chronos.stats import StatsSnapshot

__all__ = ["PoolStatistics", "statistics_of"]


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of one :class:`chronos.WorkerPool`.

    Attributes:
        name: the pool's name.
        state: ``"running"``, ``"shutting down"`` (it admits nothing more; jobs in flight
            finish or are cancelled) or ``"shut down"`` (every job terminal, threads
            stopped).
        max_workers: the most threads that run jobs at once.
        workers: worker threads that belong to the pool now (running a job or idle).
        busy_workers: of those, how many run an attempt.
        abandoned_threads: threads left in a hung attempt (timed out or cancelled); they
            rejoin or exit when it returns.
        max_abandoned_threads: how many abandoned threads get a replacement.
        timer_entries: deadline looks the pool's timer holds.
        held_retries: retries held back for the thread of their timed-out attempt
            (``wait_for_abandoned``).
        backend: the queue's snapshot (ready and delayed jobs, blocked producers).
        jobs: the job counts and latencies (:class:`chronos.StatsSnapshot`).
    """

    name: str
    state: str
    max_workers: int
    workers: int
    busy_workers: int
    abandoned_threads: int
    max_abandoned_threads: int
    timer_entries: int
    held_retries: int
    backend: BackendStatistics
    jobs: StatsSnapshot


def statistics_of(core: PoolCore) -> PoolStatistics:
    """The snapshot of the pool that ``core`` is the insides of."""
    if core.finished.is_set():
        state = "shut down"
    elif core.ledger.closed:
        state = "shutting down"
    else:
        state = "running"
    threads = core.threads
    with threads.lock:
        active = list(threads.active)
        abandoned = len(threads.abandoned)
    with core.held_lock:
        held = len(core.held)
    return PoolStatistics(
        name=core.name,
        state=state,
        max_workers=threads.max_workers,
        workers=len(active),
        busy_workers=sum(1 for slot in active if slot.current is not None),
        abandoned_threads=abandoned,
        max_abandoned_threads=threads.max_abandoned,
        timer_entries=core.timer.pending(),
        held_retries=held,
        backend=core.backend.statistics(),
        jobs=core.stats.snapshot(),
    )
