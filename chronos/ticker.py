"""The Dispatcher's throttle: a token bucket with strict GCRA semantics.

Pure logic over times you pass in; the Dispatcher does the waiting, on an Event, so that
shutdown wakes it at once.

The bucket is the GCRA ("virtual scheduling") form of a token bucket with ``rate`` tokens a
second and room for ``burst``.  It keeps the theoretical arrival time (TAT) of the next
token.  A grant is allowed from ``burst - 1`` periods before the TAT, and moves the TAT to
``max(TAT, now) + period`` (``period = 1 / rate``).  The guarantees, for a bucket started
(or restarted) full at ``s``, are about the clock readings passed to
:meth:`TokenBucket.try_acquire` that it granted:

- any window of ``w`` seconds holds at most ``floor(w * rate) + burst`` grants.  With
  ``burst=1``: no two grants closer than the period, whatever the caller does;
- by time ``t`` at most ``rate * (t - s) + burst`` grants have been made in all.

A grant may come up to a nanosecond early (``_TOLERANCE``: float rounding of clock readings),
so "closer than the period" means closer than ``period - 1e-9`` seconds.

While the caller comes back in time (not after the TAT), grants stay on a fixed grid
``origin + k * period``, counted in whole periods so that no rounding accumulates.  A grant
made after the TAT (the bucket had filled up: after an idle spell, or a wake-up more than
``burst - 1`` periods late) moves the grid's origin to that grant, and the next token is due
a full period after it.  Lateness is therefore never caught up beyond the bucket's capacity:
with ``burst=1`` a late caller gets its token late and the next one a full period later, so
a caller that keeps waking up late gets less than ``rate``.  A ``burst`` of ``b`` lets a
caller come back up to ``b - 1`` periods late at no cost to the long-run rate (it then takes
the tokens that piled up back to back), at the price of up to ``b`` grants in a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chronos._validate import check_count, check_number, check_real

__all__ = ["BucketStatistics", "TokenBucket"]

#: A grant may come this much early (seconds), so that float rounding of clock readings
#: (1000.0 + 0.3 + 0.3 < 1000.0 + 2 * 0.3) never makes a caller miss a tick.
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class BucketStatistics:
    """A snapshot of a :class:`TokenBucket`.

    Attributes:
        rate: tokens per second.
        burst: how many tokens may be taken back to back.
        granted: tokens granted since the bucket was made.
        next_ready: the earliest clock reading at which a token is available.
    """

    rate: float
    burst: int
    granted: int
    next_ready: float


class TokenBucket:
    """A token bucket with ``rate`` tokens a second and room for ``burst`` of them.

    The bucket starts full.  Its guarantees are in the module docstring: any window of ``w``
    seconds holds at most ``floor(w * rate) + burst`` grants; with ``burst=1``, no two grants
    are closer than ``1 / rate`` seconds.

    Thread-safety: not thread-safe; owned by the one thread that dispatches (the
    Dispatcher's).
    """

    __slots__ = ("_granted", "_next", "_origin", "_period", "burst", "rate")

    def __init__(self, rate: float, burst: int = 1, *, start: float) -> None:
        """Create a bucket.

        Args:
            rate: tokens per second, > 0.
            burst: how many tokens may be taken back to back, >= 1.
            start: the clock reading at which the bucket starts, full.

        Raises:
            TypeError, ValueError: for a bad ``rate``, ``burst`` or ``start``.
        """
        self.rate = check_number("rate", rate, minimum=0.0, inclusive=False)
        if math.isinf(self.rate):
            raise ValueError("rate must be finite; pass no rate at all for no rate limit")
        self.burst = check_count("burst", burst, 1)
        self._period = 1.0 / self.rate
        # The TAT is _origin + _next * _period: counting in whole periods from an origin keeps
        # the grid exact while the caller is on time.  _next == 0 until the first grant (a
        # grant leaves it >= 1), which restart() relies on.
        self._origin = check_real("start", start)
        self._next = 0
        self._granted = 0

    @classmethod
    def every(cls, interval: float, *, start: float) -> TokenBucket:
        """A fixed-interval ticker: no two grants closer than ``interval`` seconds."""
        interval = check_number("interval", interval, minimum=0.0, inclusive=False)
        if math.isinf(interval) or math.isinf(1.0 / interval):
            raise ValueError(f"interval must be finite and representable, got {interval!r}")
        bucket = cls(1.0 / interval, 1, start=start)
        bucket._period = interval  # exactly, not 1 / (1 / interval)
        return bucket

    def restart(self, now: float) -> None:
        """Start the bucket afresh at ``now``: full, its grid counted from ``now``.

        For a bucket made before the clock reading at which it should start counting, such
        as a Dispatcher's, made at construction and restarted by ``start()``.  Call it from
        the thread that owns the bucket, or before that thread starts.

        Args:
            now: the clock reading at which the bucket starts, full.

        Raises:
            RuntimeError: the bucket has already granted a token: refilling it could put two
                grants closer than the guarantees allow.
            TypeError, ValueError: ``now`` is not a finite number.
        """
        now = check_real("now", now)
        if self._next != 0:
            raise RuntimeError("restart() must come before the bucket's first grant")
        self._origin = now

    def try_acquire(self, now: float, *, backlogged: bool = False) -> float:
        """Take a token if one is available at ``now``.

        Args:
            now: the clock reading.
            backlogged: ignored, accepted so that existing callers need no change.  (It used
                to make the bucket owe a late caller the ticks it missed, granted back to
                back; now a late caller, backlogged or idle, gets at most ``burst`` tokens
                back to back, as the guarantees require.)

        Returns:
            0.0 if a token was taken; otherwise the seconds until one is available (no token
            is taken then).

        Raises:
            TypeError, ValueError: ``now`` is not a finite number.
        """
        # One cheap test per call for the usual float reading: ``now - now`` is 0.0 unless
        # ``now`` is NaN or infinite.
        if type(now) is not float or now - now != 0.0:
            now = check_real("now", now)
        ready_at = self.next_ready()
        if now < ready_at - _TOLERANCE:
            return ready_at - now
        if now > self._origin + self._next * self._period:
            # Past the TAT: the bucket was full, and the tokens beyond it are lost.  The next
            # one is due a full period after this grant: the grid starts again here.
            self._origin = now
            self._next = 1
        else:
            self._next += 1
        self._granted += 1
        return 0.0

    def grant_time(self) -> float:
        """The earliest clock reading at which :meth:`try_acquire` grants (wait until then).

        It is :meth:`next_ready` less the rounding tolerance, so that a clock that adds up
        to the ready time with rounding error (``1000.0 + 0.3 + 0.3``) is not missed.
        """
        return self.next_ready() - _TOLERANCE

    def next_ready(self) -> float:
        """The earliest clock reading at which a token is available."""
        return self._origin + (self._next - self.burst + 1) * self._period

    def statistics(self) -> BucketStatistics:
        """A snapshot of the bucket (read it from any thread: each field is one read)."""
        return BucketStatistics(self.rate, self.burst, self._granted, self.next_ready())

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"
