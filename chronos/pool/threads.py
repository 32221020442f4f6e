"""The thread book of a pool: its worker slots, which threads run, which were abandoned.

A :class:`WorkerSlot` is one worker thread's place in the pool.  It publishes the attempt its
thread is running (``current``), which the pool's timer watches for deadlines and shutdown
reads to cancel running jobs.  When an attempt is ended by someone other than its thread
(timeout, immediate shutdown), the thread is *abandoned*: it is no longer one of the pool's
``max_workers`` and its late result is dropped.  When it finally returns it rejoins the pool
if the pool is short of workers, and exits otherwise.

:class:`ThreadBook` keeps the two sets (active, abandoned) and starts threads.  Threads are
never started while its lock is held: a slot is reserved under the lock (so that the bounds
hold: never more than ``max_workers`` active, never more than ``max_workers +
max_abandoned`` in all), and its thread started after it is released.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chronos.stats import Stats

if TYPE_CHECKING:
    from chronos.job import Attempt, Job

__all__ = ["ThreadBook", "WorkerSlot"]


class WorkerSlot:
    """One worker thread's place in the pool.

    Thread-safety: ``current`` is set by the slot's own thread (inside the ledger lock, when
    an attempt starts) and cleared by whichever thread ends the attempt first: under
    :attr:`lock` by another thread (timer, shutdown), inside the ledger lock by the slot's
    own thread when its attempt succeeds, so that an attempt someone else ended is still
    published for them to find.  ``abandoned`` and ``interrupted`` change only under
    :attr:`lock`.
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


class ThreadBook:
    """The worker threads of one pool.

    Args:
        name: prefix of the threads' names.
        max_workers: how many threads run jobs at most.
        max_abandoned: how many abandoned threads get a replacement.
        stats: the pool's Stats (the abandoned-thread counters).
        target: what each new thread runs, given its slot.
        has_queued: whether jobs wait for a thread (a replacement is started only then).
        on_error: told of a thread that failed to start.

    Thread-safety: every method may be called from any thread; :attr:`lock` guards the sets
    and ``stopping``, and is never held while a thread starts or is joined.
    """

    def __init__(
        self,
        name: str,
        max_workers: int,
        max_abandoned: int,
        stats: Stats,
        target: Callable[[WorkerSlot], None],
        has_queued: Callable[[], bool],
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self.name = name
        self.max_workers = max_workers
        self.max_abandoned = max_abandoned
        self._stats = stats
        self._target = target
        self._has_queued = has_queued
        self._on_error = on_error
        self.lock = threading.Lock()  # guards the three fields below
        self.active: set[WorkerSlot] = set()
        self.abandoned: set[WorkerSlot] = set()
        #: Set once shutdown stops the threads: every job is terminal, so no thread is
        #: started or rejoins after it, and :meth:`stop` joins them all.
        self.stopping = False
        self._numbers = itertools.count()

    # -- starting ---------------------------------------------------------------------------------

    def ensure_worker(self) -> None:
        """One more thread per call until ``max_workers`` run: a plain length test on the
        hot path (ThreadPoolExecutor pays a Semaphore round trip per job).  The test is
        inlined before the call in ``WorkerPool.submit`` and ``Dispatcher._push``."""
        if len(self.active) >= self.max_workers:
            return
        with self.lock:
            if self.stopping:
                return
            active = len(self.active)
            slot = None
            if active < self.max_workers and (
                active + len(self.abandoned) < self.max_workers + self.max_abandoned
            ):
                slot = self._reserve()
        if slot is not None:
            self._start(slot)

    def _reserve(self) -> WorkerSlot:  # caller holds lock
        slot = WorkerSlot(f"{self.name}_{next(self._numbers)}")
        slot.thread = threading.Thread(
            target=self._target, args=(slot,), name=slot.name, daemon=True
        )
        self.active.add(slot)
        return slot

    def _start(self, slot: WorkerSlot) -> None:
        """Start the thread of a slot reserved by :meth:`_reserve` (no lock held)."""
        assert slot.thread is not None
        try:
            slot.thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            with self.lock:
                self.active.discard(slot)
            if "interpreter shutdown" not in str(exc):  # expected late in an exit (3.12.0-2):
                self._on_error("pool.spawn", exc)  # the running threads go on

    # -- abandoning and rejoining -----------------------------------------------------------------

    def mark_abandoned(self, slot: WorkerSlot) -> None:
        """Move ``slot`` from the active set to the abandoned one, and count it."""
        with self.lock:
            self.active.discard(slot)
            self.abandoned.add(slot)
            self._stats.abandoned_threads.set(len(self.abandoned))
            self._stats.abandoned_threads_total.increment()

    def replace_abandoned(self, slot: WorkerSlot, replace: bool) -> bool:
        """After :meth:`mark_abandoned`: maybe start a thread in ``slot``'s place.

        Only when jobs wait in the queue: otherwise the next job to come starts one (every
        way in, ``submit``, a retry, a Dispatcher, starts a thread while the pool has fewer
        than ``max_workers``), so a burst of timeouts costs no burst of thread starts.

        Returns:
            True if a replacement thread was started.
        """
        with self.lock:
            if slot in self.active:  # it returned and rejoined meanwhile: leave it be
                return False
            # A submit() between mark_abandoned and here may have refilled the pool already
            # (it saw a free place): replace only what is missing, so that threads never
            # exceed max_workers + max_abandoned.  A draining shutdown still needs workers
            # for the queued jobs: only a stopping one starts none.
            if (
                not replace
                or self.stopping
                or len(self.abandoned) > self.max_abandoned
                or len(self.active) >= self.max_workers
                or not self._has_queued()
            ):
                return False
            fresh = self._reserve()
        self._start(fresh)
        return True

    def rejoin(self, slot: WorkerSlot) -> bool:
        """A thread returned from an attempt that was taken from it (abandoned), or that it
        was sent ``JobInterrupted`` for: rejoin the pool (True) or exit (False).  The caller
        has cleared an interrupted slot's published attempt."""
        fresh = None
        with self.lock:
            # Idempotent, and recomputed from the set: an interrupt may land in this very
            # block (it is the interrupted thread's), and bring it back here to finish.
            self.abandoned.discard(slot)
            self._stats.abandoned_threads.set(len(self.abandoned))
            if slot.interrupted:
                # The interrupt meant for its job may still land in this thread: it leaves,
                # and a fresh thread takes its place if the pool is short of one (it may
                # have no worker left at all when max_abandoned_threads gave it none).
                self.active.discard(slot)
                if not self.stopping and len(self.active) < self.max_workers:
                    fresh = self._reserve()
            elif slot in self.active:
                return True
            # While a draining shutdown waits for queued jobs the thread is still needed:
            # only once shutdown stops the threads (every job terminal) is it sent away.
            elif self.stopping or len(self.active) >= self.max_workers:
                return False
            else:
                slot.abandoned = False
                self.active.add(slot)
                return True
        if fresh is not None:
            self._start(fresh)
        return False

    def exited(self, slot: WorkerSlot) -> None:
        """``slot``'s thread is about to exit."""
        with self.lock:
            self.active.discard(slot)

    # -- looking and stopping ---------------------------------------------------------------------

    def active_slots(self) -> list[WorkerSlot]:
        with self.lock:
            return list(self.active)

    def all_slots(self) -> list[WorkerSlot]:
        """Active and abandoned slots."""
        with self.lock:
            return [*self.active, *self.abandoned]

    def begin_stop(self) -> list[WorkerSlot]:
        """From here no thread starts or rejoins; returns the active slots."""
        with self.lock:
            self.stopping = True
            return list(self.active)

    def join(self, timeout: float) -> None:
        """Join every active thread, each for up to ``timeout`` seconds (after the caller
        put the stop sentinel); one that does not exit is reported."""
        for slot in self.active_slots():
            thread = slot.thread
            # (A thread reserved but not started yet is started by its reserver right after;
            # it finds the stop sentinel at once.)
            if thread is None or thread is threading.current_thread() or thread.ident is None:
                continue
            thread.join(timeout)
            if thread.is_alive():
                self._on_error("pool.shutdown", RuntimeError(f"worker {slot.name} did not exit"))
