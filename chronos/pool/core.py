"""The insides of one WorkerPool, shared by its threads: the engine room.

:class:`PoolCore` holds what the pool's worker threads, its timer callbacks, its Handoff
tasks and its producers (Dispatchers) work with: settings, the ledger, the backend, the
timer, the Handoff and the thread book.  ``WorkerPool`` is the public face over it; the
worker threads hold the core (never the WorkerPool), so a pool its program dropped is
collected, and its finalizer lets the threads go (see :meth:`PoolCore.collected`).  Every
job in flight holds its WorkerPool (its route, for retries), so that happens only once no
job is unfinished.

Producers reach a pool's core through :func:`chronos.pool.core_of`.

Thread-safety: the settings are read-only after construction; every collaborator documents
its own; :attr:`PoolCore.held_lock` guards :attr:`PoolCore.held` and the ``returned`` flag
of attempts; :attr:`PoolCore.books_lock` guards ``unfinished``, ``broken_reason`` and the
shutdown hooks.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import dataclass
from typing import Any

from chronos._ledger import WAITING_STATES, Ledger, detach_future, move
from chronos.backends.memory import MemoryBackend
from chronos.clock import Clock
from chronos.events import JobEvents
from chronos.job import Attempt, Job
from chronos.pool.handoff import Handoff
from chronos.pool.threads import ThreadBook, WorkerSlot
from chronos.retry import RetryPolicy
from chronos.stats import Stats
from chronos.status import JobStatus
from chronos.timer import Timer

__all__ = ["PoolCore", "PoolSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSettings:
    """A pool's validated settings (read-only after construction)."""

    max_workers: int
    max_abandoned: int
    queue_size: int
    timeout: float | None
    retry: RetryPolicy | None
    interrupt: bool
    wait_for_abandoned: bool
    exit_grace: float
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]


ShutdownHook = Callable[[], None]


class PoolCore:
    """The insides of one pool (see the module docstring).

    Args:
        name: the pool's name (threads are named after it).
        settings: the validated settings.
        clock: the pool's clock.
        events: where lifecycle events go.
        worker_main: the body of every worker thread, given this core and a slot.
    """

    def __init__(
        self,
        name: str,
        settings: PoolSettings,
        clock: Clock,
        events: JobEvents,
        worker_main: Callable[[PoolCore, WorkerSlot], None],
        on_due: Callable[[PoolCore, Job[Any]], None],
    ) -> None:
        self.name = name
        self.settings = settings
        self.timeout = settings.timeout  # read once per job: a plain attribute
        self.retry = settings.retry
        self.clock = clock
        self.now = clock.now  # bound once: read several times per job
        self.events = events
        self.stats = Stats()
        self.ledger = Ledger(self.stats, events)
        core_ref = weakref.ref(self)
        self.backend = MemoryBackend(
            settings.queue_size,
            clock=clock,
            on_due=lambda job: _due(core_ref, job, on_due),
            on_error=events.internal_error,
            name=name,
        )
        self.timer = Timer(clock, events.internal_error, f"{name}_timer")
        self.handoff = Handoff(f"{name}_handoff", events.internal_error)
        self.threads = ThreadBook(
            name,
            settings.max_workers,
            settings.max_abandoned,
            self.stats,
            lambda slot: worker_main(self, slot),
            lambda: self.backend.qsize() > 0,
            events.internal_error,
        )
        #: wait_for_abandoned: retries held back for the thread of their timed-out attempt.
        self.held_lock = threading.Lock()  # guards held and every Attempt.returned read
        self.held: dict[Attempt, Job[Any]] = {}
        self.books_lock = threading.Lock()  # guards the three fields below
        self.broken_reason: str | None = None
        self.unfinished: list[Job[Any]] = []
        self._shutdown_hooks: list[tuple[weakref.WeakMethod[ShutdownHook], ...]] = []
        #: Set once the WorkerPool was collected without shutdown(): the last job to end
        #: lets the threads go.
        self.orphaned = False
        #: Set in a child process made by os.fork(): the pool's threads stayed behind.
        self.forked = False
        # Shutdown (see chronos.pool.lifecycle): one thread at a time finishes it.
        self.finish_lock = threading.Lock()  # guards finisher, and the finishing itself
        self.finisher: threading.Thread | None = None
        self.finished = threading.Event()

    # -- the pool's own route (through WorkerPool.requeue) ------------------------------------

    def requeue(self, job: Job[Any]) -> None:
        """A retry's backoff ended: back into the queue (a Handoff thread calls it through
        the job's route, its WorkerPool)."""
        if move(job, JobStatus.RETRY_WAIT, JobStatus.QUEUED, self.now()):
            self.backend.put_nowait(job)
            self.threads.ensure_worker()

    # -- helpers that need no lock of the caller ---------------------------------------------------

    def start_handoff(self) -> None:
        """Start the Handoff before its first task (here, on a worker: never on the timer)."""
        if not self.handoff.started:
            self.handoff.start()

    def record_unfinished(self, job: Job[Any]) -> None:
        with self.books_lock:
            self.unfinished.append(job)

    def break_pool(self, reason: str) -> None:
        with self.books_lock:
            self.broken_reason = reason

    def run_initializer(self) -> bool:
        """Run the thread initializer on the calling worker; False if it raised (the pool
        is then broken and its waiting jobs failed)."""
        initializer = self.settings.initializer
        if initializer is None:
            return True
        try:
            initializer(*self.settings.initargs)
        except BaseException as exc:
            self.events.internal_error("pool.initializer", exc)
            self._initializer_failed()
            return False
        return True

    def _initializer_failed(self) -> None:
        # ThreadPoolExecutor's words.
        self.break_pool("A thread initializer failed, the thread pool is not usable anymore")
        error = BrokenThreadPool(self.broken_reason)
        for job in self.ledger.live_jobs():
            if move(job, WAITING_STATES, JobStatus.FAILED, self.now()):
                detach_future(job, None, error).set_exception(error)
        self.backend.wake_putters()

    # -- producers' shutdown hooks ----------------------------------------------------------------

    def add_shutdown_hooks(self, on_close: ShutdownHook, on_stop: ShutdownHook) -> None:
        """Have ``on_close()`` called when the pool starts shutting down (it admits nothing
        more) and ``on_stop()`` once every job is terminal.  Both must be bound methods; the
        pool holds them weakly (a producer that is gone is skipped).  A Dispatcher registers
        itself so: the pool knows no producer type."""
        hooks = (weakref.WeakMethod(on_close), weakref.WeakMethod(on_stop))
        with self.books_lock:
            self._shutdown_hooks = [h for h in self._shutdown_hooks if h[0]() is not None]
            self._shutdown_hooks.append(hooks)

    def run_shutdown_hooks(self, which: int) -> None:
        """Call every live producer's close hook (``which=0``) or stop hook (``1``)."""
        with self.books_lock:
            hooks = [h[which]() for h in self._shutdown_hooks]
        for hook in hooks:
            if hook is not None:
                try:
                    hook()
                except BaseException as exc:
                    self.events.internal_error("pool.shutdown_hook", exc)

    # -- a pool dropped without shutdown ------------------------------------------------------

    def collected(self) -> None:
        """The WorkerPool was garbage collected without ``shutdown()`` (so no job is in
        flight: each holds its pool): let the idle workers go; the last one to leave stops
        the helpers.  A finalizer runs wherever the collection happens, inside any lock: this
        takes none."""
        self.orphaned = True
        self.backend.stop_takers()

    def stop_helpers(self, timeout: float) -> None:
        """Stop the timer, the Handoff and the backend's delay timer."""
        self.timer.stop(timeout)
        self.handoff.stop(timeout)
        self.backend.stop_timer(timeout)

    def helper_threads(self) -> list[threading.Thread | None]:
        """The timer's, the Handoff's, the backend's and a background shutdown's threads."""
        return [self.timer.thread, *self.handoff.threads(), *self.backend.threads(), self.finisher]


def _due(
    core_ref: weakref.ref[PoolCore],
    job: Job[Any],
    on_due: Callable[[PoolCore, Job[Any]], None],
) -> None:
    core = core_ref()
    if core is not None:
        on_due(core, job)
