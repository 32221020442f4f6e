"""Handoff: the threads that run what the timer must not.

When the timer sees an attempt pass its deadline it only fences it; deciding what follows
(the retry policy, which may be user code), logging it (the logger is the user's), resolving
the Future (done-callbacks are the user's), starting a replacement thread, and re-queueing a
retry that came due are all handed to a :class:`Handoff`.

A task may block for as long as the user's code does, so a Handoff keeps one idle thread in
reserve: a thread that takes a task first makes sure another one is idle, starting it if
need be (outside any lock), so one blocked task never holds up the next.  A blocked task
costs its own thread and nothing else; idle threads beyond one exit after a while.
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

_Task = tuple[Callable[..., object], tuple[Any, ...]] | None  # None: stop


class Handoff:
    """Runs tasks on its own threads, in order of submission, never two on one thread at once.

    Args:
        name: prefix of the threads' names.
        on_error: called (on the task's thread) with anything a task raised.

    Thread-safety: every method may be called from any thread.  :meth:`submit` never
    blocks and never starts a thread once :meth:`start` ran; start the Handoff from a
    thread that may (a worker, a submitter), never from the timer.
    """

    def __init__(self, name: str, on_error: Callable[[str, BaseException], None]) -> None:
        self._name = name
        self._on_error = on_error
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the four fields below; never held to start
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._stopping = False
        self._started = False
        self._numbers = itertools.count()

    @property
    def started(self) -> bool:
        return self._started

    def threads(self) -> list[threading.Thread]:
        """The Handoff's live threads."""
        with self._lock:
            return [t for t in self._threads if t.is_alive()]

    def start(self) -> None:
        """Start the first thread (idempotent).  Call it before the first :meth:`submit`."""
        with self._lock:
            if self._started or self._stopping:
                return
            self._started = True
            thread = self._new_thread()
        try:
            thread.start()
        except RuntimeError:  # at interpreter shutdown: tasks then wait for stop()'s join
            with self._lock:
                self._threads.discard(thread)
                self._started = False

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on a Handoff thread.  Never blocks."""
        self._tasks.put((fn, args))

    def stop(self, timeout: float) -> None:
        """Let the threads finish the tasks already submitted, then exit; wait up to
        ``timeout`` seconds for those that are idle (a blocked one is a daemon left behind).
        """
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(None)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _new_thread(self) -> threading.Thread:  # caller holds _lock
        thread = threading.Thread(
            target=self._run, name=f"{self._name}_{next(self._numbers)}", daemon=True
        )
        self._threads.add(thread)
        return thread

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while self._serve_one():
                pass
        finally:
            with self._lock:
                self._threads.discard(me)

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
        spare = None
        with self._lock:
            self._idle -= 1
            if task is not None and self._idle == 0 and not self._stopping:
                spare = self._new_thread()  # the task may block: keep one thread free
        if spare is not None:
            try:
                spare.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                with self._lock:
                    self._threads.discard(spare)
        if task is None:
            return False
        fn, args = task
        try:
            fn(*args)
        except BaseException as exc:  # a task's failure is reported, never fatal
            self._on_error(f"{self._name}", exc)
        return True
