"""TokenBucket: a GCRA token bucket, pure logic over the times passed in.

The guarantees under test: any window of ``w`` seconds holds at most
``floor(w * rate) + burst`` grants (with ``burst=1``: no two grants closer than the period),
whatever the caller does (late, idle, backlogged or not); and, while the caller is on time,
grants stay on the grid ``origin + k / rate``.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronos import Dispatcher, TokenBucket, WorkerPool
from chronos.testing import FakeClock
from chronos.ticker import _TOLERANCE
from tests.conftest import wait_until

#: Slack, in tokens, for float rounding when a bound is met exactly (grants on the grid).
COUNT_TOLERANCE = 1e-6
#: A grant may come this many seconds early (chronos.ticker._TOLERANCE: float rounding).
EARLY = _TOLERANCE

rates = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
bursts = st.integers(min_value=1, max_value=12)
starts = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
#: Periods after its start at which a bucket is restarted, if it is.
restarts = st.none() | st.floats(min_value=0.0, max_value=5.0)

# What a caller does next, in units of the bucket's period so every rate gets the same mix:
# wait some periods (exact multiples hit the grid points), stay idle for long, come at the
# ready time (or at grant_time(), a nanosecond before it), come late after it, or take tokens
# (saying it was backlogged or not).
_steps = st.one_of(
    st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=3.0)),
    st.tuples(st.just("wait"), st.integers(min_value=0, max_value=3).map(float)),
    st.tuples(st.just("idle"), st.floats(min_value=3.0, max_value=200.0)),
    st.tuples(st.just("ready"), st.just(0.0)),
    st.tuples(st.just("early"), st.just(0.0)),
    st.tuples(st.just("late"), st.floats(min_value=0.0, max_value=3.0)),
    st.tuples(
        st.sampled_from(["take", "take backlogged"]),
        st.integers(min_value=1, max_value=15).map(float),
    ),
)
step_lists = st.lists(_steps, min_size=1, max_size=80)


def grid_tolerance(start: float, rate: float, grants: int) -> float:
    """Seconds of float error a bucket may accumulate after ``grants`` steps of 1/rate."""
    return 1e-9 * (abs(start) + (grants + 1) / rate + 1.0)


def rounding(grants: list[float], period: float) -> float:
    """Seconds of float rounding in differences of these grant times: a few ulps."""
    return 8 * math.ulp(max((abs(t) for t in grants), default=0.0) + len(grants) * period)


def move(now: float, kind: str, amount: float, bucket: TokenBucket, period: float) -> float:
    """The caller's clock reading after one step that is not a take."""
    if kind in ("wait", "idle"):
        return now + amount * period
    if kind == "ready":
        return max(now, bucket.next_ready())
    if kind == "early":
        return max(now, bucket.grant_time())
    if kind == "late":
        return max(now, bucket.next_ready() + amount * period)
    return now


def make_bucket(
    rate: float, burst: int, start: float, restart: float | None
) -> tuple[TokenBucket, float]:
    """A bucket made at ``start`` and, unless ``restart`` is None, restarted that many
    periods later; and the time from which it counts (the restart's, if any)."""
    bucket = TokenBucket(rate, burst, start=start)
    if restart is None:
        return bucket, start
    origin = start + restart / rate
    bucket.restart(origin)
    return bucket, origin


def assert_spacing(grants: list[float], period: float) -> None:
    """No two grants closer than the period (less the nanosecond a grant may come early)."""
    slack = EARLY + rounding(grants, period)
    for n, (earlier, later) in enumerate(itertools.pairwise(grants), start=1):
        assert later - earlier >= period - slack, (
            f"grants #{n} and #{n + 1} came {later - earlier}s apart, period {period}s"
        )


def assert_window_bound(grants: list[float], rate: float, burst: int) -> None:
    """Any window of ``w`` seconds holds at most ``floor(w * rate) + burst`` grants.

    The extreme windows run from one grant to another: grants ``i..j`` (``i < j``), in
    ``w = g[j] - g[i]`` seconds.  Their count ``j - i + 1`` is an integer, so the bound reads
    ``g[j] - g[i] >= (j - i + 1 - burst) * period``, that is ``h[j] >= h[i] - (burst - 1) *
    period`` with ``h[k] = g[k] - k * period``: comparing each ``h[j]`` with the largest
    ``h[i]`` before it checks every pair in one pass.
    """
    period = 1.0 / rate
    slack = EARLY + rounding(grants, period)
    highest, first = -math.inf, 0
    for j, granted_at in enumerate(grants):
        h = granted_at - j * period
        assert h >= highest - (burst - 1) * period - slack, (
            f"{j - first + 1} grants in the {granted_at - grants[first]}s from grant #{first}"
            f" to #{j}: more than floor(w * rate) + burst = "
            f"{math.floor((granted_at - grants[first]) * rate)} + {burst}"
        )
        if h > highest:
            highest, first = h, j


@dataclass
class Caller:
    """Drives a bucket through a list of steps, checking try_acquire's contract on each call."""

    bucket: TokenBucket
    now: float
    grants: list[float] = field(default_factory=list)

    def acquire(self, *, backlogged: bool = False) -> float:
        before = copy.copy(self.bucket)
        ready = before.next_ready()
        wait = self.bucket.try_acquire(self.now, backlogged=backlogged)
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
            if kind.startswith("take"):
                for _ in range(int(amount)):
                    if self.acquire(backlogged=kind == "take backlogged") > 0.0:
                        break
            else:
                self.now = move(self.now, kind, amount, self.bucket, period)


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


def test_after_an_idle_spell_a_full_burst_then_a_full_period() -> None:
    bucket = TokenBucket(1.0, burst=2, start=0.0)
    assert [bucket.try_acquire(0.0) for _ in range(2)] == [0.0, 0.0]
    # Idle for a while: a full burst is available again, no more.
    assert [bucket.try_acquire(10.5) for _ in range(2)] == [0.0, 0.0]
    # The next token comes a full period after them (on the old grid, at 11.0, it would
    # have made 3 grants in 0.5 s: more than floor(0.5 * rate) + burst = 2).
    assert bucket.try_acquire(10.5) == pytest.approx(1.0)


def test_fixed_interval_ticker_drops_missed_ticks() -> None:
    ticker = TokenBucket.every(2.0, start=0.0)
    assert ticker.try_acquire(0.0) == 0.0
    assert ticker.try_acquire(7.0) == 0.0  # the ticks at 2, 4 and 6 were missed: one grant
    assert ticker.try_acquire(7.0) == pytest.approx(2.0)  # the next a full interval later


def test_ticks_missed_while_nobody_asked_are_dropped() -> None:
    bucket = TokenBucket(10.0, 1, start=0.0)
    assert bucket.try_acquire(0.0) == 0.0
    # granted, then nobody asked for 1 s (idle, or blocked on a full pool): no catch-up
    assert bucket.try_acquire(1.05) == 0.0
    assert bucket.try_acquire(1.05) == pytest.approx(0.1)


def test_every_is_rate_one_over_interval_burst_one() -> None:
    ticker = TokenBucket.every(0.25, start=3.0)
    assert ticker.rate == 4.0
    assert ticker.burst == 1
    assert repr(ticker) == "TokenBucket(rate=4.0, burst=1)"


# -- the reported defect: interval=0.3 is a minimum spacing -------------------------------------


def test_interval_is_a_minimum_spacing_when_the_first_call_comes_late() -> None:
    """Made at 0, first asked at 0.25 (a Dispatcher started 0.25 s after it was made): the
    second grant used to come at the grid point 0.3, 50 ms after the first."""
    ticker = TokenBucket.every(0.3, start=0.0)
    assert ticker.try_acquire(0.25) == 0.0
    assert ticker.try_acquire(0.3) == pytest.approx(0.25)  # not before 0.55
    assert ticker.try_acquire(0.55) == 0.0


def test_interval_is_a_minimum_spacing_after_an_idle_spell() -> None:
    ticker = TokenBucket.every(0.3, start=0.0)
    assert [ticker.try_acquire(0.0), ticker.try_acquire(0.3)] == [0.0, 0.0]
    assert ticker.try_acquire(0.85) == 0.0  # idle since 0.3, late for the tick at 0.6
    # backlogged or not, the next token is a full interval later (it used to be at 0.9)
    assert ticker.try_acquire(0.9, backlogged=True) == pytest.approx(0.25)
    assert ticker.try_acquire(1.15, backlogged=True) == 0.0


def test_restart_starts_a_full_bucket_and_its_grid_at_its_time() -> None:
    """The user's scenario: interval=0.3, the bucket made at 0 and restarted at 0.25 (by
    Dispatcher.start()), then a caller that asks whenever it is told to."""
    ticker = TokenBucket.every(0.3, start=0.0)
    ticker.restart(0.25)
    assert ticker.next_ready() == 0.25
    now = 0.25
    grants: list[float] = []
    while len(grants) < 4:
        if (wait := ticker.try_acquire(now, backlogged=True)) > 0.0:
            now += wait
        else:
            grants.append(now)
    assert grants == pytest.approx([0.25, 0.55, 0.85, 1.15])


def test_restart_refills_a_bucket_that_only_refused() -> None:
    bucket = TokenBucket(1.0, burst=2, start=0.0)
    bucket.restart(-5.0)  # any finite reading, an earlier one included
    bucket.restart(10.0)
    assert bucket.try_acquire(5.0) == pytest.approx(4.0)  # full at 10: a token from 9 on
    bucket.restart(20.0)  # a refusal took nothing: still before the first grant
    assert [bucket.try_acquire(20.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.try_acquire(20.0) == pytest.approx(1.0)


def test_restart_after_a_grant_is_refused() -> None:
    bucket = TokenBucket(1.0, start=0.0)
    assert bucket.try_acquire(0.0) == 0.0
    with pytest.raises(RuntimeError, match=r"restart\(\) must come before the bucket's first"):
        bucket.restart(0.5)  # refilled, it would grant again at 0.5
    assert bucket.try_acquire(0.5) == pytest.approx(0.5)  # unchanged


def test_a_dispatcher_started_late_keeps_its_interval(clock: FakeClock) -> None:
    """The report, end to end: Dispatcher(interval=0.3), start() 0.25 s after it was made;
    the first two dispatches came 50 ms apart."""
    started: list[float] = []
    with WorkerPool(max_workers=2, clock=clock) as pool:
        dispatcher = Dispatcher(pool, interval=0.3)
        bucket = dispatcher.bucket
        assert bucket is not None
        clock.advance(0.25)
        with dispatcher:  # starts it; stops it if an assertion fails, else closes and joins
            futures = [dispatcher.submit(lambda: started.append(clock.now())) for _ in range(3)]
            wait_until(lambda: len(started) == 1)  # at once: the bucket starts full
            assert clock.wait_for_waiters(1)  # the dispatcher waits for its next token...
            assert bucket.next_ready() == pytest.approx(1000.55)  # ...a full interval later
            clock.advance(0.3)
            wait_until(lambda: len(started) == 2)
            assert clock.wait_for_waiters(1)
            assert bucket.next_ready() == pytest.approx(1000.85)
            clock.advance(0.3)
            wait_until(lambda: len(started) == 3)
        for future in futures:
            future.result(timeout=5)
    assert started == pytest.approx([1000.25, 1000.55, 1000.85])


def test_the_checkers_catch_the_old_catch_up() -> None:
    """The helpers below fail on what the old bucket did: a late caller's owed ticks back to
    back, and a grant on the grid 50 ms after a late one."""
    with pytest.raises(AssertionError, match="apart, period"):
        assert_spacing([0.25, 0.3], 0.3)
    with pytest.raises(AssertionError, match="more than floor"):
        assert_window_bound([0.0, 1.05, 1.05, 1.05], 1.0, 2)
    assert_window_bound([0.0, 0.0, 1.0, 2.0, 3.0], 1.0, 2)  # at the bound: fine


# -- properties ---------------------------------------------------------------------------------


@settings(deadline=None)  # no flaky DeadlineExceeded on a loaded machine
@given(rate=rates, burst=bursts, start=starts, restart=restarts)
def test_a_new_or_restarted_bucket_grants_its_whole_burst_at_its_start_time(
    rate: float, burst: int, start: float, restart: float | None
) -> None:
    bucket, origin = make_bucket(rate, burst, start, restart)
    waits = [bucket.try_acquire(origin) for _ in range(burst)]
    assert waits == [0.0] * burst, f"the bucket did not start full: {waits}"
    assert bucket.try_acquire(origin) > 0.0


@settings(max_examples=300, deadline=None)
@given(rate=rates, start=starts, restart=restarts, steps=step_lists)
def test_with_burst_one_no_two_grants_are_closer_than_the_period(
    rate: float, start: float, restart: float | None, steps: list[tuple[str, float]]
) -> None:
    """Whatever the call times: idle gaps, late callers, backlogged=True or not."""
    bucket, _ = make_bucket(rate, 1, start, restart)
    caller = Caller(bucket, now=start)
    caller.run(steps)
    assert_spacing(caller.grants, 1.0 / rate)


@settings(max_examples=300, deadline=None)
@given(rate=rates, burst=bursts, start=starts, restart=restarts, steps=step_lists)
def test_any_window_holds_at_most_floor_rate_times_width_plus_burst(
    rate: float, burst: int, start: float, restart: float | None, steps: list[tuple[str, float]]
) -> None:
    bucket, _ = make_bucket(rate, burst, start, restart)
    caller = Caller(bucket, now=start)
    caller.run(steps)
    assert_window_bound(caller.grants, rate, burst)


@settings(max_examples=300, deadline=None)
@given(rate=rates, burst=bursts, start=starts, restart=restarts, steps=step_lists)
def test_total_grants_never_exceed_rate_times_elapsed_plus_burst(
    rate: float, burst: int, start: float, restart: float | None, steps: list[tuple[str, float]]
) -> None:
    bucket, origin = make_bucket(rate, burst, start, restart)
    caller = Caller(bucket, now=start)
    caller.run(steps)
    for count, granted_at in enumerate(caller.grants, start=1):
        elapsed = granted_at - origin + EARLY  # a grant may come a nanosecond early
        assert count <= rate * elapsed + burst + COUNT_TOLERANCE, (
            f"grant #{count} at {granted_at} exceeds rate * elapsed + burst"
        )


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    burst=bursts,
    start=starts,
    calls=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=3.0), st.booleans()), min_size=1, max_size=60
    ),
)
def test_backlogged_changes_nothing(
    rate: float, burst: int, start: float, calls: list[tuple[float, bool]]
) -> None:
    """Kept for the Dispatcher, which passes it; a late caller is owed no ticks any more."""
    flagged, plain = TokenBucket(rate, burst, start=start), TokenBucket(rate, burst, start=start)
    now = start
    for gap, backlogged in calls:
        now += gap / rate
        assert flagged.try_acquire(now, backlogged=backlogged) == plain.try_acquire(now)
        assert flagged.next_ready() == plain.next_ready()


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    burst=bursts,
    late_periods=st.integers(min_value=1, max_value=50),
    fraction=st.floats(min_value=0.0, max_value=0.9),
    refused=st.booleans(),
    backlogged=st.booleans(),
)
def test_a_late_caller_gets_at_most_burst_tokens_back_to_back(
    rate: float, burst: int, late_periods: int, fraction: float, refused: bool, backlogged: bool
) -> None:
    """Late after a refusal (the thread did not get the GIL back in time) or after a grant
    (busy pushing the job), backlogged or not: the ticks it missed beyond the bucket's
    capacity are lost, and the next token comes a full period after the last grant at the
    latest.  (The old bucket granted every missed tick back to back.)"""
    period = 1.0 / rate
    bucket = TokenBucket(rate, burst, start=0.0)
    for _ in range(burst):
        assert bucket.try_acquire(0.0) == 0.0
    if refused:
        assert bucket.try_acquire(0.0) == pytest.approx(period)  # the caller waits, wakes late
    now = (late_periods + fraction) * period  # the next token was due at one period
    granted = 0
    while (wait := bucket.try_acquire(now, backlogged=backlogged)) == 0.0:
        granted += 1
    assert granted == min(late_periods, burst)
    assert 0.0 < wait <= period * (1 + 1e-9)
    assert_window_bound([0.0] * burst + [now] * granted + [now + wait], rate, burst)


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    burst=bursts,
    start=starts,
    jitters=st.lists(st.floats(min_value=0.0, max_value=0.99), min_size=1, max_size=120),
    late=st.booleans(),
)
def test_a_caller_late_by_less_than_its_burst_allows_stays_on_the_grid(
    rate: float, burst: int, start: float, jitters: list[float], late: bool
) -> None:
    """Asking at the returned ready time, or up to ``burst - 1`` periods after it, never
    pushes later grants back: the long-run rate holds."""
    bucket = TokenBucket(rate, burst, start=start)
    period = 1.0 / rate
    now = start
    latest = 0.0  # the caller's largest lateness so far
    for n, jitter in enumerate(jitters, start=1):
        delay = jitter * (burst - 1) * period if late else 0.0
        latest = max(latest, delay)
        while (wait := bucket.try_acquire(now)) > 0.0:
            now += wait + delay
        ideal = start + max(0, n - burst) * period
        tolerance = grid_tolerance(start, rate, n)
        assert now >= ideal - tolerance, f"grant #{n} at {now} came before the grid point {ideal}"
        assert now <= ideal + latest + tolerance, (
            f"grant #{n} at {now} drifted from the grid point {ideal}"
        )
        expected_next = start + (n + 1 - burst) * period  # before start while tokens remain
        assert math.isclose(bucket.next_ready(), expected_next, rel_tol=0.0, abs_tol=tolerance)


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    start=starts,
    delays=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=60),
)
def test_with_burst_one_a_late_caller_gets_the_next_token_a_full_period_after(
    rate: float, start: float, delays: list[float]
) -> None:
    """The price of the spacing: with ``burst=1`` lateness is never made up, so a caller
    that keeps waking up late gets less than ``rate``."""
    bucket = TokenBucket(rate, 1, start=start)
    period = 1.0 / rate
    now = start
    for delay in delays:
        while (wait := bucket.try_acquire(now)) > 0.0:
            now += wait + delay * period
        assert math.isclose(bucket.next_ready(), now + period, abs_tol=grid_tolerance(now, rate, 1))


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
        # Not a nanosecond early ("early"): the two periods may differ in the last bit, so
        # one could grant where the other refuses.
        now = move(now, "ready" if kind == "early" else kind, amount, bucket, interval)
        # every() keeps the interval exactly; the bucket's period is 1 / (1 / interval),
        # which may differ in the last bit: the two agree up to float rounding.
        tolerance = grid_tolerance(now, 1.0 / interval, 1_000)
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


@pytest.mark.parametrize(
    ("now", "error", "message"),
    [
        (float("nan"), ValueError, "now must be a finite number, got nan"),
        (float("inf"), ValueError, "now must be a finite number, got inf"),
        (True, TypeError, "now must be a number, got bool"),
        ("1", TypeError, "now must be a number, got str"),
        (None, TypeError, "now must be a number, got NoneType"),
    ],
)
def test_bad_restart_time_is_refused(now: Any, error: type[Exception], message: str) -> None:
    bucket = TokenBucket(1.0, start=0.0)
    with pytest.raises(error, match=message):
        bucket.restart(now)
    assert bucket.next_ready() == 0.0  # unchanged
