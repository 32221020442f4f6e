"""A timer thread: delayed calls in one heap.

A pool's timer keeps attempt deadlines; the memory backend has one of its own for delayed
jobs (retries in their backoff).  A timer only keeps time.  It never runs user code and
never blocks on anything a user controls: what it calls is chronos's own short,
non-blocking bookkeeping (fencing an attempt that passed its deadline, handing a due job to
the pool's :class:`chronos.pool.handoff.Handoff`), and anything that may run user code
(retry policies, loggers, done-callbacks) or start a thread is handed on from there.

Entries arrive through an inbox (a C ``SimpleQueue``: no Python-level lock on the caller's
path) and the timer thread alone owns the heap; it wakes when an entry comes due, or when a
new one is earlier than the one it sleeps towards.  Deadlines are armed per worker slot, not
per attempt (see :func:`chronos.pool.attempts.deadline_due`): an attempt whose deadline is
later than its slot's next look adds nothing, so a pool's heap holds about one entry per
worker.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
from collections.abc import Callable
from typing import Any

from chronos.clock import Clock

__all__ = ["Timer"]

#: ``(when, seq, callback, args)``.  ``seq`` is unique, so entries never compare further.
_Entry = tuple[float, int, Callable[..., None], tuple[Any, ...]]
#: Wake the timer to empty the inbox when this many entries wait there, whatever their time.
_INBOX_LIMIT = 4096


class Timer:
    """A heap of delayed calls on one lazily started thread.

    Args:
        clock: the clock that times are read on.
        on_error: called with any exception a callback raised; the timer keeps going.
        name: the thread's name.

    Thread-safety: :meth:`call_at`, :meth:`stop` and the properties may be called from any
    thread.  Callbacks run on the timer thread, one at a time, and must be quick, never
    block and never run user code.
    """

    def __init__(
        self,
        clock: Clock,
        on_error: Callable[[str, BaseException], None],
        name: str,
    ) -> None:
        self._clock = clock
        self._on_error = on_error
        self._name = name
        self._inbox: queue.SimpleQueue[_Entry] = queue.SimpleQueue()
        self._heap: list[_Entry] = []  # the timer thread's only
        self._seq = itertools.count()  # next() is atomic in CPython
        self._wakeup = threading.Event()
        self._next_wake = math.inf  # written by the timer thread only
        self._start_lock = threading.Lock()  # guards _thread and _stopping
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def pending(self) -> int:
        """How many entries the timer holds (approximate while others add entries)."""
        return len(self._heap) + self._inbox.qsize()

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the timer thread once the clock reaches ``when``.

        ``callback`` must be quick and run no user code (see the module docstring).  Never
        blocks beyond starting the timer thread the first time.
        """
        self._inbox.put((when, next(self._seq), callback, args))
        if self._thread is None:
            self._ensure_started()
        if when < self._next_wake or self._inbox.qsize() >= _INBOX_LIMIT:
            self._wakeup.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread (dropping what is left) and join it.  Idempotent.

        Returns:
            True if the thread is gone (or never started).
        """
        with self._start_lock:
            self._stopping = True
            thread = self._thread
        self._wakeup.set()
        if thread is None or thread is threading.current_thread() or thread.ident is None:
            return True  # (never started: Python refuses new threads late in its exit)
        thread.join(timeout)
        return not thread.is_alive()

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopping:
                return
            thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread = thread
        # Started outside the lock: nothing waits for _start_lock while a thread starts.
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown" (3.12.0-2)
            with self._start_lock:
                if self._thread is thread:
                    self._thread = None

    def _run(self) -> None:
        clock = self._clock
        heap = self._heap
        while not self._stopping:
            self._wakeup.clear()
            # From here until _next_wake is set again, whoever adds an entry wakes us, so an
            # entry added while we look is never missed.
            self._next_wake = math.inf
            self._take_inbox()
            now = clock.now()
            while heap and heap[0][0] <= now and not self._stopping:
                _, _, callback, args = heapq.heappop(heap)
                try:
                    callback(*args)
                except BaseException as exc:  # a bug must not stop every later timeout
                    self._on_error("timer", exc)
                del callback, args  # an idle timer holds nothing of a job
                if not self._inbox.empty():
                    self._take_inbox()
            if self._stopping:
                break
            if not self._inbox.empty():
                continue
            next_due = heap[0][0] if heap else math.inf
            self._next_wake = next_due
            clock.wait_until(self._wakeup, None if next_due == math.inf else next_due)
        heap.clear()

    def _take_inbox(self) -> None:
        """Move the inbox into the heap."""
        heap = self._heap
        inbox = self._inbox
        try:
            while True:
                heapq.heappush(heap, inbox.get_nowait())
        except queue.Empty:
            pass
