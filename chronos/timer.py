"""The pool's timer thread: attempt deadlines and delayed re-entries (retry backoff).

One thread per pool does both, so a per-job timeout costs no thread handoff and no heap
entry: each worker publishes its running attempt (with its deadline, if any) on its slot,
and the timer sleeps until the earliest deadline among the slots or the earliest delayed
call, whichever comes first.  A worker that arms a deadline earlier than the one the timer
sleeps towards wakes it (:meth:`Timer.deadline_armed`); with one timeout for every job that
never happens after the first, because later attempts have later deadlines.

Retries wait in a heap of ``(when, seq, callback, args)``; they hold no worker thread.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Callable
from typing import Any, Protocol

from chronos.clock import Clock

__all__ = ["Timer"]


class Watched(Protocol):
    """A worker slot as the timer sees it: ``current`` is ``(job, attempt)`` or None."""

    current: tuple[Any, Any] | None


#: A delayed call that came due, ``(callback, args)``.
_Call = tuple[Callable[..., None], tuple[Any, ...]]
#: A watched slot and the attempt it published, past its deadline.
_Expired = tuple[Watched, tuple[Any, Any]]


class Timer:
    """Deadline watchdog and delay heap on one lazily started thread.

    Args:
        clock: the pool's clock.
        on_deadline: called on the timer thread as ``on_deadline(slot, current)`` when the
            attempt in ``current`` passed its deadline.  It must clear ``slot.current`` (or
            the worker must have), or it is called again.
        on_error: called with any exception a callback raised; the timer keeps going.
        name: the thread's name.

    Thread-safety: every public method may be called from any thread.  Callbacks run on the
    timer thread, outside the timer's lock.
    """

    def __init__(
        self,
        clock: Clock,
        on_deadline: Callable[[Any, tuple[Any, Any]], None],
        on_error: Callable[[str, BaseException], None],
        name: str,
    ) -> None:
        self._clock = clock
        self._on_deadline = on_deadline
        self._on_error = on_error
        self._name = name
        self._lock = threading.Lock()  # guards _heap, _thread, _stopping
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._slots: tuple[Watched, ...] = ()  # replaced whole (copy on write) under _lock
        self._wakeup = threading.Event()
        self._next_wake = math.inf  # written by the timer thread only
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the timer thread once the clock reaches ``when``."""
        with self._lock:
            if self._stopping:
                return
            heapq.heappush(self._heap, (when, next(self._seq), callback, args))
            is_first = self._heap[0][0] == when
            self._ensure_started()
        if is_first and when < self._next_wake:
            self._wakeup.set()

    def watch(self, slot: Watched) -> None:
        """Start watching ``slot.current`` for deadlines."""
        with self._lock:
            self._slots = (*self._slots, slot)

    def unwatch(self, slot: Watched) -> None:
        """Stop watching ``slot``."""
        with self._lock:
            self._slots = tuple(s for s in self._slots if s is not slot)

    def deadline_armed(self, deadline: float) -> None:
        """A watched slot just published an attempt that ends at ``deadline``."""
        if self._thread is None:
            with self._lock:
                if self._stopping:
                    return
                self._ensure_started()
        if deadline < self._next_wake:
            self._wakeup.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread (dropping delayed calls) and join it.  Idempotent.

        Returns:
            True if the thread is gone (or never started).
        """
        with self._lock:
            self._stopping = True
            self._heap.clear()
            thread = self._thread
        self._wakeup.set()
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _ensure_started(self) -> None:  # caller holds _lock
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        clock = self._clock
        while True:
            self._wakeup.clear()
            # From here until _next_wake is set again, any worker that arms a deadline wakes
            # us, so a deadline published while we scan is never missed.
            self._next_wake = math.inf
            work = self._collect(clock.now())
            if work is None:
                return
            due, expired, next_due = work
            if due or expired:
                self._fire(due, expired)
                continue
            # Nothing of a job is held from here (the scan ran in _collect, whose locals are
            # gone): an idle timer keeps no finished job, nor its result, alive.
            self._next_wake = next_due
            clock.wait_until(self._wakeup, None if next_due == math.inf else next_due)

    def _collect(self, now: float) -> tuple[list[_Call], list[_Expired], float] | None:
        """The delayed calls due and the attempts past their deadline at ``now``, and when
        to look next; None once the timer is stopping."""
        due: list[_Call] = []
        with self._lock:
            if self._stopping:
                return None
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, callback, args = heapq.heappop(heap)
                due.append((callback, args))
            next_due = heap[0][0] if heap else math.inf
            slots = self._slots
        expired: list[_Expired] = []
        for slot in slots:
            current = slot.current
            if current is None:
                continue
            deadline = current[1].deadline
            if deadline is None:
                continue
            if deadline <= now:
                expired.append((slot, current))
            elif deadline < next_due:
                next_due = deadline
        return due, expired, next_due

    def _fire(self, due: list[_Call], expired: list[_Expired]) -> None:
        for slot, current in expired:
            try:
                self._on_deadline(slot, current)
            except BaseException as exc:  # a bug must not stop every later timeout
                self._on_error("timer.on_deadline", exc)
        for callback, args in due:
            try:
                callback(*args)
            except BaseException as exc:
                self._on_error("timer.callback", exc)
