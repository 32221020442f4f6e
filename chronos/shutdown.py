"""Opt-in graceful shutdown on SIGINT/SIGTERM.  Never at import; main thread only.

::

    with WorkerPool(4) as pool, GracefulShutdown(pool, dispatcher, grace=5.0) as stop:
        dispatcher.start()
        dispatcher.dispatch(jobs)
        dispatcher.close()
        dispatcher.join()
    if stop.interrupted:
        sys.exit(130)

The first signal stops the dispatchers (their undispatched jobs are cancelled), cancels the
pool's queued jobs and jobs waiting to retry, and gives running jobs ``grace`` seconds to
finish; after that they are cancelled and their threads abandoned.  A second signal does that
at once.  The signal handler takes no lock: it records the signal and writes one byte to a
pipe that a watcher thread reads; the watcher does the work, so a signal is safe whatever the
main thread was doing when it arrived.  The previous handlers are restored when the block
exits; after a signal, exiting the block first waits for the pool's shutdown to finish (a
second signal still forces it).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

from chronos._validate import check_number
from chronos.dispatcher import Dispatcher
from chronos.pool import WorkerPool

__all__ = ["GracefulShutdown"]

_Handler = Any  # what signal.signal returns: a callable, an int, a Handlers member or None

#: Signals no handler can be installed for.
_UNCATCHABLE = frozenset(
    sig for sig in (getattr(signal, "SIGKILL", None), getattr(signal, "SIGSTOP", None)) if sig
)


def _check_signals(signals: Iterable[object]) -> tuple[int, ...]:
    """An iterable of signal numbers that a handler can be installed for, as a tuple.

    Raises:
        TypeError, ValueError: naming ``signals``.
    """
    try:
        values = tuple(signals)
    except TypeError:
        raise TypeError(
            f"signals must be an iterable of signal numbers, got {type(signals).__name__}"
        ) from None
    valid = signal.valid_signals()
    checked: list[int] = []
    for sig in values:
        if isinstance(sig, bool) or not isinstance(sig, int):
            raise TypeError(f"signals must hold signal numbers, got {type(sig).__name__} {sig!r}")
        if sig not in valid:
            raise ValueError(f"signals must hold valid signal numbers, got {sig!r}")
        if sig in _UNCATCHABLE:
            raise ValueError(f"signals must hold signals that can be caught, got {sig!r}")
        checked.append(sig)
    return tuple(checked)


class GracefulShutdown:
    """Context manager that turns SIGINT/SIGTERM into a graceful, then immediate, shutdown.

    Args:
        pool: the pool to shut down.
        dispatchers: dispatchers feeding it, stopped first.
        grace: seconds running jobs may go on after the first signal.
        signals: the signals to handle.

    Raises:
        TypeError, ValueError: for a bad argument, naming it (``signals`` must hold valid
            signal numbers that can be caught: not SIGKILL nor SIGSTOP).
        RuntimeError: entered from a thread other than the main thread (Python delivers
            signals to the main thread only), or entered a second time (a guard is used once).

    Thread-safety: enter and exit on the main thread; the properties may be read anywhere.
    """

    def __init__(
        self,
        pool: WorkerPool,
        *dispatchers: Dispatcher,
        grace: float = 5.0,
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        if not isinstance(pool, WorkerPool):
            raise TypeError(f"pool must be a chronos.WorkerPool, got {type(pool).__name__}")
        for d in dispatchers:
            if not isinstance(d, Dispatcher):
                raise TypeError(f"dispatchers must be chronos.Dispatcher, got {type(d).__name__}")
        self._pool = pool
        self._dispatchers = dispatchers
        self.grace = check_number("grace", grace, minimum=0.0, inclusive=True)
        self._signals = _check_signals(signals)
        self._entered = False  # main thread only: set by the first __enter__
        self._previous: dict[int, _Handler] = {}
        self._received: list[int] = []  # appended by the handler only (list.append is atomic)
        self._pipe: tuple[int, int] | None = None  # the handler's only other act: one byte here
        self._exiting = False
        self._watcher: threading.Thread | None = None
        self.requested = threading.Event()  # set (by the watcher) after the first signal
        self.forced = threading.Event()  # set after the second

    @property
    def interrupted(self) -> bool:
        """True once a signal arrived."""
        return bool(self._received)

    @property
    def signals_received(self) -> list[int]:
        """The signal numbers received, in order."""
        return list(self._received)

    def __enter__(self) -> GracefulShutdown:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "GracefulShutdown must be entered from the main thread: "
                "Python runs signal handlers only there"
            )
        if self._entered:
            raise RuntimeError("a GracefulShutdown can be entered once; it was already entered")
        self._entered = True
        self._pipe = os.pipe()
        self._watcher = threading.Thread(
            target=self._watch, name=f"{self._pool.name}_signals", daemon=True
        )
        self._watcher.start()
        try:
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except BaseException:
            self._restore_and_stop_watcher()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._received:
            # Keep the handlers until the pool is done, so a second signal can still force it.
            self.requested.wait()
            self._pool.wait_for_shutdown()
        self._restore_and_stop_watcher()

    def _restore_and_stop_watcher(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        self._exiting = True
        if self._pipe is not None:
            os.write(self._pipe[1], b"x")
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes, possibly inside a lock the main
        # thread holds: so it takes no lock at all, it only records and pokes the watcher.
        self._received.append(signum)
        if self._pipe is not None:
            os.write(self._pipe[1], b"s")

    def _watch(self) -> None:
        assert self._pipe is not None
        read_fd = self._pipe[0]
        graceful_started = False
        while True:
            os.read(read_fd, 512)
            count = len(self._received)
            if count >= 2:
                self.requested.set()
                self.forced.set()
                self._stop_dispatchers()
                self._pool.terminate()
                return
            if count == 1 and not graceful_started:
                graceful_started = True
                self._stop_dispatchers()
                self._pool.shutdown(wait=False, cancel_futures=True, grace=self.grace)
                self.requested.set()
            if self._exiting:
                return

    def _stop_dispatchers(self) -> None:
        for dispatcher in self._dispatchers:
            dispatcher.stop(timeout=1.0)
