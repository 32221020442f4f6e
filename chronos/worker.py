"""Worker threads: one :class:`WorkerSlot` per thread, and the loop each thread runs.

A slot publishes the attempt its thread is running (``current``), which the pool's timer
watches for deadlines and shutdown reads to cancel running jobs.  When an attempt is ended
by someone other than its thread (timeout, immediate shutdown), the thread is *abandoned*:
it is no longer one of the pool's ``max_workers`` and its late result is dropped.  When it
finally returns it rejoins the pool if the pool is short of workers, and exits otherwise.

A worker holds its pool weakly while it waits for a job (as ThreadPoolExecutor's do), so a
pool that its program dropped without ``shutdown()`` is collected, and its idle workers,
woken by the pool's finalizer, exit.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import TYPE_CHECKING, Any

from chronos import context
from chronos.attempts import run as run_attempt
from chronos.errors import JobInterrupted

if TYPE_CHECKING:
    from chronos.job import Attempt, Job
    from chronos.pool import WorkerPool

__all__ = ["WorkerSlot", "current_pool"]

_local = threading.local()


def current_pool() -> WorkerPool | None:
    """The pool whose worker thread this is, or None on any other thread."""
    pool_ref: weakref.ref[WorkerPool] | None = getattr(_local, "pool_ref", None)
    return None if pool_ref is None else pool_ref()


class WorkerSlot:
    """One worker thread's place in the pool.

    Thread-safety: ``current`` is set by the slot's own thread (inside the job transition
    lock, when an attempt starts) and cleared by whichever thread ends the attempt first:
    under :attr:`lock` by another thread (timer, shutdown), inside the transition lock by
    the slot's own thread when its attempt succeeds, so that an attempt someone else ended
    is still published for them to find.  ``abandoned`` and ``interrupted`` change only
    under :attr:`lock`.
    """

    __slots__ = (
        "abandoned",
        "check_at",
        "current",
        "interrupted",
        "lock",
        "name",
        "running",
        "thread",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()  # guards the hand-over of current / abandoned
        self.current: tuple[Job[Any], Attempt] | None = None
        #: The attempt this thread runs, for chronos.current_job(); unlike ``current`` it
        #: stays set while an abandoned attempt runs on.  Written by the slot's own thread.
        self.running: tuple[Job[Any], Attempt] | None = None
        self.abandoned = False
        self.interrupted = False
        self.thread: threading.Thread | None = None
        #: When the timer looks at this slot next (inf: it does not): an attempt starting
        #: with a later deadline needs no timer entry of its own; that look re-arms for it.
        #: Written by the slot's thread when it arms an earlier deadline, and by the timer.
        self.check_at = math.inf

    def release(self) -> bool:
        """Clear ``current`` after the attempt returned; True if the slot was abandoned."""
        with self.lock:
            self.current = None
            return self.abandoned

    def __repr__(self) -> str:
        return f"<WorkerSlot {self.name} abandoned={self.abandoned}>"


def worker_main(pool_ref: weakref.ref[WorkerPool], slot: WorkerSlot) -> None:
    """The body of every worker thread."""
    pool = pool_ref()
    if pool is None:
        return
    _local.pool_ref = pool_ref
    context._bind_worker(slot, pool._clock)
    if not pool._run_initializer():
        pool._thread_exited(slot)
        return
    work_queue = pool._queue
    del pool  # waiting for a job, a worker does not keep its pool alive
    while True:
        try:
            job = work_queue.get()
            if job is None:  # stop sentinel: pass it on to the next worker
                work_queue.put_overflow(None)
                break
            pool = pool_ref()
            if pool is None:  # cannot happen: a queued job's route holds its pool
                break
            run_attempt(pool, job, slot)
            del job
            if (slot.abandoned or slot.interrupted) and not pool._rejoin(slot):
                return
            del pool
        except JobInterrupted:
            # An interrupt meant for a job that had already returned; the slot was abandoned.
            if not slot.interrupted:
                raise
            pool = pool_ref()
            if pool is not None:
                pool._rejoin(slot)
            return
        except BaseException as exc:  # chronos bug: log it, keep the thread
            pool = pool_ref()
            if pool is not None:
                pool._events.internal_error("worker", exc)
            pool = None
    pool = pool_ref()
    if pool is not None:
        pool._thread_exited(slot)
