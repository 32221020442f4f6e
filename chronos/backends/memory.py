"""The in-memory backend (the default): a bounded queue that only costs when full, plus a
heap of delayed jobs on a timer thread of its own.

``queue.Queue`` takes two Python-level Condition round trips per item; a job queue is the
hottest path of the pool, so this one keeps the ready jobs in a ``queue.SimpleQueue`` (C)
and enforces the bound beside it: producers look at the size, and only a producer that
finds the queue full takes the Condition and waits; a taker takes it only when a producer
waits.  Producers racing past the size check together may overshoot the bound by one job
each.

Delayed jobs (``put(job, not_before=...)``: retries in their backoff) wait on a
:class:`chronos.timer.Timer` started the first time one is put.  The backend holds them
*weakly*: every unfinished job is held by its pool's ledger, so a job cancelled during its
delay is freed at once, not when the delay ends.  When one comes due it goes to ``on_due``
(the pool sends it back through its route) or, without ``on_due``, to the ready queue.

Thread-safety: every method may be called from any thread.  ``on_due`` is called on the
backend's timer thread: it must be quick, never block and run no user code.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from chronos.backends.base import BackendStatistics, Claim, FinishResult
from chronos.clock import SYSTEM_CLOCK, Clock
from chronos.job import Job
from chronos.stats import AtomicCounter
from chronos.timer import Timer

__all__ = ["MemoryBackend"]

_AnyJob = Job[Any]
#: How many finished claims the backend remembers, to answer a repeated finish DUPLICATE.
_FINISHED_MEMORY = 10_000


def _ignore_error(where: str, error: BaseException) -> None:
    """The default ``on_error``: the timer's callbacks here are chronos's own."""


class MemoryBackend:
    """Jobs of one process, in memory: the default :class:`chronos.backends.Backend`.

    Args:
        maxsize: the bound of ready jobs (0: unbounded).
        clock: the clock that not-before times are read on.
        on_due: called with each delayed job when it comes due (on the timer thread).
        on_error: told of anything ``on_due`` raises (the timer goes on).
        name: the timer thread's name.

    Thread-safety: see the module docstring.  ``None`` in the ready queue is the stop
    sentinel that :meth:`close` puts; every taker passes it on to the next.
    """

    __slots__ = (
        "_applied",
        "_claimed",
        "_closed",
        "_delayed",
        "_duplicates",
        "_fenced",
        "_finished",
        "_lease_lock",
        "_not_full",
        "_on_due",
        "_timer",
        "_tokens",
        "_waiting",
        "bound",
        "items",
        "maxsize",
    )

    def __init__(
        self,
        maxsize: int = 0,
        *,
        clock: Clock = SYSTEM_CLOCK,
        on_due: Callable[[_AnyJob], None] | None = None,
        on_error: Callable[[str, BaseException], None] = _ignore_error,
        name: str = "chronos-memory-backend",
    ) -> None:
        self.maxsize = maxsize
        #: ``maxsize``, or a bound never reached when the queue is unbounded.
        self.bound = maxsize if maxsize > 0 else sys.maxsize
        #: The ready queue itself, for the hot paths of the pool's ``submit`` and the
        #: Dispatcher: while :meth:`has_room`, a producer may ``items.put(job)`` directly
        #: (what :meth:`put` does then).  Read-only.
        self.items: queue.SimpleQueue[_AnyJob | None] = queue.SimpleQueue()
        self._not_full = threading.Condition()  # guards _waiting; producers wait on it
        self._waiting = 0  # producers blocked in put()
        self._on_due = on_due
        self._timer = Timer(clock, on_error, f"{name}_delays")
        self._delayed = AtomicCounter()  # delayed jobs not yet due
        self._closed = False
        # The lease half, used only by claim(): tokens of live claims, and the answers given.
        self._lease_lock = threading.Lock()  # guards the four fields below
        self._tokens = itertools.count(1)
        self._claimed: dict[int, int] = {}  # job id -> live token
        #: job id -> token, of the latest finished claims (a repeat is a DUPLICATE).
        self._finished: OrderedDict[int, int] = OrderedDict()
        self._applied = self._duplicates = self._fenced = 0

    # -- the queue -------------------------------------------------------------------------------

    def put(
        self,
        job: _AnyJob,
        *,
        not_before: float | None = None,
        stop: threading.Event | None = None,
    ) -> bool:
        """See :meth:`chronos.backends.Backend.put`."""
        if self._closed:
            return False  # (a closed backend takes nothing: its takers are gone)
        if not_before is not None:
            self._delayed.increment()
            self._timer.call_at(not_before, self._due, weakref.ref(job))
            return True
        items = self.items
        maxsize = self.maxsize
        if maxsize <= 0 or items.qsize() < maxsize:
            items.put(job)
            return True
        with self._not_full:
            self._waiting += 1
            try:
                while items.qsize() >= maxsize:
                    if job.status.is_terminal or (stop is not None and stop.is_set()):
                        return False
                    self._not_full.wait()
            finally:
                self._waiting -= 1
            items.put(job)
        return True

    def put_nowait(self, job: _AnyJob) -> None:
        """See :meth:`chronos.backends.Backend.put_nowait`."""
        self.items.put(job)

    def has_room(self) -> bool:
        """Whether a :meth:`put` would not wait now: the fast path's test.  Its inlined
        copies (``items.qsize() < bound``, then ``items.put(job)``): ``WorkerPool.submit``
        and ``Dispatcher._push``."""
        return self.items.qsize() < self.bound

    def take(self) -> _AnyJob | None:
        """See :meth:`chronos.backends.Backend.take`."""
        job = self.items.get()
        if job is None:  # the stop sentinel: pass it on to the next taker
            self.items.put(None)
            return None
        if self._waiting:
            with self._not_full:
                self._not_full.notify()
        return job

    def room(self) -> int:
        """See :meth:`chronos.backends.Backend.room`."""
        return max(0, self.bound - self.items.qsize())

    def qsize(self) -> int:
        """How many jobs are ready (approximate while others put and take)."""
        return self.items.qsize()

    def wake_putters(self) -> None:
        """See :meth:`chronos.backends.Backend.wake_putters`."""
        with self._not_full:
            self._not_full.notify_all()

    def close(self) -> None:
        """See :meth:`chronos.backends.Backend.close`.  Stops the delay timer (without
        waiting for it)."""
        if not self._closed:
            self._closed = True
            self.items.put(None)
            self._timer.stop(0)
        self.wake_putters()

    def stop_takers(self) -> None:
        """Put the stop sentinel (every taker leaves once the ready jobs before it are
        taken) without closing the backend; takes no lock, so a finalizer may call it."""
        self.items.put(None)

    def stop_timer(self, timeout: float | None) -> bool:
        """Stop the delay timer and join it for up to ``timeout`` seconds; True if gone."""
        return self._timer.stop(timeout)

    def threads(self) -> list[threading.Thread]:
        """The backend's own live threads (its delay timer, once started)."""
        thread = self._timer.thread
        return [thread] if thread is not None and thread.is_alive() else []

    def _due(self, job_ref: weakref.ref[_AnyJob]) -> None:
        """On the timer thread: a delayed job's time came."""
        self._delayed.decrement()
        job = job_ref()
        if job is None or self._closed:
            return  # cancelled meanwhile (and freed), or the backend is closed
        on_due = self._on_due
        if on_due is None:
            self.items.put(job)
        else:
            on_due(job)

    # -- the lease (trivial in one process) ---------------------------------------------------

    def claim(self, limit: int, timeout: float | None = None) -> list[Claim[_AnyJob]]:
        """See :meth:`chronos.backends.Backend.claim`."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        claims: list[Claim[_AnyJob]] = []
        try:
            first = self.items.get(timeout=timeout)
        except queue.Empty:
            return claims
        item: _AnyJob | None = first
        while item is not None:
            claims.append(self._claimed_one(item))
            if len(claims) >= limit:
                break
            try:
                item = self.items.get_nowait()
            except queue.Empty:
                break
        if item is None:
            self.items.put(None)  # the stop sentinel stays for the other takers
        if self._waiting:
            with self._not_full:
                self._not_full.notify_all()
        return claims

    def _claimed_one(self, job: _AnyJob) -> Claim[_AnyJob]:
        with self._lease_lock:
            token = next(self._tokens)
            self._claimed[job.id] = token
        return Claim(job, token)

    def heartbeat(self, claims: Sequence[Claim[_AnyJob]]) -> list[Claim[_AnyJob]]:
        """See :meth:`chronos.backends.Backend.heartbeat`: in memory a lease never expires;
        a claim is lost only if it was finished or released."""
        with self._lease_lock:
            return [c for c in claims if self._claimed.get(c.job.id) != c.token]

    def finish(self, claim: Claim[_AnyJob]) -> FinishResult:
        """See :meth:`chronos.backends.Backend.finish`."""
        job_id = claim.job.id
        with self._lease_lock:
            if self._claimed.get(job_id) == claim.token:
                del self._claimed[job_id]
                self._finished[job_id] = claim.token
                if len(self._finished) > _FINISHED_MEMORY:
                    self._finished.popitem(last=False)
                self._applied += 1
                return FinishResult.APPLIED
            if self._finished.get(job_id) == claim.token:
                self._duplicates += 1
                return FinishResult.DUPLICATE
            self._fenced += 1
            return FinishResult.FENCED

    def release(self, claims: Sequence[Claim[_AnyJob]]) -> None:
        """See :meth:`chronos.backends.Backend.release`."""
        released = []
        with self._lease_lock:
            for claim in claims:  # (a claim listed twice is released once)
                if self._claimed.get(claim.job.id) == claim.token:
                    del self._claimed[claim.job.id]
                    released.append(claim.job)
        for job in released:
            self.items.put(job)

    def recover(self) -> int:
        """See :meth:`chronos.backends.Backend.recover`: nothing to recover in memory (no
        lease expires; delayed jobs are promoted by the timer when due)."""
        return 0

    def statistics(self) -> BackendStatistics:
        """See :meth:`chronos.backends.Backend.statistics`."""
        ready = self.items.qsize()
        if self._closed and ready:
            ready -= 1  # the stop sentinel
        with self._lease_lock:
            lease = (len(self._claimed), self._applied, self._duplicates, self._fenced)
        claimed, applied, duplicates, fenced = lease
        return BackendStatistics(
            kind="memory",
            ready=ready,
            delayed=max(0, self._delayed.value),
            claimed=claimed,
            waiting_producers=self._waiting,
            maxsize=self.maxsize,
            closed=self._closed,
            applied=applied,
            duplicates=duplicates,
            fenced=fenced,
        )

    def __repr__(self) -> str:
        return f"<MemoryBackend ready={self.items.qsize()} maxsize={self.maxsize}>"
