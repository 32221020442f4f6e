"""TokenBucket: a token bucket on a fixed grid, pure logic over the times passed in."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronos import TokenBucket
from chronos.ticker import _TOLERANCE

#: Slack, in tokens, for float rounding when a bound is met exactly (grants on the grid).
COUNT_TOLERANCE = 1e-6
#: A grant may come this many seconds early (chronos.ticker._TOLERANCE: float rounding).
EARLY = _TOLERANCE

rates = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
bursts = st.integers(min_value=1, max_value=12)
starts = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)

# What a caller does next, in units of the bucket's period so every rate gets the same mix:
# wait some periods (exact multiples hit the grid points), jump to the ready time, or take.
_steps = st.one_of(
    st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=6.0)),
    st.tuples(st.just("wait"), st.integers(min_value=0, max_value=6).map(float)),
    st.tuples(st.just("ready"), st.just(0.0)),
    st.tuples(st.just("take"), st.integers(min_value=1, max_value=15).map(float)),
)
step_lists = st.lists(_steps, min_size=1, max_size=80)


def grid_tolerance(start: float, rate: float, grants: int) -> float:
    """Seconds of float error a bucket may accumulate after ``grants`` steps of 1/rate."""
    return 1e-9 * (abs(start) + (grants + 1) / rate + 1.0)


@dataclass
class Caller:
    """Drives a bucket through a list of steps, checking try_acquire's contract on each call."""

    bucket: TokenBucket
    now: float
    grants: list[float] = field(default_factory=list)

    def acquire(self) -> float:
        before = copy.copy(self.bucket)
        ready = before.next_ready()
        wait = self.bucket.try_acquire(self.now)
        assert isinstance(wait, float)
        if wait == 0.0:
            assert self.now >= ready - EARLY, "granted before the bucket was ready"
            assert self.bucket.next_ready() > ready, "a grant must consume a token"
            self.grants.append(self.now)
        else:
            assert wait > 0.0
            assert self.now < ready - EARLY
            assert wait == ready - self.now
            assert self.bucket.next_ready() == ready, "a refusal must consume nothing"
            # Consuming nothing means behaving exactly as the untouched copy does.
            assert before.try_acquire(self.now) == wait
        return wait

    def run(self, steps: list[tuple[str, float]]) -> None:
        period = 1.0 / self.bucket.rate
        for kind, amount in steps:
            if kind == "wait":
                self.now += amount * period
            elif kind == "ready":
                self.now = max(self.now, self.bucket.next_ready())
            else:
                for _ in range(int(amount)):
                    if self.acquire() > 0.0:
                        break


# -- unit tests ---------------------------------------------------------------------------------


def test_a_new_bucket_is_full() -> None:
    bucket = TokenBucket(2.0, burst=3, start=10.0)
    assert [bucket.try_acquire(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire(10.0) == pytest.approx(0.5)
    assert bucket.next_ready() == pytest.approx(10.5)


def test_try_acquire_refuses_without_consuming() -> None:
    bucket = TokenBucket(1.0, start=0.0)
    assert bucket.try_acquire(0.0) == 0.0
    assert bucket.try_acquire(0.25) == pytest.approx(0.75)
    assert bucket.try_acquire(0.5) == pytest.approx(0.5)
    assert bucket.next_ready() == pytest.approx(1.0)
    assert bucket.try_acquire(1.0) == 0.0


def test_burst_refills_after_an_idle_spell_and_stays_on_the_grid() -> None:
    bucket = TokenBucket(1.0, burst=2, start=0.0)
    assert [bucket.try_acquire(0.0) for _ in range(2)] == [0.0, 0.0]
    # Idle for a while: a full burst is available again, no more.
    assert [bucket.try_acquire(10.5) for _ in range(2)] == [0.0, 0.0]
    wait = bucket.try_acquire(10.5)
    assert wait > 0.0
    # The next token is on the grid start + k / rate, not a full period after 10.5.
    assert 10.5 + wait == pytest.approx(11.0)


def test_fixed_interval_ticker_drops_missed_ticks() -> None:
    ticker = TokenBucket.every(2.0, start=0.0)
    assert ticker.try_acquire(0.0) == 0.0
    assert ticker.try_acquire(7.0) == 0.0  # the ticks at 2, 4 and 6 were missed: one grant
    assert ticker.try_acquire(7.0) == pytest.approx(1.0)  # the next grid point is 8


def test_every_is_rate_one_over_interval_burst_one() -> None:
    ticker = TokenBucket.every(0.25, start=3.0)
    assert ticker.rate == 4.0
    assert ticker.burst == 1
    assert repr(ticker) == "TokenBucket(rate=4.0, burst=1)"


# -- properties ---------------------------------------------------------------------------------


@settings(deadline=None)  # no flaky DeadlineExceeded on a loaded machine
@given(rate=rates, burst=bursts, start=starts)
def test_a_new_bucket_grants_its_whole_burst_at_its_start_time(
    rate: float, burst: int, start: float
) -> None:
    bucket = TokenBucket(rate, burst, start=start)
    waits = [bucket.try_acquire(start) for _ in range(burst)]
    assert waits == [0.0] * burst, f"the bucket did not start full: {waits}"
    assert bucket.try_acquire(start) > 0.0


@settings(max_examples=300, deadline=None)
@given(rate=rates, burst=bursts, start=starts, steps=step_lists)
def test_total_grants_never_exceed_rate_times_elapsed_plus_burst(
    rate: float, burst: int, start: float, steps: list[tuple[str, float]]
) -> None:
    caller = Caller(TokenBucket(rate, burst, start=start), now=start)
    caller.run(steps)
    for count, granted_at in enumerate(caller.grants, start=1):
        assert count <= rate * (granted_at - start) + burst + COUNT_TOLERANCE, (
            f"grant #{count} at {granted_at} exceeds rate * elapsed + burst"
        )


#: An on-time caller: idle for some periods, then takes tokens, each time at once or exactly
#: at the time it was told to come back.
on_time_plans = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=6.0), st.integers(min_value=1, max_value=15)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(rate=rates, burst=bursts, start=starts, plan=on_time_plans)
def test_any_window_holds_fewer_than_rate_times_width_plus_burst_plus_one(
    rate: float, burst: int, start: float, plan: list[tuple[float, int]]
) -> None:
    """For a caller that always comes back when told to (never late after a refusal)."""
    bucket = TokenBucket(rate, burst, start=start)
    period = 1.0 / rate
    now = start
    grants: list[float] = []
    for idle_periods, takes in plan:
        now += idle_periods * period
        for _ in range(takes):
            while (wait := bucket.try_acquire(now)) > 0.0:
                now += wait
            grants.append(now)
    for first in range(len(grants)):
        for last in range(first, len(grants)):
            width = grants[last] - grants[first]
            in_window = last - first + 1
            assert in_window < rate * width + burst + 1 + COUNT_TOLERANCE, (
                f"{in_window} grants in a window of {width}s"
            )


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    burst=bursts,
    late_periods=st.integers(min_value=1, max_value=50),
    fraction=st.floats(min_value=0.0, max_value=0.9),
)
def test_a_refused_caller_that_comes_back_late_catches_up(
    rate: float, burst: int, late_periods: int, fraction: float
) -> None:
    """Lateness after a refusal (a thread that did not get the GIL) costs no ticks."""
    bucket = TokenBucket(rate, burst, start=0.0)
    period = 1.0 / rate
    for _ in range(burst):
        assert bucket.try_acquire(0.0) == 0.0
    wait = bucket.try_acquire(0.0)
    assert wait > 0.0  # refused: the caller now waits, and wakes late
    now = wait + (late_periods + fraction) * period
    granted = 0
    while bucket.try_acquire(now) == 0.0:
        granted += 1
    # every tick of the grid up to now, the one it waited for included
    assert granted == late_periods + 1
    assert burst + granted <= rate * now + burst + COUNT_TOLERANCE  # the cumulative bound


def test_ticks_missed_while_nobody_asked_are_dropped() -> None:
    bucket = TokenBucket(10.0, 1, start=0.0)
    assert bucket.try_acquire(0.0) == 0.0
    # granted, then nobody asked for 1 s (idle, or blocked on a full pool): no catch-up
    assert bucket.try_acquire(1.05) == 0.0
    assert bucket.try_acquire(1.05) == pytest.approx(0.05)


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    burst=bursts,
    start=starts,
    jitters=st.lists(st.floats(min_value=0.0, max_value=0.99), min_size=1, max_size=120),
    late=st.booleans(),
)
def test_a_caller_at_full_backlog_stays_on_the_grid(
    rate: float, burst: int, start: float, jitters: list[float], late: bool
) -> None:
    """Asking at the returned ready time (or a little late) never pushes later grants back."""
    bucket = TokenBucket(rate, burst, start=start)
    period = 1.0 / rate
    now = start
    for n, jitter in enumerate(jitters, start=1):
        delay = jitter * period if late else 0.0
        while (wait := bucket.try_acquire(now)) > 0.0:
            now += wait + delay
        ideal = start + max(0, n - burst) * period
        tolerance = grid_tolerance(start, rate, n)
        assert now >= ideal - tolerance, f"grant #{n} at {now} came before the grid point {ideal}"
        assert now <= ideal + delay + tolerance, (
            f"grant #{n} at {now} drifted from the grid point {ideal}"
        )
        expected_next = start + (n + 1 - burst) * period  # before start while tokens remain
        assert math.isclose(bucket.next_ready(), expected_next, rel_tol=0.0, abs_tol=tolerance)


@settings(max_examples=200, deadline=None)
@given(interval=st.floats(min_value=1e-3, max_value=1e3), start=starts, steps=step_lists)
def test_every_behaves_as_rate_one_over_interval_burst_one(
    interval: float, start: float, steps: list[tuple[str, float]]
) -> None:
    ticker = TokenBucket.every(interval, start=start)
    bucket = TokenBucket(1.0 / interval, 1, start=start)
    assert (ticker.rate, ticker.burst) == (bucket.rate, bucket.burst)
    now = start
    for kind, amount in steps:
        if kind == "wait":
            now += amount * interval
        elif kind == "ready":
            now = max(now, bucket.next_ready())
        # every() keeps the interval exactly; the bucket's period is 1 / (1 / interval),
        # which may differ in the last bit: the two agree up to float rounding.
        tolerance = grid_tolerance(start, 1.0 / interval, 1_000)
        assert math.isclose(ticker.next_ready(), bucket.next_ready(), abs_tol=tolerance)
        ticker_wait, bucket_wait = ticker.try_acquire(now), bucket.try_acquire(now)
        assert math.isclose(ticker_wait, bucket_wait, abs_tol=tolerance)


def test_every_counts_whole_intervals_from_its_start() -> None:
    ticker = TokenBucket.every(0.3, start=1000.0)
    grants = []
    now = 1000.0
    for _ in range(4):
        assert ticker.try_acquire(now) == 0.0
        grants.append(now)
        now += 0.3  # 1000.0 + 0.3 + 0.3 rounds below 1000.0 + 2 * 0.3: still granted
    assert grants == pytest.approx([1000.0, 1000.3, 1000.6, 1000.9])
    assert ticker.next_ready() == 1000.0 + 4 * 0.3


# -- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "error", "message"),
    [
        (0, ValueError, "rate must be > 0"),
        (0.0, ValueError, "rate must be > 0"),
        (-1.5, ValueError, "rate must be > 0"),
        (float("nan"), ValueError, "rate must be > 0"),
        (float("inf"), ValueError, "rate must be finite"),
        (True, TypeError, "rate must be a number, got bool"),
        ("10", TypeError, "rate must be a number, got str"),
        (None, TypeError, "rate must be a number, got NoneType"),
    ],
)
def test_bad_rate_is_refused(rate: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        TokenBucket(rate, start=0.0)


@pytest.mark.parametrize(
    ("burst", "error", "message"),
    [
        (0, ValueError, "burst must be >= 1, got 0"),
        (-2, ValueError, "burst must be >= 1, got -2"),
        (1.0, TypeError, "burst must be an int, got float"),
        (2.5, TypeError, "burst must be an int, got float"),
        (True, TypeError, "burst must be an int, got bool"),
        ("3", TypeError, "burst must be an int, got str"),
    ],
)
def test_bad_burst_is_refused(burst: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        TokenBucket(1.0, burst, start=0.0)


@pytest.mark.parametrize(
    ("interval", "error", "message"),
    [
        (0, ValueError, "interval must be > 0"),
        (-0.5, ValueError, "interval must be > 0"),
        (float("nan"), ValueError, "interval must be > 0"),
        (True, TypeError, "interval must be a number, got bool"),
        ("1", TypeError, "interval must be a number, got str"),
        # Positive but useless: the error must still name the argument the caller passed.
        (float("inf"), ValueError, "interval"),
        (1e-310, ValueError, "interval"),
    ],
)
def test_bad_interval_is_refused(interval: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        TokenBucket.every(interval, start=0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    burst=bursts,
    late_periods=st.integers(min_value=1, max_value=50),
    fraction=st.floats(min_value=0.0, max_value=0.9),
)
def test_a_backlogged_caller_that_comes_back_late_from_a_grant_catches_up(
    rate: float, burst: int, late_periods: int, fraction: float
) -> None:
    """Lateness while busy with the last grant (GIL-starved while pushing it) costs no ticks;
    the same lateness without ``backlogged`` is an idle spell: ticks beyond the burst drop."""
    period = 1.0 / rate
    owed, idle = TokenBucket(rate, burst, start=0.0), TokenBucket(rate, burst, start=0.0)
    for bucket in (owed, idle):
        for _ in range(burst):
            assert bucket.try_acquire(0.0) == 0.0
    now = (late_periods + fraction) * period  # the next token was due at one period
    granted_owed = 0
    while owed.try_acquire(now, backlogged=True) == 0.0:
        granted_owed += 1
    granted_idle = 0
    while idle.try_acquire(now) == 0.0:
        granted_idle += 1
    assert granted_owed == late_periods  # every grid tick up to now
    assert granted_idle == min(late_periods, burst)
    assert burst + granted_owed <= rate * now + burst + COUNT_TOLERANCE  # the cumulative bound
