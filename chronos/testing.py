"""Helpers for testing code that uses chronos (and for chronos's own tests).

:class:`FakeClock` is a :class:`chronos.Clock` whose time moves only when a test calls
:meth:`FakeClock.advance`, so tests of timeouts, backoff and rate limits are deterministic::

    clock = FakeClock()
    pool = WorkerPool(2, timeout=1.0, clock=clock)
    clock.advance(1.0)   # every attempt started before now has timed out
"""

from __future__ import annotations

import threading
import time

from chronos._validate import check_count, check_number, check_real

__all__ = ["FakeClock"]

# How often a FakeClock waiter looks at its Event while no advance() happens (real seconds).
_POLL = 0.001


class FakeClock:
    """A manually driven clock.

    ``wait_until(event, deadline)`` returns when ``event`` is set (seen within a millisecond
    of real time) or when :meth:`advance` moves the clock to the deadline or past it (at once).
    A real-time safety net (``max_real_wait``) makes a wait that nothing ends fail loudly
    instead of hanging a test.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, start: float = 0.0, *, max_real_wait: float = 30.0) -> None:
        """Create a clock reading ``start``.

        Args:
            start: the first reading, a finite number.
            max_real_wait: real seconds a :meth:`wait_until` may block before it raises
                TimeoutError, > 0.

        Raises:
            TypeError, ValueError: for a bad argument, naming it.
        """
        self._now = check_real("start", start)
        max_real_wait = check_number("max_real_wait", max_real_wait, minimum=0.0, inclusive=False)
        self._cond = threading.Condition()  # guards _now and _waiters; advance() notifies
        self._waiters = 0
        self._max_real_wait = max_real_wait

    def now(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0) and wake the waiters it concerns.

        Raises:
            TypeError, ValueError: ``seconds`` is not a finite number >= 0.
        """
        seconds = check_number("seconds", seconds, minimum=0.0, inclusive=True, finite=True)
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def set(self, now: float) -> None:
        """Jump to ``now`` (never backwards).

        Raises:
            TypeError, ValueError: ``now`` is not a finite number, or is earlier than the
                current reading.
        """
        now = check_real("now", now)
        with self._cond:
            if now < self._now:
                raise ValueError("a monotonic clock cannot go back")
            self._now = now
            self._cond.notify_all()

    @property
    def waiters(self) -> int:
        """How many threads are blocked in :meth:`wait_until` right now."""
        with self._cond:
            return self._waiters

    def wait_for_waiters(self, count: int, timeout: float = 5.0) -> bool:
        """Block (real time) until at least ``count`` threads wait on this clock.

        Returns:
            True once they do, False if ``timeout`` real seconds passed first.

        Raises:
            TypeError, ValueError: ``count`` is not an int >= 0, or ``timeout`` not a number
                >= 0.
        """
        check_count("count", count, 0)
        timeout = check_number("timeout", timeout, minimum=0.0, inclusive=True)
        end = time.monotonic() + timeout
        with self._cond:
            while self._waiters < count:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, _POLL))
        return True

    def wait_until(self, wakeup: threading.Event, deadline: float | None) -> bool:
        real_end = time.monotonic() + self._max_real_wait
        with self._cond:
            self._waiters += 1
            self._cond.notify_all()
            try:
                while True:
                    if wakeup.is_set():
                        return True
                    if deadline is not None and self._now >= deadline:
                        return False
                    if time.monotonic() >= real_end:
                        raise TimeoutError(
                            f"FakeClock.wait: nothing advanced the clock or set the event in "
                            f"{self._max_real_wait}s of real time (now={self._now})"
                        )
                    self._cond.wait(_POLL)
            finally:
                self._waiters -= 1

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now()})"
