"""WorkerPool: a ``concurrent.futures.Executor`` with timeouts, retries, stats and a clean exit.

With no timeout and no retry policy it behaves like ``ThreadPoolExecutor``: same
constructor, ``submit``/``map``/``shutdown``, Futures that work with ``wait`` and
``as_completed``, ``RuntimeError`` after shutdown, ``BrokenThreadPool`` when an initializer
fails.  The differences are on purpose:

- worker threads are daemon threads and at interpreter exit running jobs get a bounded grace
  period (``exit_grace``), so a hung job never blocks exit;
- the queue is bounded (``queue_size``): ``submit`` blocks while it is full, except when
  called from one of the pool's own workers, which never blocks (no self-deadlock);
- every job reaches exactly one terminal state, counted in :attr:`WorkerPool.stats`.

It is a ``ThreadPoolExecutor`` subclass in name only (none of that class's code or state is
used), so that APIs that insist on one accept it: ``asyncio``'s
``loop.set_default_executor(pool)`` (and so ``asyncio.to_thread``), for one.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, ParamSpec, TypeVar

from chronos._ledger import admit, cancel_waiting
from chronos._validate import check_bool, check_clock, check_count, check_logger, check_number
from chronos.clock import SYSTEM_CLOCK, Clock, join_timeout
from chronos.events import JobEvents, default_logger
from chronos.hooks import Listener
from chronos.job import Job, JobFuture, check_timeout
from chronos.pool.attempts import retry_due
from chronos.pool.core import PoolCore, PoolSettings
from chronos.pool.lifecycle import orphaned, register, shut_down
from chronos.pool.statistics import PoolStatistics, statistics_of
from chronos.pool.worker import current_core, worker_main
from chronos.retry import RetryPolicy
from chronos.status import JobStatus

__all__ = ["DEFAULT_QUEUE_SIZE", "WorkerPool", "core_of"]

P = ParamSpec("P")
T = TypeVar("T")

#: Default bound of a pool's queue.
DEFAULT_QUEUE_SIZE = 10_000

_pool_numbers = itertools.count()
_QUEUED = JobStatus.QUEUED


def core_of(pool: WorkerPool) -> PoolCore:
    """The insides of ``pool``, for chronos's own producers (the Dispatcher, durable
    workers): the one door into a pool that its public API does not show."""
    return pool._core  # noqa: SLF001 -- the documented door: producers work with the core


class WorkerPool(ThreadPoolExecutor):
    """A pool of worker threads running jobs with per-job timeouts and retries.

    Args:
        max_workers: worker threads; default ``min(32, cpu_count + 4)`` as ThreadPoolExecutor.
        thread_name_prefix: prefix of worker thread names.
        initializer: called with ``initargs`` at the start of every worker thread; if it
            raises, the pool is broken (``BrokenThreadPool``), as in ThreadPoolExecutor.
        initargs: arguments for ``initializer``, a tuple (or list).
        timeout: seconds each attempt may run (None: no limit); a job's own overrides it.
        retry: the default :class:`RetryPolicy` (None: one attempt); a job's own overrides it.
        queue_size: bound of the job queue (0: unbounded).
        max_abandoned_threads: how many hung threads (abandoned by a timeout) get a
            replacement thread; beyond it the pool runs short-handed until they return.
            Default: ``max_workers``.  Threads never exceed ``max_workers + this``.
        interrupt_on_timeout: a bool: also raise :class:`chronos.JobInterrupted` inside an
            attempt that overran (best effort: see :mod:`chronos.interrupt`).
        wait_for_abandoned: a bool: the retry of an attempt that timed out does not start
            until that attempt's thread has returned, so a job that ignores its timeout
            never runs twice at once (the retry waits as long as the hung attempt runs).
        exit_grace: at interpreter exit, seconds left for queued and running jobs to finish
            before they are cancelled; finite, >= 0.
        clock: time source, an instance (tests pass a :class:`chronos.testing.FakeClock`).
        logger: a structlog logger for the lifecycle events (see :mod:`chronos.events`):
            anything with ``debug``, ``info``, ``warning`` and ``error`` methods.
        listeners: :class:`chronos.Listener` objects whose hooks are called for every
            lifecycle event (see :mod:`chronos.hooks`), besides the logger.

    Raises:
        TypeError, ValueError: for a bad argument, naming it.

    Thread-safety: every public method may be called from any thread.  Job state is guarded
    by the ledger lock (``stats.lock``); the set of worker threads by the thread book's
    lock.  No thread is started while either is held.  The pool owns (through its core,
    :mod:`chronos.pool.core`) its worker threads, its timer thread (deadlines; it runs no
    user code), its backend (the queue, and the delays of retries on a timer of its own)
    and its Handoff threads (what follows a timeout: the retry policy, logging,
    done-callbacks, replacement threads).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str | None = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_abandoned_threads: int | None = None,
        interrupt_on_timeout: bool = False,
        wait_for_abandoned: bool = False,
        exit_grace: float = 5.0,
        clock: Clock | None = None,
        logger: Any = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        elif check_count("max_workers", max_workers, -sys.maxsize) <= 0:
            raise ValueError("max_workers must be greater than 0")  # ThreadPoolExecutor's words
        if thread_name_prefix is None:
            thread_name_prefix = ""
        if not isinstance(thread_name_prefix, str):
            raise TypeError(
                f"thread_name_prefix must be a str, got {type(thread_name_prefix).__name__}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not isinstance(initargs, tuple | list):
            raise TypeError(f"initargs must be a tuple, got {type(initargs).__name__}")
        timeout = check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        queue_size = check_count("queue_size", queue_size, 0)
        if max_abandoned_threads is None:
            max_abandoned_threads = max_workers
        settings = PoolSettings(
            max_workers=max_workers,
            max_abandoned=check_count("max_abandoned_threads", max_abandoned_threads, 0),
            queue_size=queue_size,
            timeout=timeout,
            retry=retry,
            interrupt=check_bool("interrupt_on_timeout", interrupt_on_timeout),
            wait_for_abandoned=check_bool("wait_for_abandoned", wait_for_abandoned),
            # Finite: exit must be bounded (an unlimited wait at exit is no grace at all).
            exit_grace=check_number(
                "exit_grace", exit_grace, minimum=0.0, inclusive=True, finite=True
            ),
            initializer=initializer,
            initargs=tuple(initargs),
        )
        clock = SYSTEM_CLOCK if clock is None else check_clock("clock", clock)
        if logger is not None:
            check_logger("logger", logger)
        events = JobEvents(logger if logger is not None else default_logger(), listeners)
        name = thread_name_prefix or f"chronos-pool-{next(_pool_numbers)}"
        self._core = core = PoolCore(name, settings, clock, events, worker_main, retry_due)
        self.stats = core.stats
        # Hot-path shortcuts, bound once (submit reads them for every job).
        self._ledger = core.ledger
        self._now = clock.now
        self._items = core.backend.items
        self._bound = core.backend.bound
        self._active = core.threads.active
        self._max_workers = max_workers
        register(core)
        # Dropped without shutdown() (no job in flight then: each holds its pool): the idle
        # threads go.
        weakref.finalize(self, orphaned, core)

    # -- public API ---------------------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def timeout(self) -> float | None:
        """The default per-attempt timeout."""
        return self._core.timeout

    @property
    def retry(self) -> RetryPolicy | None:
        """The default retry policy."""
        return self._core.retry

    @property
    def clock(self) -> Clock:
        return self._core.clock

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The listeners given (the logger's own listener not included)."""
        return self._core.events.listeners

    def add_listener(self, listener: Listener) -> None:
        """Have ``listener``'s hooks called from now on (see :mod:`chronos.hooks`)."""
        self._core.events.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``'s hooks."""
        self._core.events.remove_listener(listener)

    def requeue(self, job: Job[Any]) -> None:
        """Put ``job``, submitted here, back in the queue once its retry backoff ended.

        The pool is the route of the jobs submitted to it (``chronos._ledger.Route``): the
        pool's own Handoff thread calls this; it is no API for users.  Each job in flight
        holding its pool this way keeps a pool with unfinished jobs from being collected.
        """
        self._core.requeue(job)

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the pool: its threads, its queue, its timer and its job
        counts (see :class:`chronos.pool.statistics.PoolStatistics`)."""
        return statistics_of(self._core)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> JobFuture[T]:
        """Run ``fn(*args, **kwargs)`` as a job with the pool's timeout and retry policy.

        Blocks while the queue is full (unless called from one of the pool's workers).

        Raises:
            TypeError: ``fn`` is not callable.
            RuntimeError: the pool is shut down.
            BrokenThreadPool: a worker's initializer failed.
        """
        # submit_job(Job(...)) with its steps inline: this is the hot path.  The backend's
        # put, inline too: MemoryBackend.has_room() is its original.
        core = self._core
        if core.broken_reason is not None:
            raise BrokenThreadPool(core.broken_reason)
        future = Job.future_of_call(fn, args, kwargs)
        job = future.job
        admit(job, self._ledger, _QUEUED, self._now(), self)
        items = self._items
        if items.qsize() < self._bound:
            items.put(job)
        else:
            self._put_when_full(job)
        if len(self._active) < self._max_workers:
            core.threads.ensure_worker()
        return future

    def submit_job(self, job: Job[T]) -> JobFuture[T]:
        """Submit a :class:`Job` (with its own name, timeout or retry policy).

        Raises:
            TypeError: ``job`` is not a Job.
            ValueError: the job was submitted before.
            RuntimeError: the pool is shut down.
            BrokenThreadPool: a worker's initializer failed.
        """
        # (Its steps are written out inline in submit(), for speed: keep the two in step.)
        core = self._core
        if core.broken_reason is not None:
            raise BrokenThreadPool(core.broken_reason)
        admit(job, self._ledger, _QUEUED, self._now(), self)
        future = job.future  # (before it is queued: a finished job's is a copy)
        if core.backend.has_room():
            core.backend.put_nowait(job)
        else:
            self._put_when_full(job)
        core.threads.ensure_worker()
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``Executor.map``, with its arguments checked before any job is submitted.

        A negative ``timeout`` is taken as 0 (no time left), as ThreadPoolExecutor does.

        Raises:
            TypeError, ValueError: ``fn`` is not callable, an iterable is not iterable, or
                ``timeout`` is not None nor a finite number.
            RuntimeError: the pool is shut down.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if timeout is not None:
            timeout = check_number("timeout", timeout, minimum=-math.inf, inclusive=True)
            if math.isinf(timeout):
                raise ValueError("timeout must be finite; pass None for no timeout")
            timeout = max(0.0, timeout)
        iterators = []
        for iterable in iterables:
            try:
                iterators.append(iter(iterable))
            except TypeError:
                raise TypeError(
                    f"map() iterables must be iterable, got {type(iterable).__name__}"
                ) from None
        return super().map(fn, *iterators, timeout=timeout, chunksize=chunksize)

    def _put_when_full(self, job: Job[Any]) -> None:
        """Queue an admitted job past a full queue: wait for room, unless on a worker.

        If the wait is interrupted (Ctrl+C raises KeyboardInterrupt in it), the job is
        cancelled before the exception goes on: admitted, it must end, and a job left QUEUED
        outside the queue would keep a draining shutdown waiting for ever.
        """
        backend = self._core.backend
        if current_core() is self._core:
            backend.put_nowait(job)
            return
        try:
            backend.put(job)
        except BaseException:
            cancel_waiting(job, _QUEUED, self._now(), "submit interrupted")
            raise

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, grace: float | None = None
    ) -> None:
        """Stop accepting jobs, then finish or cancel what is left.  Idempotent.

        Order: refuse new jobs (``submit`` raises ``RuntimeError``); with ``cancel_futures``,
        cancel every job that is pending, queued or waiting to retry; wait for the rest to
        finish, retries included, for at most ``grace`` seconds (None: no limit); then cancel
        what is still unfinished, abandoning the threads of running jobs; stop the workers
        and the timer, joining each with a deadline.

        Args:
            wait: block until all of that is done (otherwise it happens in the background).
            cancel_futures: cancel waiting jobs at once, as ThreadPoolExecutor does.
            grace: the longest wait for unfinished jobs; 0 stops running jobs at once.

        Jobs cancelled here are listed by :meth:`unfinished_jobs`.  Called from one of the
        pool's own jobs, it never waits (the job would wait for itself).
        """
        if grace is not None:
            grace = check_number("grace", grace, minimum=0.0, inclusive=True)
            grace = join_timeout(grace)  # beyond TIMEOUT_MAX: no limit
        if self._core.forked:  # a copy made by os.fork(): its threads and jobs are the parent's
            return
        if current_core() is self._core:
            wait = False
        shut_down(self._core, wait, cancel_futures, grace)

    def wait_for_shutdown(self, timeout: float | None = None) -> bool:
        """Wait until a shutdown has finished (every job terminal, the threads stopped).

        Returns:
            True if it has; False if ``timeout`` seconds passed first.
        """
        if timeout is not None:
            timeout = join_timeout(check_number("timeout", timeout, minimum=0.0, inclusive=True))
        return self._core.finished.wait(timeout)

    def terminate(self) -> None:
        """Shut down at once: cancel every unfinished job, running ones included."""
        self.shutdown(wait=True, cancel_futures=True, grace=0)

    def unfinished_jobs(self) -> list[Job[Any]]:
        """Jobs that shutdown cancelled before they could finish, in the order it did.

        A job with no attempts never ran; others were waiting to retry or were cut short.
        Resubmit them elsewhere with :meth:`Job.clone`, or persist them.
        """
        core = self._core
        with core.books_lock:
            return list(core.unfinished)

    def worker_threads(self) -> list[threading.Thread]:
        """The pool's worker threads that are alive: those that run (or wait for) jobs, and
        those abandoned in a hung attempt.  Never more than ``max_workers +
        max_abandoned_threads``."""
        slots = self._core.threads.all_slots()
        return [s.thread for s in slots if s.thread is not None and s.thread.is_alive()]

    def threads(self) -> list[threading.Thread]:
        """Every thread this pool started that is still alive: its workers (abandoned ones
        included), its timer, its Handoff threads, its backend's delay timer and a background
        shutdown's."""
        core = self._core
        candidates = [s.thread for s in core.threads.all_slots()] + core.helper_threads()
        return [t for t in candidates if t is not None and t.is_alive()]

    def __repr__(self) -> str:
        s = self.stats.snapshot()
        state = "shut down" if self._ledger.closed else "running"
        return (
            f"<WorkerPool {self.name} {state} workers={self._max_workers} "
            f"in_flight={s.in_flight} finished={s.finished}>"
        )
