"""The loop every worker thread runs.

A worker holds its pool's core (never the WorkerPool itself, so a pool that its program
dropped without ``shutdown()`` is collected: see :meth:`chronos.pool.core.PoolCore.collected`)
and takes jobs from the backend until it finds the stop sentinel.
"""

from __future__ import annotations

import threading

from chronos import context
from chronos.errors import JobInterrupted
from chronos.pool.attempts import run as run_attempt
from chronos.pool.attempts import thread_returned
from chronos.pool.core import PoolCore
from chronos.pool.threads import WorkerSlot

__all__ = ["current_core", "worker_main"]

_local = threading.local()


def current_core() -> PoolCore | None:
    """The core of the pool whose worker this thread is, or None on any other thread."""
    core: PoolCore | None = getattr(_local, "core", None)
    return core


def worker_main(core: PoolCore, slot: WorkerSlot) -> None:
    """The body of every worker thread."""
    _local.core = core
    context.bind_worker(slot, core.clock)
    if not core.run_initializer():
        core.threads.exited(slot)
        return
    take = core.backend.take
    while True:
        try:
            job = take()
            if job is None:  # stop sentinel (passed on to the next worker by take)
                break
            run_attempt(core, job, slot)
            del job
            if (slot.abandoned or slot.interrupted) and not rejoin(core, slot):
                return
        except JobInterrupted:
            # An interrupt meant for a job that had already returned; the slot was abandoned.
            if not slot.interrupted:
                raise
            rejoin(core, slot)
            return
        except BaseException as exc:  # chronos bug: log it, keep the thread
            core.events.internal_error("worker", exc)
    core.threads.exited(slot)
    if core.orphaned:  # the pool was dropped without shutdown(): its helpers go too
        core.stop_helpers(0)


def rejoin(core: PoolCore, slot: WorkerSlot) -> bool:
    """A thread returned from an attempt that was taken from it (abandoned), or that it was
    sent ``JobInterrupted`` for: rejoin the pool (True) or exit (False)."""
    if slot.interrupted:
        # It leaves, maybe with its attempt still published (the interrupt may have landed
        # before the attempt was ended): clear it, or a timeout would abandon a thread that
        # is gone.  (slot.lock is never taken under the thread book's lock.)
        current = slot.current
        slot.release()
        if current is not None:
            thread_returned(core, current[1])  # a retry held for it may go
    return core.threads.rejoin(slot)
