"""Handoff: the threads that run what the timer must not.

When the timer sees an attempt pass its deadline it only fences it; deciding what follows
(the retry policy, which may be user code), logging it (the logger is the user's), resolving
the Future (done-callbacks are the user's), starting a replacement thread, and re-queueing a
retry that came due are all handed to a :class:`Handoff`.

A task may block for as long as the user's code does.  So a Handoff has a watchdog: while
every one of its threads is busy and tasks wait, the watchdog looks every :data:`STALL`
seconds, and if none finished meanwhile it starts one more thread (outside any lock).  A
blocked task costs its own thread and delays the others by at most about ``STALL``; a burst
of quick tasks is served by the threads there are, without a thread start per task.  Idle
threads beyond one exit after :data:`IDLE_TIMEOUT`.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Handoff"]

#: Real seconds an idle thread beyond the first waits for a task before it exits.
IDLE_TIMEOUT = 5.0
#: Real seconds the watchdog lets every thread stay busy, with tasks waiting and none
#: finished, before it starts another thread.
STALL = 0.05

_Task = tuple[Callable[..., object], tuple[Any, ...]] | None  # None: stop


class Handoff:
    """Runs tasks on its own threads, in order of submission.

    Args:
        name: prefix of the threads' names.
        on_error: called (on the task's thread) with anything a task raised.

    Thread-safety: every method may be called from any thread.  :meth:`submit` never
    blocks and never starts a thread; start the Handoff (:meth:`start`) from a thread that
    may, never from the timer.
    """

    def __init__(self, name: str, on_error: Callable[[str, BaseException], None]) -> None:
        self._name = name
        self._on_error = on_error
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the fields below; never held to start a thread
        self._threads: set[threading.Thread] = set()
        self._idle = 0  # threads waiting for a task
        self._finished = 0  # tasks finished, for the watchdog to see progress
        self._stopping = False
        self._started = False
        self._numbers = itertools.count()
        self._all_busy = threading.Event()  # set when a thread takes a task and none is idle
        self._stop = threading.Event()

    @property
    def started(self) -> bool:
        return self._started

    def threads(self) -> list[threading.Thread]:
        """The Handoff's live threads (its watchdog included)."""
        with self._lock:
            return [t for t in self._threads if t.is_alive()]

    def start(self) -> None:
        """Start the first thread and the watchdog (idempotent).  Call it before the first
        :meth:`submit`, from a thread that may start threads."""
        with self._lock:
            if self._started or self._stopping:
                return
            self._started = True
            worker = self._new_thread(self._serve, "")
            watchdog = self._new_thread(self._watch, "_watchdog")
        for thread in (worker, watchdog):
            self._start_thread(thread)

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on a Handoff thread.  Never blocks."""
        self._tasks.put((fn, args))

    def stop(self, timeout: float) -> None:
        """Let the threads finish the tasks already submitted, then exit; wait up to
        ``timeout`` seconds for each (a blocked one is a daemon left behind)."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
        self._stop.set()
        self._all_busy.set()
        for _ in threads:
            self._tasks.put(None)
        for thread in threads:
            if thread is not threading.current_thread() and thread.ident is not None:
                thread.join(timeout)

    # -- internals ---------------------------------------------------------------------------

    def _new_thread(self, target: Callable[[], None], suffix: str) -> threading.Thread:
        # Caller holds _lock.
        name = f"{self._name}{suffix or '_' + str(next(self._numbers))}"
        thread = threading.Thread(target=self._exit_when_done, args=(target,), name=name)
        thread.daemon = True
        self._threads.add(thread)
        return thread

    def _start_thread(self, thread: threading.Thread) -> None:
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            with self._lock:
                self._threads.discard(thread)

    def _exit_when_done(self, target: Callable[[], None]) -> None:
        try:
            target()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _serve(self) -> None:
        while self._serve_one():
            pass

    def _serve_one(self) -> bool:
        """Wait for a task and run it; False when this thread should exit."""
        with self._lock:
            self._idle += 1
        try:
            task = self._tasks.get(timeout=IDLE_TIMEOUT)
        except queue.Empty:
            with self._lock:
                self._idle -= 1
                return not (self._idle >= 1 or self._stopping)  # one idle thread stays
        with self._lock:
            self._idle -= 1
            all_busy = self._idle == 0
        if task is None:
            return False
        if all_busy:
            self._all_busy.set()  # the watchdog looks whether we get stuck
        fn, args = task
        try:
            fn(*args)
        except BaseException as exc:  # a task's failure is reported, never fatal
            self._on_error(self._name, exc)
        finally:
            with self._lock:
                self._finished += 1
        return True

    def _watch(self) -> None:
        """While every thread is busy, look every :data:`STALL` seconds; when tasks wait and
        none finished meanwhile (a task blocked in user code), add a thread."""
        while not self._stop.is_set():
            self._all_busy.wait(IDLE_TIMEOUT)
            self._all_busy.clear()
            while not self._stop.is_set():  # every STALL, for as long as all are busy
                with self._lock:
                    finished = self._finished
                    if self._idle:
                        break
                if self._stop.wait(STALL):
                    return
                extra = None
                with self._lock:
                    stalled = self._finished == finished and not self._idle
                    if stalled and not self._tasks.empty() and not self._stopping:
                        extra = self._new_thread(self._serve, "")
                if extra is not None:
                    self._start_thread(extra)
