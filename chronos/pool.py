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

import contextlib
import itertools
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from chronos import attempts
from chronos._validate import (
    check_bool,
    check_clock,
    check_count,
    check_logger,
    check_number,
)
from chronos.clock import SYSTEM_CLOCK, Clock, join_timeout
from chronos.events import JobEvents, default_logger
from chronos.handoff import Handoff
from chronos.job import (
    WAITING_STATES,
    Attempt,
    Job,
    JobFuture,
    Ledger,
    admit,
    cancel_waiting,
    check_timeout,
    detach_future,
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

    Raises:
        TypeError, ValueError: for a bad argument, naming it.

    Thread-safety: every public method may be called from any thread.  Job state is guarded
    by the ledger lock (``stats.lock``); the set of worker threads by ``_threads_lock``.
    No thread is started while either is held.  The pool owns its worker threads, its timer
    thread (deadlines and backoff; it runs no user code) and its Handoff threads (what
    follows a timeout: the retry policy, logging, done-callbacks, replacement threads).
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
    ) -> None:
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        elif check_count("max_workers", max_workers, -sys.maxsize) <= 0:
            raise ValueError("max_workers must be greater than 0")  # ThreadPoolExecutor's words
        self._max_workers = max_workers
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
        self._timeout = check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._retry = retry
        queue_size = check_count("queue_size", queue_size, 0)
        if max_abandoned_threads is None:
            max_abandoned_threads = self._max_workers
        self._max_abandoned = check_count("max_abandoned_threads", max_abandoned_threads, 0)
        self._interrupt = check_bool("interrupt_on_timeout", interrupt_on_timeout)
        self._wait_for_abandoned = check_bool("wait_for_abandoned", wait_for_abandoned)
        # Finite: exit must be bounded (an unlimited wait at exit is no grace at all).
        self._exit_grace = check_number(
            "exit_grace", exit_grace, minimum=0.0, inclusive=True, finite=True
        )
        self._clock: Clock = SYSTEM_CLOCK if clock is None else check_clock("clock", clock)
        if logger is not None:
            check_logger("logger", logger)
        self._now = self._clock.now  # bound once: read several times per job
        self._thread_initializer = initializer
        self._initargs = tuple(initargs)
        self._name = thread_name_prefix or f"chronos-pool-{next(_pool_numbers)}"

        self.stats = Stats()
        self._events = JobEvents(logger if logger is not None else default_logger())
        self._ledger = Ledger(self.stats, self._events)
        self._queue = JobQueue(queue_size)
        self._pool_ref = weakref.ref(self)  # what the pool's own threads hold
        self._timer = Timer(self._clock, self._events.internal_error, f"{self._name}_timer")
        self._handoff = Handoff(f"{self._name}_handoff", self._events.internal_error)
        self._threads_lock = threading.Lock()  # guards the five fields below
        self._active: set[WorkerSlot] = set()
        self._abandoned: set[WorkerSlot] = set()
        self._thread_numbers = itertools.count()
        self._broken_reason: str | None = None
        self._unfinished: list[Job[Any]] = []
        self._dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
        self._finish_lock = threading.Lock()  # one thread at a time finishes the shutdown
        #: Set (under _threads_lock) once shutdown stops the threads: every job is terminal,
        #: so no thread is started or rejoins after it, and _stop_threads joins them all.
        self._stopping = False
        self._finished = threading.Event()
        self._finisher: threading.Thread | None = None
        #: wait_for_abandoned: retries held back for the thread of their timed-out attempt.
        self._held_lock = threading.Lock()  # guards _held and every Attempt._returned read
        self._held: dict[Attempt, Job[Any]] = {}
        #: Set in a child process made by os.fork(): the pool's threads stayed behind.
        self._forked = False
        _live_pools.add(self)
        # Dropped without shutdown(): wake the idle workers and stop the helpers, so that
        # no thread outlives the pool (they hold it weakly).
        weakref.finalize(self, _pool_collected, self._queue, self._timer, self._handoff)

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
        if self._broken_reason is not None:
            raise BrokenThreadPool(self._broken_reason)
        job = Job._of_call(fn, args, kwargs)
        future = job._future
        assert future is not None
        admit(job, self._ledger, JobStatus.QUEUED, self._now(), self)
        queue = self._queue
        if queue.items.qsize() < queue.bound:
            queue.items.put(job)
        else:
            self._put_when_full(job)
        if len(self._active) < self._max_workers:
            self._adjust_thread_count()
        return future

    def submit_job(self, job: Job[T]) -> JobFuture[T]:
        """Submit a :class:`Job` (with its own name, timeout or retry policy).

        Raises:
            TypeError: ``job`` is not a Job.
            ValueError: the job was submitted before.
            RuntimeError: the pool is shut down.
            BrokenThreadPool: a worker's initializer failed.
        """
        if self._broken_reason is not None:
            raise BrokenThreadPool(self._broken_reason)
        admit(job, self._ledger, JobStatus.QUEUED, self._now(), self)
        future = job._future
        assert future is not None  # admitted: not finished
        queue = self._queue
        if queue.items.qsize() < queue.bound:
            queue.items.put(job)
        else:
            self._put_when_full(job)
        self._adjust_thread_count()
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
        if self._forked:  # a copy made by os.fork(): its threads and jobs are the parent's
            return
        if current_pool() is self:
            wait = False
        self._close(cancel_futures=cancel_futures, grace=grace)
        if wait:
            self._finish(grace)
            return
        finisher = None
        with self._finish_lock:
            if self._finisher is None and not self._finished.is_set():
                finisher = self._finisher = threading.Thread(
                    target=self._finish,
                    args=(grace,),
                    name=f"{self._name}_shutdown",
                    daemon=True,
                )
        if finisher is not None:
            finisher.start()

    def _close(self, *, cancel_futures: bool, grace: float | None) -> None:
        """The first steps of :meth:`shutdown`, on the calling thread: refuse new jobs, tell
        the dispatchers, cancel what ``cancel_futures`` and ``grace == 0`` say."""
        if self._ledger.close():
            self._events.pool("pool.shutdown", pool=self._name, phase="started")
        for dispatcher in list(self._dispatchers):
            dispatcher._pool_closed()
        if cancel_futures:
            self._cancel_waiting()
        if grace == 0:
            self._cancel_running()

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

    def worker_threads(self) -> list[threading.Thread]:
        """The pool's worker threads that are alive: those that run (or wait for) jobs, and
        those abandoned in a hung attempt.  Never more than ``max_workers +
        max_abandoned_threads``."""
        with self._threads_lock:
            slots = [*self._active, *self._abandoned]
        return [s.thread for s in slots if s.thread is not None and s.thread.is_alive()]

    def threads(self) -> list[threading.Thread]:
        """Every thread this pool started that is still alive: its workers (abandoned ones
        included), its timer, its Handoff threads and a background shutdown's."""
        with self._threads_lock:
            slots = [*self._active, *self._abandoned]
        candidates = [s.thread for s in slots] + [self._timer.thread, self._finisher]
        candidates += self._handoff.threads()
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

    # -- timing (see chronos.attempts): the timer keeps time, the Handoff does the rest --------

    def _arm_deadline(self, deadline: float, slot: WorkerSlot) -> None:
        """A worker started an attempt that ends at ``deadline``, before the timer's next
        look at its ``slot``: have the timer look then (see attempts.deadline_due)."""
        if not self._handoff.started:
            self._handoff.start()  # here, on a worker: never on the timer
        slot.check_at = deadline
        self._timer.call_at(deadline, attempts.deadline_due, self._pool_ref, slot)

    def _schedule_retry(self, job: Job[Any], attempt: Attempt, when: float) -> None:
        """Re-queue ``job`` once the clock reaches ``when`` (the timer holds it weakly)."""
        if not self._handoff.started:
            self._handoff.start()
        self._timer.call_at(when, attempts.retry_due, self._pool_ref, weakref.ref(job), attempt)

    def _hold_for_thread(self, job: Job[Any], attempt: Attempt) -> bool:
        """With ``wait_for_abandoned``: hold the retry of ``job`` while the thread of its
        timed-out ``attempt`` still runs (True: held; :meth:`_thread_returned` re-queues)."""
        if not self._wait_for_abandoned:
            return False
        with self._held_lock:
            if attempt._returned:
                return False
            self._held[attempt] = job
            return True

    def _thread_returned(self, attempt: Attempt) -> None:
        """The thread of an attempt that someone else ended has returned from it."""
        if not self._wait_for_abandoned:
            return  # nothing is ever held: no lock to take
        with self._held_lock:
            attempt._returned = True
            job = self._held.pop(attempt, None) if self._held else None
        if job is not None:
            attempts.requeue_retry(self, job, attempt)

    # -- worker threads -------------------------------------------------------------------------
    #
    # Threads are never started while _threads_lock is held: a slot is reserved under the
    # lock (so the bounds hold), and its thread started after it is released.

    def _adjust_thread_count(self) -> None:
        # One more thread per submission until max_workers run: a plain length test on the
        # hot path, where ThreadPoolExecutor pays a Semaphore round trip per job.
        if len(self._active) >= self._max_workers:
            return
        with self._threads_lock:
            if self._stopping:
                return
            active = len(self._active)
            slot = None
            if active < self._max_workers and (
                active + len(self._abandoned) < self._max_workers + self._max_abandoned
            ):
                slot = self._reserve_slot()
        if slot is not None:
            self._start(slot)

    def _reserve_slot(self) -> WorkerSlot:  # caller holds _threads_lock
        slot = WorkerSlot(f"{self._name}_{next(self._thread_numbers)}")
        slot.thread = threading.Thread(
            target=worker_main, args=(self._pool_ref, slot), name=slot.name, daemon=True
        )
        self._active.add(slot)
        return slot

    def _start(self, slot: WorkerSlot) -> None:
        """Start the thread of a slot reserved by :meth:`_reserve_slot` (no lock held)."""
        assert slot.thread is not None
        try:
            slot.thread.start()
        except RuntimeError as exc:  # "can't create new thread at interpreter shutdown"
            with self._threads_lock:
                self._active.discard(slot)
            if "interpreter shutdown" not in str(exc):  # expected late in an exit (3.12.0-2):
                self._events.internal_error("pool.spawn", exc)  # the running threads go on

    def _run_initializer(self) -> bool:
        if self._thread_initializer is None:
            return True
        try:
            self._thread_initializer(*self._initargs)
        except BaseException as exc:
            self._events.internal_error("pool.initializer", exc)
            self._initializer_failed()
            return False
        return True

    def _initializer_failed(self) -> None:
        with self._threads_lock:
            self._broken_reason = (
                "A thread initializer failed, the thread pool is not usable anymore"
            )
        error = BrokenThreadPool(self._broken_reason)
        for job in self._ledger.live_jobs():
            if move(job, WAITING_STATES, JobStatus.FAILED, self._clock.now()):
                detach_future(job, None, error).set_exception(error)
        self._queue.wake_putters()

    def _rejoin(self, slot: WorkerSlot) -> bool:
        """A thread returned from an attempt that was taken from it (abandoned), or that
        it was sent ``JobInterrupted`` for: rejoin the pool (True) or exit (False)."""
        if slot.interrupted:
            # It leaves, maybe with its attempt still published (the interrupt may have
            # landed before the attempt was ended): clear it, or a timeout would abandon a
            # thread that is gone.  (slot.lock is never taken under _threads_lock.)
            current = slot.current
            slot.release()
            if current is not None:
                self._thread_returned(current[1])  # a retry held for it may go
        fresh = None
        with self._threads_lock:
            # Idempotent, and recomputed from the set: an interrupt may land in this very
            # block (it is the interrupted thread's), and bring it back here to finish.
            self._abandoned.discard(slot)
            self.stats.abandoned_threads.set(len(self._abandoned))
            if slot.interrupted:
                # The interrupt meant for its job may still land in this thread: it leaves,
                # and a fresh thread takes its place if the pool is short of one (it may
                # have no worker left at all when max_abandoned_threads gave it none).
                self._active.discard(slot)
                if not self._stopping and len(self._active) < self._max_workers:
                    fresh = self._reserve_slot()
            elif slot in self._active:
                return True
            # While a draining shutdown waits for queued jobs the thread is still needed:
            # only once shutdown stops the threads (every job terminal) is it sent away.
            elif self._stopping or len(self._active) >= self._max_workers:
                return False
            else:
                slot.abandoned = False
                self._active.add(slot)
                return True
        if fresh is not None:
            self._start(fresh)
        return False

    def _thread_exited(self, slot: WorkerSlot) -> None:
        with self._threads_lock:
            self._active.discard(slot)

    def _mark_abandoned(self, slot: WorkerSlot) -> None:
        """Move ``slot`` from the active set to the abandoned one, and count it."""
        with self._threads_lock:
            self._active.discard(slot)
            self._abandoned.add(slot)
            self.stats.abandoned_threads.set(len(self._abandoned))
            self.stats.abandoned_threads_total.increment()

    def _abandon(self, slot: WorkerSlot, replace: bool) -> bool:
        """After :meth:`_mark_abandoned`: maybe start a thread in ``slot``'s place.

        Only when jobs wait in the queue: otherwise the next job to come starts one (every
        way in, ``submit``, a retry, a Dispatcher, starts a thread while the pool has fewer
        than ``max_workers``), so a burst of timeouts costs no burst of thread starts.

        Returns:
            True if a replacement thread was started.
        """
        with self._threads_lock:
            if slot in self._active:  # it returned and rejoined meanwhile: leave it be
                return False
            # A submit() between _mark_abandoned and here may have refilled the pool already
            # (it saw a free place): replace only what is missing, so that threads never
            # exceed max_workers + max_abandoned_threads.  A draining shutdown still needs
            # workers for the queued jobs: only a stopping one starts none.
            if (
                not replace
                or self._stopping
                or len(self._abandoned) > self._max_abandoned
                or len(self._active) >= self._max_workers
                or not self._queue.qsize()
            ):
                return False
            fresh = self._reserve_slot()
        self._start(fresh)
        return True

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
        for job in self._ledger.live_jobs():
            if job.status is JobStatus.RUNNING:  # fenced by the timer, not settled yet
                attempts.cancel_fenced(self, job)

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
        for slot in slots:
            attempts.abandon_if_fenced(self, slot)
        with self._threads_lock:
            slots = list(self._active)
        self._queue.put_overflow(None)
        self._queue.wake_putters()
        for slot in slots:
            thread = slot.thread
            # (A thread reserved but not started yet is started by its reserver right after;
            # it finds the stop sentinel at once.)
            if thread is not None and thread is not threading.current_thread():
                if thread.ident is None:
                    continue
                thread.join(_JOIN_TIMEOUT)
                if thread.is_alive():
                    self._events.internal_error(
                        "pool.shutdown", RuntimeError(f"worker {slot.name} did not exit")
                    )
        self._timer.stop(_JOIN_TIMEOUT)
        self._handoff.stop(_JOIN_TIMEOUT)
        for dispatcher in list(self._dispatchers):
            # Every job is terminal by now: nothing is lost by stopping a dispatcher that
            # still waits for its next tick with a job shutdown cancelled.
            dispatcher.stop(DISPATCHER_JOIN_TIMEOUT)

    def _forked_away(self) -> None:
        """In the child of os.fork(): this copy has no threads; refuse work, exit at once."""
        self._forked = True
        self._broken_reason = (
            "this pool was copied into a child process by os.fork(); its threads stayed in "
            "the parent: create a new WorkerPool in the child"
        )


def _pool_collected(queue: JobQueue, timer: Timer, handoff: Handoff) -> None:
    """A pool was garbage collected without shutdown(): let its threads go.  No job is left
    (a job in flight holds its pool), so the workers just exit."""
    queue.put_overflow(None)
    timer.stop(0)
    handoff.stop(0)


def _shutdown_at_exit() -> None:
    """Interpreter exit: give every live pool ``exit_grace`` seconds, then cancel the rest.

    Registered with ``threading._register_atexit``, as ThreadPoolExecutor's own hook is: it
    runs when the main thread ends, *before* Python joins the non-daemon threads, so a user
    thread blocked in ``submit()`` behind a hung job is released (its job cancelled) instead
    of blocking exit for ever.  The pools' graces run side by side, not one after another.
    When jobs are still unfinished, it says so once, on one line of stderr, with how long it
    will wait; Ctrl+C meanwhile cancels them at once (one more line, no traceback).
    """
    pools = [pool for pool in list(_live_pools) if not pool._forked]
    began = SYSTEM_CLOCK.now()
    try:
        # No thread is started here (Python may refuse to start one this late): every pool
        # is closed first, then each waits until its own grace, counted from the same start.
        for pool in pools:
            _announce_exit_wait(pool)
            _quietly(pool, pool._close, cancel_futures=False, grace=pool._exit_grace)
        for pool in pools:
            left = max(0.0, began + pool._exit_grace - SYSTEM_CLOCK.now())
            _quietly(pool, pool._finish, left)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("chronos: interrupted: cancelling unfinished jobs", file=sys.stderr, flush=True)
        for pool in pools:
            with contextlib.suppress(BaseException):
                pool._close(cancel_futures=True, grace=0)


def _announce_exit_wait(pool: WorkerPool) -> None:
    unfinished = pool.stats.snapshot().in_flight
    if unfinished and not pool._ledger.closed and pool._exit_grace > 0:
        with contextlib.suppress(Exception):
            print(
                f"chronos: exiting: waiting up to {pool._exit_grace:g}s (exit_grace) for "
                f"{unfinished} unfinished job(s) of {pool.name}, then cancelling them",
                file=sys.stderr,
                flush=True,
            )


def _quietly(pool: WorkerPool, step: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """A shutdown step at exit: any error but Ctrl+C is logged, and exit goes on."""
    try:
        step(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        pool._events.internal_error("atexit", exc)


def _after_fork_in_child() -> None:
    """os.fork(): the child has none of the pools' threads, and any of their locks may have
    been held at the fork.  Its copies of the pools refuse work and are forgotten, so its
    exit neither waits for the parent's jobs nor touches a lock."""
    for pool in list(_live_pools):
        pool._forked_away()
    _live_pools.clear()


threading._register_atexit(_shutdown_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_after_fork_in_child)
