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
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from concurrent.futures.thread import BrokenThreadPool
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from chronos import attempts
from chronos._validate import (
    check_bool,
    check_clock,
    check_count,
    check_logger,
    check_number,
    check_optional_number,
)
from chronos.clock import SYSTEM_CLOCK, Clock, join_timeout
from chronos.events import JobEvents, default_logger
from chronos.job import (
    WAITING_STATES,
    Job,
    JobFuture,
    Ledger,
    admit,
    cancel_waiting,
    check_timeout,
    move,
)
from chronos.retry import RetryPolicy
from chronos.stats import Stats
from chronos.status import JobStatus
from chronos.timer import Timer
from chronos.worker import WorkerSlot, current_pool, worker_main
from chronos.workqueue import JobQueue

if TYPE_CHECKING:
    from chronos.dispatcher import Dispatcher

__all__ = ["DEFAULT_QUEUE_SIZE", "WorkerPool"]

P = ParamSpec("P")
T = TypeVar("T")

#: Default bound of a pool's queue.
DEFAULT_QUEUE_SIZE = 10_000
#: How long shutdown waits for each idle worker thread to exit.
_JOIN_TIMEOUT = 5.0
#: How long shutdown waits for each of the pool's dispatchers to exit.  Short: every job is
#: terminal by then, and a dispatcher stuck in its iterable's ``next()`` (a generator
#: waiting for input) cannot be interrupted; it is a daemon thread that exits, submitting
#: nothing, as soon as ``next()`` returns.
DISPATCHER_JOIN_TIMEOUT = 0.1

_pool_numbers = itertools.count()
_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


class WorkerPool(Executor):
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
        exit_grace: at interpreter exit, seconds left for queued and running jobs to finish
            before they are cancelled; finite, >= 0.
        clock: time source, an instance (tests pass a :class:`chronos.testing.FakeClock`).
        logger: a structlog logger for the lifecycle events (see :mod:`chronos.events`):
            anything with ``debug``, ``info``, ``warning`` and ``error`` methods.

    Raises:
        TypeError, ValueError: for a bad argument, naming it.

    Thread-safety: every public method may be called from any thread.  Job state is guarded
    by the ledger lock (``stats.lock``); the set of worker threads by ``_threads_lock``.
    The pool owns its worker threads and its timer thread.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_abandoned_threads: int | None = None,
        interrupt_on_timeout: bool = False,
        exit_grace: float = 5.0,
        clock: Clock | None = None,
        logger: Any = None,
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        self._max_workers = check_count("max_workers", max_workers, 1)
        if not isinstance(thread_name_prefix, str):
            raise TypeError(
                f"thread_name_prefix must be a str, got {type(thread_name_prefix).__name__}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not isinstance(initargs, tuple | list):
            raise TypeError(f"initargs must be a tuple, got {type(initargs).__name__}")
        self._timeout = check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._retry = retry
        queue_size = check_count("queue_size", queue_size, 0)
        if max_abandoned_threads is None:
            max_abandoned_threads = self._max_workers
        self._max_abandoned = check_count("max_abandoned_threads", max_abandoned_threads, 0)
        self._interrupt = check_bool("interrupt_on_timeout", interrupt_on_timeout)
        # Finite: exit must be bounded (an unlimited wait at exit is no grace at all).
        self._exit_grace = check_number(
            "exit_grace", exit_grace, minimum=0.0, inclusive=True, finite=True
        )
        self._clock: Clock = SYSTEM_CLOCK if clock is None else check_clock("clock", clock)
        if logger is not None:
            check_logger("logger", logger)
        self._now = self._clock.now  # bound once: read several times per job
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._name = thread_name_prefix or f"chronos-pool-{next(_pool_numbers)}"

        self.stats = Stats()
        self._events = JobEvents(logger if logger is not None else default_logger())
        self._ledger = Ledger(self.stats, self._events)
        self._queue = JobQueue(queue_size)
        self._timer = Timer(
            self._clock, self._on_deadline, self._events.internal_error, f"{self._name}_timer"
        )
        self._threads_lock = threading.Lock()  # guards the four fields below
        self._active: set[WorkerSlot] = set()
        self._abandoned: set[WorkerSlot] = set()
        self._thread_numbers = itertools.count()
        self._broken: str | None = None
        self._dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
        self._unfinished: list[Job[Any]] = []  # guarded by _threads_lock
        self._finish_lock = threading.Lock()  # one thread at a time finishes the shutdown
        #: Set (under _threads_lock) once shutdown stops the threads: every job is terminal,
        #: so no thread is started or rejoins after it, and _stop_threads joins them all.
        self._stopping = False
        self._finished = threading.Event()
        self._finisher: threading.Thread | None = None
        _live_pools.add(self)

    # -- public API ---------------------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def timeout(self) -> float | None:
        """The default per-attempt timeout."""
        return self._timeout

    @property
    def retry(self) -> RetryPolicy | None:
        """The default retry policy."""
        return self._retry

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def name(self) -> str:
        return self._name

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> JobFuture[T]:
        """Run ``fn(*args, **kwargs)`` as a job with the pool's timeout and retry policy.

        Blocks while the queue is full (unless called from one of the pool's workers).

        Raises:
            TypeError: ``fn`` is not callable.
            RuntimeError: the pool is shut down.
            BrokenThreadPool: a worker's initializer failed.
        """
        # submit_job(Job._of_call(...)) with its steps inline: this is the hot path.
        if self._broken is not None:
            raise BrokenThreadPool(self._broken)
        job = Job._of_call(fn, args, kwargs)
        admit(job, self._ledger, JobStatus.QUEUED, self._now(), self)
        queue = self._queue
        if queue.items.qsize() < queue.bound:
            queue.items.put(job)
        else:
            self._put_when_full(job)
        if len(self._active) < self._max_workers:
            self._adjust_thread_count()
        return job.future

    def submit_job(self, job: Job[T]) -> JobFuture[T]:
        """Submit a :class:`Job` (with its own name, timeout or retry policy).

        Raises:
            TypeError: ``job`` is not a Job.
            ValueError: the job was submitted before.
            RuntimeError: the pool is shut down.
            BrokenThreadPool: a worker's initializer failed.
        """
        if self._broken is not None:
            raise BrokenThreadPool(self._broken)
        admit(job, self._ledger, JobStatus.QUEUED, self._now(), self)
        queue = self._queue
        if queue.items.qsize() < queue.bound:
            queue.items.put(job)
        else:
            self._put_when_full(job)
        self._adjust_thread_count()
        return job.future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``Executor.map``, with its arguments checked before any job is submitted.

        Raises:
            TypeError, ValueError: ``fn`` is not callable, an iterable is not iterable, or
                ``timeout`` is not None nor a finite number >= 0.
            RuntimeError: the pool is shut down.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        timeout = check_optional_number("timeout", timeout, minimum=0.0, inclusive=True)
        if timeout is not None and math.isinf(timeout):
            raise ValueError("timeout must be finite; pass None for no timeout")
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
        if current_pool() is self:
            self._queue.put_overflow(job)
            return
        try:
            self._queue.put_job(job)
        except BaseException:
            cancel_waiting(job, JobStatus.QUEUED, self._clock.now(), "submit interrupted")
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
        if current_pool() is self:
            wait = False
        if self._ledger.close():
            self._events.pool("pool.shutdown", pool=self._name, phase="started")
        for dispatcher in list(self._dispatchers):
            dispatcher._pool_closed()
        if cancel_futures:
            self._cancel_waiting()
        if grace == 0:
            self._cancel_running()
        if wait:
            self._finish(grace)
        else:
            with self._finish_lock:
                if self._finisher is None and not self._finished.is_set():
                    self._finisher = threading.Thread(
                        target=self._finish,
                        args=(grace,),
                        name=f"{self._name}_shutdown",
                        daemon=True,
                    )
                    self._finisher.start()

    def terminate(self) -> None:
        """Shut down at once: cancel every unfinished job, running ones included."""
        self.shutdown(wait=True, cancel_futures=True, grace=0)

    def unfinished_jobs(self) -> list[Job[Any]]:
        """Jobs that shutdown cancelled before they could finish, in the order it did.

        A job with no attempts never ran; others were waiting to retry or were cut short.
        Resubmit them elsewhere with :meth:`Job.clone`, or persist them.
        """
        with self._threads_lock:
            return list(self._unfinished)

    def threads(self) -> list[threading.Thread]:
        """Every thread this pool started that is still alive (abandoned ones included)."""
        with self._threads_lock:
            slots = [*self._active, *self._abandoned]
        candidates = [s.thread for s in slots] + [self._timer.thread, self._finisher]
        return [t for t in candidates if t is not None and t.is_alive()]

    def __repr__(self) -> str:
        s = self.stats.snapshot()
        state = "shut down" if self._ledger.closed else "running"
        return (
            f"<WorkerPool {self._name} {state} workers={self._max_workers} "
            f"in_flight={s.in_flight} finished={s.finished}>"
        )

    # -- Route: where retries of directly submitted jobs re-enter ------------------------------

    _tracks_jobs = False  # the ledger counts the pool's jobs already
    _outstanding = 0

    def _all_finished(self) -> None:  # never called: _tracks_jobs is False
        pass

    def requeue(self, job: Job[Any]) -> None:
        if move(job, JobStatus.RETRY_WAIT, JobStatus.QUEUED, self._clock.now()):
            self._queue.put_overflow(job)
            self._adjust_thread_count()

    # -- worker threads -------------------------------------------------------------------------

    def _adjust_thread_count(self) -> None:
        # One more thread per submission until max_workers run: a plain length test on the
        # hot path, where ThreadPoolExecutor pays a Semaphore round trip per job.
        if len(self._active) >= self._max_workers:
            return
        with self._threads_lock:
            if self._stopping:
                return
            active = len(self._active)
            if active < self._max_workers and (
                active + len(self._abandoned) < self._max_workers + self._max_abandoned
            ):
                self._spawn()

    def _spawn(self) -> None:  # caller holds _threads_lock
        slot = WorkerSlot(f"{self._name}_{next(self._thread_numbers)}")
        thread = threading.Thread(
            target=worker_main, args=(self, slot), name=slot.name, daemon=True
        )
        slot.thread = thread
        self._active.add(slot)
        self._timer.watch(slot)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            self._active.discard(slot)
            self._timer.unwatch(slot)
            self._events.internal_error("pool.spawn", exc)

    def _run_initializer(self) -> bool:
        if self._initializer is None:
            return True
        try:
            self._initializer(*self._initargs)
        except BaseException as exc:
            self._events.internal_error("pool.initializer", exc)
            self._initializer_failed()
            return False
        return True

    def _initializer_failed(self) -> None:
        with self._threads_lock:
            self._broken = "A thread initializer failed, the thread pool is not usable anymore"
        error = BrokenThreadPool(self._broken)
        for job in self._ledger.live_jobs():
            if move(job, WAITING_STATES, JobStatus.FAILED, self._clock.now()):
                job.future.set_running_or_notify_cancel()
                job.future.set_exception(error)
        self._queue.wake_putters()

    def _rejoin(self, slot: WorkerSlot) -> bool:
        """An abandoned thread returned from its attempt: rejoin the pool or exit."""
        with self._threads_lock:
            if slot in self._abandoned:  # idempotent: a stray interrupt may bring us back here
                self._abandoned.discard(slot)
                self.stats.abandoned_threads.decrement()
            # While a draining shutdown waits for queued jobs the thread is still needed:
            # only once shutdown stops the threads (every job terminal) is it sent away.
            if self._stopping or len(self._active) >= self._max_workers:
                return False
            if slot.interrupted:
                # The interrupt meant for its job may still land in this thread: it leaves,
                # and a fresh thread takes its place (the pool is short of one, and may have
                # no worker left at all when max_abandoned_threads gave it no replacement).
                self._spawn()
                return False
            slot.abandoned = False
            self._active.add(slot)
            self._timer.watch(slot)
            return True

    def _thread_exited(self, slot: WorkerSlot) -> None:
        with self._threads_lock:
            self._active.discard(slot)
        self._timer.unwatch(slot)

    def _mark_abandoned(self, slot: WorkerSlot) -> None:
        """Move ``slot`` from the active set to the abandoned one, and count it."""
        with self._threads_lock:
            self._active.discard(slot)
            self._abandoned.add(slot)
            self.stats.abandoned_threads.increment()
            self.stats.abandoned_threads_total.increment()

    def _abandon(self, slot: WorkerSlot, replace: bool) -> bool:
        """After :meth:`_mark_abandoned`: stop watching ``slot``; maybe replace it."""
        with self._threads_lock:
            if slot in self._active:  # it returned and rejoined meanwhile: leave it be
                return False
            self._timer.unwatch(slot)
            # A submit() between _mark_abandoned and here may have refilled the pool already
            # (it saw a free place): replace only what is missing, so that threads never
            # exceed max_workers + max_abandoned_threads.  A draining shutdown still needs
            # workers for the queued jobs: only a stopping one starts none.
            if (
                not replace
                or self._stopping
                or len(self._abandoned) > self._max_abandoned
                or len(self._active) >= self._max_workers
            ):
                return False
            self._spawn()
            return True

    # -- running attempts (see chronos.attempts) -------------------------------------------------

    def _on_deadline(self, slot: WorkerSlot, current: tuple[Job[Any], Any]) -> None:
        attempts.on_deadline(self, slot, current)

    # -- shutdown ---------------------------------------------------------------------------------

    def _record_unfinished(self, job: Job[Any]) -> None:
        with self._threads_lock:
            self._unfinished.append(job)

    def _cancel_waiting(self) -> None:
        now = self._clock.now()
        for job in self._ledger.live_jobs():
            if cancel_waiting(job, WAITING_STATES, now, "shutdown"):
                self._record_unfinished(job)
        self._queue.wake_putters()

    def _cancel_running(self) -> None:
        with self._threads_lock:
            slots = list(self._active)
        for slot in slots:
            current = slot.current
            if current is not None:
                attempts.cancel_running(self, slot, current)

    def _finish(self, grace: float | None) -> None:
        drained = self._ledger.drained
        if not drained.wait(grace):
            self._cancel_waiting()
            self._cancel_running()
            if not drained.wait(_JOIN_TIMEOUT):  # cannot happen: every live job was cancelled
                stuck = RuntimeError(f"unfinished after shutdown: {self._ledger.live_jobs()}")
                self._events.internal_error("pool.shutdown", stuck)
        with self._finish_lock:
            if self._finished.is_set():
                return
            self._stop_threads()
            self._finished.set()
        self._events.pool(
            "pool.shutdown", pool=self._name, phase="finished", **self.stats.snapshot().as_dict()
        )

    def _stop_threads(self) -> None:
        with self._threads_lock:
            self._stopping = True  # from here no thread starts or rejoins: we join them all
            slots = list(self._active)
        self._queue.put_overflow(None)
        self._queue.wake_putters()
        for slot in slots:
            thread = slot.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)
                if thread.is_alive():
                    self._events.internal_error(
                        "pool.shutdown", RuntimeError(f"worker {slot.name} did not exit")
                    )
        self._timer.stop(_JOIN_TIMEOUT)
        for dispatcher in list(self._dispatchers):
            # Every job is terminal by now: nothing is lost by stopping a dispatcher that
            # still waits for its next tick with a job shutdown cancelled.
            dispatcher.stop(DISPATCHER_JOIN_TIMEOUT)


def _shutdown_at_exit() -> None:
    """Interpreter exit: give every live pool ``exit_grace`` seconds, then cancel the rest.

    Registered with ``threading._register_atexit``, as ThreadPoolExecutor's own hook is: it
    runs when the main thread ends, *before* Python joins the non-daemon threads, so a user
    thread blocked in ``submit()`` behind a hung job is released (its job cancelled) instead
    of blocking exit for ever.  The pools' graces run side by side, not one after another.
    """
    pools = list(_live_pools)
    for pool in pools:
        try:
            pool.shutdown(wait=False, grace=pool._exit_grace)
        except BaseException as exc:  # exit must go on
            pool._events.internal_error("atexit", exc)
    for pool in pools:
        try:
            pool.shutdown(wait=True, grace=pool._exit_grace)
        except BaseException as exc:
            pool._events.internal_error("atexit", exc)


threading._register_atexit(_shutdown_at_exit)  # type: ignore[attr-defined]
