"""The pool's bounded job queue: a C ``SimpleQueue`` with a bound that only costs when full.

``queue.Queue`` takes two Python-level Condition round trips per item; a job queue is the
hottest path of the pool, so this one keeps the items in a ``queue.SimpleQueue`` (C) and
enforces the bound beside it: producers look at the size, and only a producer that finds the
queue full takes the Condition and waits; a consumer takes it only when a producer waits.

- :meth:`JobQueue.put_job` blocks while the queue is full (backpressure) but gives up as
  soon as the job it carries is finished (cancelled meanwhile) or a stop Event is set:
  whoever sets them calls :meth:`JobQueue.wake_putters`, so no producer hangs at shutdown.
  Producers racing past the size check together may overshoot the bound by one job each.
- :meth:`JobQueue.put_overflow` never blocks: for jobs that are already admitted and must
  not wait behind the bound (retries due, jobs submitted by the pool's own workers, which
  would otherwise deadlock a full pool) and for the workers' stop sentinel.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

from chronos.job import Job

__all__ = ["JobQueue"]


class JobQueue:
    """FIFO of jobs for the workers; ``None`` is the stop sentinel.

    Args:
        maxsize: the bound (0: unbounded).

    Thread-safety: every method may be called from any thread.
    """

    __slots__ = ("_items", "_not_full", "_waiting", "bound", "items", "maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        #: The items, for the pool's submit, whose fast path is inline: while
        #: ``items.qsize() < bound`` it may ``items.put(job)`` directly.
        self.items: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._items = self.items
        #: ``maxsize``, or a bound never reached when the queue is unbounded.
        self.bound = maxsize if maxsize > 0 else sys.maxsize
        self._not_full = threading.Condition()  # guards _waiting; producers wait on it
        self._waiting = 0  # producers blocked in put_job

    def qsize(self) -> int:
        """How many items are queued (approximate while others put and get)."""
        return self._items.qsize()

    def get(self) -> Job[Any] | None:
        """Remove and return the next item, waiting for one."""
        item = self._items.get()
        if self._waiting:
            with self._not_full:
                self._not_full.notify()
        return item

    def put_job(self, job: Job[Any], stop: threading.Event | None = None) -> bool:
        """Append ``job``, waiting while the queue is full.

        Returns:
            True if the job was put; False if it finished or ``stop`` was set meanwhile.
        """
        maxsize = self.maxsize
        if maxsize <= 0 or self._items.qsize() < maxsize:
            self._items.put(job)
            return True
        with self._not_full:
            self._waiting += 1
            try:
                while self._items.qsize() >= maxsize:
                    if job._status.is_terminal or (stop is not None and stop.is_set()):
                        return False
                    self._not_full.wait()
            finally:
                self._waiting -= 1
            self._items.put(job)
        return True

    def put_overflow(self, item: Job[Any] | None) -> None:
        """Append ``item`` even if the queue is full; never blocks."""
        self._items.put(item)

    def wake_putters(self) -> None:
        """Make every blocked :meth:`put_job` look again at its job and stop Event."""
        with self._not_full:
            self._not_full.notify_all()
