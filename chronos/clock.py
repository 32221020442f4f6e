"""Time, injected.

This is the only module of chronos that reads the system clock.  Everything that needs the
time or needs to wait takes a :class:`Clock`, so tests can drive it with
:class:`chronos.testing.FakeClock`.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

_TIMEOUT_MAX = threading.TIMEOUT_MAX


class Clock(Protocol):
    """What chronos needs from a clock.

    Thread-safety: implementations must allow every method to be called from any thread.
    """

    def now(self) -> float:
        """Monotonic seconds; only differences between two readings mean anything."""
        ...

    def wait_until(self, wakeup: threading.Event, deadline: float | None) -> bool:
        """Block until ``wakeup`` is set or this clock reads ``deadline`` or later.

        The deadline is absolute (a reading of :meth:`now`, None for no deadline), so time
        that passes between computing it and calling this is not added to the wait.  The
        Event is never changed; callers that use it as a "look again" signal clear it before
        they look at their state, and tolerate spurious wake-ups.

        Returns:
            True if ``wakeup`` was set.
        """
        ...


class SystemClock:
    """The real monotonic clock, waiting with ``Event.wait``.

    Thread-safety: stateless; share one instance freely.
    """

    __slots__ = ()

    #: ``time.monotonic`` itself: ``clock.now()`` is then a direct C call.
    now = staticmethod(time.monotonic)

    def wait_until(self, wakeup: threading.Event, deadline: float | None) -> bool:
        if deadline is None:
            return wakeup.wait()
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            return wakeup.is_set()
        return wakeup.wait(join_timeout(timeout))  # beyond TIMEOUT_MAX: no limit

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def join_timeout(seconds: float | None) -> float | None:
    """``seconds`` for a ``Thread.join``/``Event.wait``, or None (no limit) beyond
    ``threading.TIMEOUT_MAX`` (about 292 years), where they would raise OverflowError."""
    return None if seconds is not None and seconds >= _TIMEOUT_MAX else seconds


def wall_time() -> float:
    """Wall-clock seconds since the epoch (``time.time()``).

    For what is compared across processes on one machine (a durable store's leases and due
    times); unlike :meth:`Clock.now` it can jump when the system time is set.
    """
    return time.time()
