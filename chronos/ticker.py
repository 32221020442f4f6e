"""The Dispatcher's throttle: a token bucket scheduled on absolute deadlines.

Pure logic over times you pass in; the Dispatcher does the waiting, on an Event, so that
shutdown wakes it at once.  Grants fall on a fixed grid ``start + k / rate``: a dispatcher
that wakes a little late does not push every later grant back, so the achieved rate does not
drift (a ``sleep(interval)`` loop drifts by its overhead on every tick).

Missed ticks are told apart by why they were missed:

- A caller that was backlogged since its last call gets the ticks it missed at once, so the
  long-run rate holds: no drift, even under load.  That is a caller that was refused a
  token, waited, and came back late (its thread was not scheduled in time: another thread
  held the GIL, the machine was busy), and one that says so (``backlogged=True``: it had
  work waiting all along but got back late from its previous grant, GIL-starved while it
  pushed the job).
- Ticks that passed while nobody asked (the dispatcher had nothing to dispatch, or was
  blocked on a full pool after its last grant) are dropped beyond ``burst``, as Go's
  ``time.Ticker`` drops them: after an idle spell up to ``burst`` grants come at once, the
  next one at the next tick of the grid.

The guarantees, for a bucket started at ``s``:

- by time ``t`` at most ``rate * (t - s) + burst`` grants have been made in all, and
- for a caller that comes back on time, any window of ``w`` seconds holds fewer than
  ``rate * w + burst + 1`` grants (the one extra is a tick that a late wake-up catches up
  on); a caller that comes back late after a refusal gets its missed ticks back to back.
"""

from __future__ import annotations

import math

from chronos._validate import check_count, check_number, check_real

__all__ = ["TokenBucket"]

#: A grant may come this much early (seconds), so that float rounding of clock readings
#: (1000.0 + 0.3 + 0.3 < 1000.0 + 2 * 0.3) never makes a caller miss a tick.
_TOLERANCE = 1e-9


class TokenBucket:
    """A token bucket with ``rate`` tokens a second and room for ``burst`` of them.

    The bucket starts full.

    Thread-safety: not thread-safe; owned by the one thread that dispatches (the
    Dispatcher's).
    """

    __slots__ = ("_backlog_until", "_next", "_period", "_refused", "_start", "burst", "rate")

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
        self._start = check_real("start", start)
        # The grid index of the next token's theoretical arrival time (GCRA): that time is
        # _start + _next * _period, and a grant is allowed from (burst - 1) periods before
        # it.  Counting in whole periods keeps the grid exact: no rounding accumulates.
        self._next = 0
        self._refused = False  # the last call was refused: the caller is waiting for a token
        self._backlog_until = -math.inf  # ticks up to here are owed to a caller that waited

    @classmethod
    def every(cls, interval: float, *, start: float) -> TokenBucket:
        """A fixed-interval ticker: one grant every ``interval`` seconds, no bursts."""
        interval = check_number("interval", interval, minimum=0.0, inclusive=False)
        if math.isinf(interval) or math.isinf(1.0 / interval):
            raise ValueError(f"interval must be finite and representable, got {interval!r}")
        bucket = cls(1.0 / interval, 1, start=start)
        bucket._period = interval  # exactly, not 1 / (1 / interval)
        return bucket

    def try_acquire(self, now: float, *, backlogged: bool = False) -> float:
        """Take a token if one is available at ``now``.

        Args:
            now: the clock reading.
            backlogged: the caller had work waiting for a token ever since its previous
                call: the ticks it missed since are owed to it, not dropped as idle ones.

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
            self._refused = True
            return ready_at - now
        if self._refused or backlogged:
            # The caller waited for this token, or was busy with the previous one, and may
            # come back late: every tick up to now is owed to it (it asks again at once,
            # catching up), none is dropped.
            self._refused = False
            self._backlog_until = now
        tat = self._start + self._next * self._period
        idle_from = max(tat, self._backlog_until)
        if now > idle_from:
            # Nobody asked for a while: tokens beyond the burst were lost.  Stay on the grid:
            # skip the whole periods that passed, never the fraction of one.
            self._next += math.floor((now - idle_from + _TOLERANCE) / self._period)
        self._next += 1
        return 0.0

    def grant_time(self) -> float:
        """The earliest clock reading at which :meth:`try_acquire` grants (wait until then).

        It is :meth:`next_ready` less the rounding tolerance, so that a clock that adds up
        to the ready time with rounding error (``1000.0 + 0.3 + 0.3``) is not missed.
        """
        return self.next_ready() - _TOLERANCE

    def next_ready(self) -> float:
        """The earliest clock reading at which a token is available."""
        return self._start + (self._next - self.burst + 1) * self._period

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"
