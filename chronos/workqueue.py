"""The pool's bounded job queue: a ``queue.Queue`` with two extra ways in.

- :meth:`JobQueue.put_job` blocks while the queue is full (backpressure) but gives up as
  soon as the job it carries is finished (cancelled meanwhile) or a stop Event is set:
  whoever sets them calls :meth:`JobQueue.wake_putters`, so no producer hangs at shutdown.
- :meth:`JobQueue.put_overflow` never blocks: for jobs that are already admitted and must
  not wait behind the bound (retries due, jobs submitted by the pool's own workers, which
  would otherwise deadlock a full pool) and for the workers' stop sentinels.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from chronos.job import Job

__all__ = ["JobQueue"]


class JobQueue(queue.Queue[Job[Any] | None]):
    """FIFO of jobs for the workers; ``None`` is the stop sentinel.

    Thread-safety: as ``queue.Queue``; every method may be called from any thread.
    """

    def put_job(self, job: Job[Any], stop: threading.Event | None = None) -> bool:
        """Append ``job``, waiting while the queue is full.

        Returns:
            True if the job was put; False if it finished or ``stop`` was set meanwhile.
        """
        with self.not_full:
            while 0 < self.maxsize <= self._qsize():
                if job._status.is_terminal or (stop is not None and stop.is_set()):
                    return False
                self.not_full.wait()
            self._put(job)
            self.unfinished_tasks += 1
            self.not_empty.notify()
        return True

    def put_overflow(self, item: Job[Any] | None) -> None:
        """Append ``item`` even if the queue is full; never blocks."""
        with self.not_empty:
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def wake_putters(self) -> None:
        """Make every blocked :meth:`put_job` look again at its job and stop Event."""
        with self.not_full:
            self.not_full.notify_all()
