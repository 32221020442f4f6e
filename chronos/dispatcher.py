"""Dispatcher: feeds a WorkerPool from lists, lazy iterables and live submissions, at a rate.

It runs on its own ``threading.Thread``.  For each job it takes a token from its ticker (a
:class:`chronos.TokenBucket`, waited for on an Event so that :meth:`Dispatcher.stop` wakes
it at once), then pushes the job into the pool's bounded queue, waiting while the queue is
full (backpressure).  Sources are served in this order: retries that came due, live
:meth:`Dispatcher.submit` calls, then :meth:`Dispatcher.dispatch` iterables, one item at a
time (an endless generator runs in bounded memory).  Every attempt of a job dispatched here,
first or retry, passes the rate limit.

Longer than the ~400 lines the house style aims at: the dispatcher thread, its reader and
the route that brings its retries back share one lock and the four queues it guards, and
splitting them would spread one lock's invariants over several modules.

Iterables are read on a thread of their own (the *reader*), a few items ahead of the
dispatcher (at most :data:`READ_AHEAD`, and one when the pool's queue is full): a generator
that blocks in ``next()`` (reading a live feed) holds up only itself, never live
submissions, due retries, or a shutdown.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from chronos._ledger import (
    WAITING_STATES,
    JobTracker,
    admit,
    cancel_waiting,
    move,
    release_pending,
)
from chronos._validate import check_clock, check_optional_number
from chronos.clock import SYSTEM_CLOCK, Clock, join_timeout
from chronos.job import Job, JobFuture
from chronos.pool import WorkerPool, core_of
from chronos.pool.lifecycle import DISPATCHER_JOIN_TIMEOUT
from chronos.status import JobStatus
from chronos.ticker import BucketStatistics, TokenBucket

__all__ = ["Dispatcher", "DispatcherStatistics"]

T = TypeVar("T")
_numbers = itertools.count()
_PENDING = JobStatus.PENDING
#: Most items a dispatch() iterable is read ahead of the dispatcher (fewer when the pool's
#: queue is nearly full): the reader hands them over in batches, so a thread switch is not
#: paid per item.
READ_AHEAD = 32
#: Real seconds between two looks of an idle reader at its turn (it is woken at once when
#: the dispatcher takes its item or stops; this only bounds the wait).
_READER_POLL = 1.0


@dataclass(frozen=True, slots=True)
class DispatcherStatistics:
    """A snapshot of one :class:`Dispatcher`.

    Attributes:
        name: the dispatcher's (and its thread's) name.
        state: ``"new"`` (not started), ``"open"``, ``"closed"`` (it dispatches what it
            holds, then exits) or ``"stopped"``.
        dispatched: jobs moved into the pool's queue, retries included.
        outstanding: jobs taken on and not yet terminal (held here, in the pool, or in a
            retry backoff).
        retries_waiting: retries that came due, waiting for a token.
        submitted_waiting: jobs from :meth:`Dispatcher.submit` waiting for a token.
        read_ahead: items read from ``dispatch()`` iterables, waiting for a token.
        sources: ``dispatch()`` iterables not exhausted yet.
        bucket: the rate limiter's snapshot, or None without a rate limit.
    """

    name: str
    state: str
    dispatched: int
    outstanding: int
    retries_waiting: int
    submitted_waiting: int
    read_ahead: int
    sources: int
    bucket: BucketStatistics | None


def _as_job(item: object) -> Job[Any]:
    if isinstance(item, Job):
        return item
    if callable(item):
        return Job(item)
    raise TypeError(f"a dispatched item must be a chronos.Job or a callable, got {item!r}")


class Dispatcher:
    """Feeds one :class:`WorkerPool` at a controlled rate from its own thread.

    Args:
        pool: the pool to feed.
        interval: seconds between two dispatches (a fixed-interval ticker), or
        rate: dispatches per second, with
        burst: how many may go back to back after an idle spell (only with ``rate``).
            With neither ``interval`` nor ``rate`` there is no rate limit.
        clock: time source, a clock instance; default the pool's.
        name: the thread's name, a str.

    Raises:
        TypeError, ValueError: for a bad argument, naming it.

    Thread-safety: :meth:`submit`, :meth:`dispatch`, :meth:`close`, :meth:`stop` and
    :meth:`join` may be called from any thread.  The dispatcher thread owns the ticker and
    the iterators given to :meth:`dispatch` (they are only ever advanced on it).
    """

    def __init__(
        self,
        pool: WorkerPool,
        *,
        interval: float | None = None,
        rate: float | None = None,
        burst: int | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(pool, WorkerPool):
            raise TypeError(f"pool must be a chronos.WorkerPool, got {type(pool).__name__}")
        if interval is not None and rate is not None:
            raise ValueError("give interval or rate, not both")
        if burst is not None and rate is None:
            raise ValueError("burst goes with rate")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._pool = pool
        self._core = core = core_of(pool)
        self._clock: Clock = pool.clock if clock is None else check_clock("clock", clock)
        self._now = self._clock.now
        self._ledger = core.ledger
        self._events = core.events
        self._backend = core.backend
        self._threads = core.threads
        #: This dispatcher's unfinished jobs, counted by the ledger (under its lock): the
        #: thread exits after close() only once it is 0, since until then a retry may
        #: still come back through it.
        self._tracker = JobTracker(self._all_finished)
        start = self._clock.now()
        self._bucket: TokenBucket | None = None
        if interval is not None:
            self._bucket = TokenBucket.every(interval, start=start)
        elif rate is not None:
            self._bucket = TokenBucket(rate, 1 if burst is None else burst, start=start)
        self._name = name or f"chronos-dispatcher-{next(_numbers)}"
        # Guards the fields down to _leftovers.  Reentrant: a done-callback may run on the
        # thread that holds it (add_done_callback calls it at once if the job is done).
        self._lock = threading.RLock()
        self._retries: deque[Job[Any]] = deque()
        self._intake: deque[Job[Any]] = deque()
        self._sources: deque[Iterator[object]] = deque()
        self._pulled: deque[Job[Any]] = deque()  # read from a source, admitted, at most one
        self._reader: threading.Thread | None = None  # reads _sources while there are any
        self._reader_waiting = False  # the reader waits for _reader_turn
        self._closed = False
        self._sleeping = False  # the thread found nothing to do and waits on _wakeup
        self._leftovers: list[Job[Any]] = []
        self._source_errors: list[BaseException] = []
        # "Look again": new work (set only while the thread sleeps), close, stop, a retry
        # due, the last job finished.
        self._wakeup = threading.Event()
        self._reader_turn = threading.Event()  # the dispatcher took the item read ahead
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._started = False
        self.dispatched = 0  # written by the dispatcher thread only
        # From here the pool's shutdown closes us, and stops us once every job is terminal...
        core.add_shutdown_hooks(self._pool_closed, self._pool_stopped)
        if core.ledger.closed:  # ...and one that came before makes us born closed
            self._closed = True

    # -- public API ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def bucket(self) -> TokenBucket | None:
        """The rate limiter, or None without a rate limit."""
        return self._bucket

    def start(self) -> Dispatcher:
        """Start the dispatcher thread.  Returns self.

        Raises:
            RuntimeError: started twice.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a Dispatcher can be started once")
            self._started = True
            if self._bucket is not None:
                self._bucket.restart(self._clock.now())  # the schedule starts now
        self._thread.start()
        self._ensure_reader()
        return self

    def submit(self, job: Job[T] | Callable[..., T], /, *args: Any, **kwargs: Any) -> JobFuture[T]:
        """Hand over one job (a :class:`Job`, or a callable and its arguments); never blocks.

        Raises:
            TypeError: not a Job nor a callable, or a Job given with arguments.
            ValueError: the Job was submitted before.
            RuntimeError: the dispatcher was closed or stopped, or the pool shut down.
        """
        if isinstance(job, Job):
            if args or kwargs:
                raise TypeError("pass arguments to Job(...), not to submit(), with a Job")
            new_job: Job[T] = job
        else:
            new_job = Job.future_of_call(job, args, kwargs).job
        with self._lock:
            if self._closed:
                raise RuntimeError(f"cannot submit to a closed Dispatcher{self._why_closed()}")
            # self._admit(new_job), inline:
            admit(new_job, self._ledger, _PENDING, self._now(), self, self._tracker)
            self._intake.append(new_job)
            sleeping = self._sleeping
        if sleeping:  # the thread waits for work: wake it (while it works, it will see this)
            self._wakeup.set()
        return new_job.future

    def dispatch(self, jobs: Iterable[Job[Any] | Callable[[], object]]) -> None:
        """Queue an iterable of Jobs (or no-argument callables); it is consumed lazily.

        The dispatcher's reader thread pulls the items a few at a time, as the dispatcher
        takes them (at most ``READ_AHEAD`` ahead, one when the pool's queue is full), so a
        generator is never materialised, and one that blocks holds up nothing else.  If the
        iterable raises, the rest of it is dropped; the error is logged and kept in
        :attr:`source_errors`.

        Raises:
            TypeError: ``jobs`` is not iterable.
            RuntimeError: the dispatcher was closed or stopped.
        """
        try:
            iterator = iter(jobs)
        except TypeError:
            raise TypeError(f"jobs must be iterable, got {type(jobs).__name__}") from None
        with self._lock:
            if self._closed:
                raise RuntimeError(f"cannot dispatch to a closed Dispatcher{self._why_closed()}")
            self._sources.append(iterator)
        self._ensure_reader()
        self._wakeup.set()

    def close(self) -> None:
        """No more submissions.  The thread dispatches what it holds, then exits once every
        job it dispatched is terminal (retries included).  Idempotent."""
        with self._lock:
            self._closed = True
        self._wakeup.set()
        self._reader_turn.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to exit.  Returns True if it has (or never started).

        Raises:
            TypeError, ValueError: ``timeout`` is not None nor a number >= 0.
        """
        check_optional_number("timeout", timeout, minimum=0.0, inclusive=True)
        if not self._started:
            return True
        self._thread.join(join_timeout(timeout))
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> list[Job[Any]]:
        """Stop at once: dispatch nothing more, cancel the jobs not yet dispatched.

        Iterables are dropped unconsumed; jobs already in the pool run on.  A job of this
        dispatcher that later comes due for a retry is cancelled instead.  An item that an
        iterable is still producing (its reader thread is inside ``next()``) is waited for
        within ``timeout`` too, and cancelled.

        Returns:
            The jobs this dispatcher cancelled (see also :meth:`leftover_jobs`).

        Raises:
            TypeError, ValueError: ``timeout`` is not None nor a number >= 0 (checked
                before anything is stopped).
        """
        check_optional_number("timeout", timeout, minimum=0.0, inclusive=True)
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wakeup.set()
        self._reader_turn.set()
        self._backend.wake_putters()
        end = None if timeout is None else SYSTEM_CLOCK.now() + timeout  # real time: a join
        with self._lock:
            reader = self._reader
        for thread in (self._thread if self._started else None, reader):
            if thread is not None and thread is not threading.current_thread():
                left = None if end is None else max(0.0, end - SYSTEM_CLOCK.now())
                thread.join(join_timeout(left))
        self._drain_on_stop()
        return self.leftover_jobs()

    def leftover_jobs(self) -> list[Job[Any]]:
        """Jobs this dispatcher took on but never got into the pool: cancelled ones, and an
        item pulled from an iterable just as the pool shut down (never submitted)."""
        with self._lock:
            return list(self._leftovers)

    @property
    def source_errors(self) -> list[BaseException]:
        """Exceptions raised by iterables given to :meth:`dispatch` (each ended its source)."""
        with self._lock:
            return list(self._source_errors)

    def __enter__(self) -> Dispatcher:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.stop()
        else:
            self.close()
            self.join()

    def __repr__(self) -> str:
        state = "stopped" if self._stop.is_set() else "closed" if self._closed else "open"
        return f"<Dispatcher {self._name} {state} dispatched={self.dispatched}>"

    def statistics(self) -> DispatcherStatistics:
        """A frozen snapshot of the dispatcher (see :class:`DispatcherStatistics`)."""
        with self._lock:
            if self._stop.is_set():
                state = "stopped"
            elif self._closed:
                state = "closed"
            else:
                state = "open" if self._started else "new"
            held = (len(self._retries), len(self._intake), len(self._pulled), len(self._sources))
        retries, intake, pulled, sources = held
        return DispatcherStatistics(
            name=self._name,
            state=state,
            dispatched=self.dispatched,
            outstanding=self._tracker.count,
            retries_waiting=retries,
            submitted_waiting=intake,
            read_ahead=pulled,
            sources=sources,
            bucket=None if self._bucket is None else self._bucket.statistics(),
        )

    # -- Route: retries of jobs dispatched here come back through the rate limit -------------

    def _all_finished(self) -> None:  # the tracker's on_zero: called under the ledger lock
        if self._closed:
            self._wakeup.set()

    def requeue(self, job: Job[Any]) -> None:
        """A job of this dispatcher finished its retry backoff: it waits for a token again
        (called by the pool, on one of its Handoff threads)."""
        if self._stop.is_set():
            self._cancel(job, JobStatus.RETRY_WAIT, "dispatcher.stop")
            return
        if move(job, JobStatus.RETRY_WAIT, JobStatus.PENDING, self._clock.now()):
            with self._lock:
                self._retries.append(job)
            self._wakeup.set()
            if self._stop.is_set():  # stop() raced us: its drain may have missed this job
                self._drain_on_stop()

    # -- the pool's shutdown hooks (see PoolCore.add_shutdown_hooks) ---------------------------

    def _pool_stopped(self) -> None:
        """Every job of the pool is terminal: nothing is lost by stopping."""
        self.stop(DISPATCHER_JOIN_TIMEOUT)

    def _pool_closed(self) -> None:
        """The pool shut down: nothing more is admitted.  A dispatcher that was never
        started cancels the jobs it holds (nobody else would end them)."""
        with self._lock:
            self._closed = True
            self._sources.clear()
            started = self._started
        self._wakeup.set()
        self._reader_turn.set()
        if not started:
            self._drain_on_stop("pool.shutdown")

    # -- internals -------------------------------------------------------------------------------

    def _why_closed(self) -> str:
        return " (its pool is shut down)" if self._ledger.closed else ""

    def _admit(self, job: Job[Any]) -> None:  # caller holds _lock
        admit(job, self._ledger, _PENDING, self._now(), self, self._tracker)

    def _cancel(
        self, job: Job[Any], expected: JobStatus | frozenset[JobStatus], reason: str
    ) -> None:
        if cancel_waiting(job, expected, self._clock.now(), reason):
            with self._lock:
                self._leftovers.append(job)

    def _drain_on_stop(self, reason: str = "dispatcher.stop") -> None:
        with self._lock:
            held = [*self._retries, *self._intake, *self._pulled]
            self._retries.clear()
            self._intake.clear()
            self._pulled.clear()
            self._sources.clear()
        for job in held:
            self._cancel(job, WAITING_STATES, reason)

    def _run(self) -> None:
        events = self._events
        events.pool("dispatcher.started", dispatcher=self._name, pool=self._pool.name)
        try:
            while True:
                job = self._next_job()
                if job is None:
                    break
                # Stopped while it waited for its token, or while it was pulled from an
                # iterable: it is cancelled, never dispatched.
                if (self._bucket is not None and not self._throttle()) or self._stop.is_set():
                    self._cancel(job, JobStatus.PENDING, "dispatcher.stop")
                    break
                self._push(job)
                # Drop our reference before we wait for the next one: an idle dispatcher
                # must not keep the last job it dispatched (and its result) alive.
                job = None
        except BaseException as exc:  # chronos bug: say so, and account for what is held
            events.internal_error("dispatcher", exc)
            self._stop.set()
        finally:
            if self._stop.is_set():
                self._drain_on_stop()
            events.pool("dispatcher.stopped", dispatcher=self._name, dispatched=self.dispatched)

    def _next_job(self) -> Job[Any] | None:
        """The next job to dispatch, waiting for one; None when it is time to exit."""
        while True:
            if self._stop.is_set():
                return None
            with self._lock:
                self._sleeping = False
                queue = self._retries or self._intake or self._pulled
                job = queue.popleft() if queue else None
                if queue is self._pulled and self._reader_waiting:
                    self._reader_waiting = False
                    self._reader_turn.set()  # the reader may read ahead again
                if job is None:
                    if self._closed and not self._tracker.count and not self._sources:
                        return None
                    # Nothing to do: sleep.  Cleared under the lock that every hand-over
                    # takes, and after it every waker sets the Event, so none is lost;
                    # stop() sets _stop before the Event, hence the second look.
                    self._wakeup.clear()
                    if self._stop.is_set():
                        return None
                    self._sleeping = True
            if job is not None:
                # One cancelled while it waited here is skipped before it takes a token
                # (without a rate limit, _push's release_pending skips it).
                if self._bucket is None or job.status is _PENDING:
                    return job
                continue
            self._clock.wait_until(self._wakeup, None)

    # -- the reader: pulls from the iterables given to dispatch(), on its own thread ---------

    def _ensure_reader(self) -> None:
        """Start the reader if there is something to read and no reader yet."""
        with self._lock:
            if self._reader is not None or not self._sources or not self._started:
                return
            if self._stop.is_set():
                return
            reader = self._reader = threading.Thread(
                target=self._read_sources, name=f"{self._name}_reader", daemon=True
            )
        reader.start()

    def _read_sources(self) -> None:
        """Pull items from the sources, in order, while the dispatcher keeps up.  Runs the
        iterables' code (and so may block in it for as long as they do)."""
        while True:
            with self._lock:
                if self._stop.is_set() or not self._sources:
                    self._reader = None  # under the lock: dispatch() starts a new one
                    return
                source = self._sources[0]
                ready = len(self._pulled) < self._read_ahead()
                if not ready:
                    self._reader_waiting = True
                    self._reader_turn.clear()
            if not ready:  # far enough ahead: wait until the dispatcher takes an item
                self._reader_turn.wait(_READER_POLL)
                continue
            self._pull(source)

    def _read_ahead(self) -> int:
        """How many items the reader may hold ahead of the dispatcher: up to
        :data:`READ_AHEAD`, no more than the pool's queue has room for, and at least one (so
        a full queue still lets exactly one item wait, as backpressure)."""
        return max(1, min(READ_AHEAD, self._backend.room()))

    def _pull(self, source: Iterator[object]) -> None:
        try:
            item = next(source)
            job = _as_job(item)
        except StopIteration:
            self._drop_source(source, None)
            return
        except Exception as exc:
            self._drop_source(source, exc)
            return
        with self._lock:
            try:
                self._admit(job)
            except RuntimeError:  # the pool shut down: pulled, but never submitted
                self._leftovers.append(job)
                self._sources.clear()
                return
            except ValueError as exc:  # a Job yielded twice
                self._source_errors.append(exc)
                self._events.internal_error(f"{self._name}.source", exc)
                return
            stopped = self._stop.is_set()
            if not stopped:
                self._pulled.append(job)
        if stopped:  # pulled as we stopped: cancelled, as stop() does to what it holds
            self._cancel(job, WAITING_STATES, "dispatcher.stop")
            return
        self._wakeup.set()

    def _drop_source(self, source: Iterator[object], error: BaseException | None) -> None:
        with self._lock:
            if self._sources and self._sources[0] is source:
                self._sources.popleft()
            if error is not None:
                self._source_errors.append(error)
        self._wakeup.set()  # the dispatcher may be waiting for this source to end
        if error is not None:
            self._events.internal_error(f"{self._name}.source", error)

    def _throttle(self) -> bool:
        """Wait for a token of the rate limit; False if stopped meanwhile."""
        bucket = self._bucket
        assert bucket is not None
        while bucket.try_acquire(self._clock.now()) > 0.0:
            if self._clock.wait_until(self._stop, bucket.grant_time()):
                return False
        return True

    def _push(self, job: Job[Any]) -> None:
        if not release_pending(job, self._now()):
            return  # cancelled while it waited for its token
        self.dispatched += 1
        events = self._events
        if events.wants_dispatched:
            events.dispatched(job, self._name)
        # backend.put(job, stop=...) and threads.ensure_worker(), with their fast paths
        # inline (originals: MemoryBackend.has_room, ThreadBook.ensure_worker).
        backend = self._backend
        if backend.items.qsize() < backend.bound:
            backend.items.put(job)
        elif not backend.put(job, stop=self._stop):
            # Stopped while the queue was full, or the job was cancelled meanwhile.
            self._cancel(job, JobStatus.QUEUED, "dispatcher.stop")
            return
        threads = self._threads
        if len(threads.active) < threads.max_workers:
            threads.ensure_worker()
