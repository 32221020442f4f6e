"""RetryPolicy: tenacity strategies turned into "retry after N seconds" or "give up"."""

from __future__ import annotations

import math
from typing import Any

import pytest
import tenacity
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chronos import JobInterrupted, JobTimeoutError, NonRetryableError, RetryPolicy


class FlakyError(Exception):
    """What a job raises in these tests."""


class FlakyChildError(FlakyError):
    pass


class FatalError(Exception):
    pass


class Custom(BaseException):
    """A BaseException that is not an Exception, like KeyboardInterrupt."""


def bound(policy: RetryPolicy, attempt: int) -> float:
    """The documented delay before retry number ``attempt``, without jitter."""
    assert policy.max_backoff is not None
    try:
        raw = policy.backoff * policy.multiplier ** (attempt - 1)
    except OverflowError:
        raw = math.inf
    return min(policy.max_backoff, raw)


backoffs = st.floats(min_value=1e-3, max_value=10.0)  # backoff=0: see test_zero_backoff_...
multipliers = st.one_of(st.sampled_from([1.0, 1.5, 2.0, 3.0]), st.floats(1.0, 5.0))
caps = st.floats(min_value=0.0, max_value=300.0)
# Large attempt numbers make multiplier ** n overflow a float.
attempt_numbers = st.one_of(st.integers(1, 40), st.integers(1, 5000))


@st.composite
def exponential_policies(draw: st.DrawFn, *, jitter: bool) -> RetryPolicy:
    backoff = draw(backoffs)
    max_backoff = draw(caps.map(lambda cap: max(cap, backoff)))
    return RetryPolicy(
        max_attempts=10_000,
        backoff=backoff,
        max_backoff=max_backoff,
        multiplier=draw(multipliers),
        jitter=jitter,
    )


# -- delays ---------------------------------------------------------------------------------


def test_exponential_delays_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=0.5, max_backoff=5.0, jitter=False)
    delays = [policy.next_delay(n, FlakyError(), elapsed=0.0) for n in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]


def test_multiplier_one_gives_a_constant_delay() -> None:
    policy = RetryPolicy(max_attempts=6, backoff=0.3, multiplier=1.0, max_backoff=1, jitter=False)
    assert [policy.next_delay(n, FlakyError(), 0.0) for n in range(1, 6)] == [0.3] * 5


@settings(deadline=None)  # no flaky DeadlineExceeded on a loaded machine
@given(policy=exponential_policies(jitter=False), attempt=attempt_numbers)
def test_delay_without_jitter_is_backoff_times_multiplier_power_capped(
    policy: RetryPolicy, attempt: int
) -> None:
    delay = policy.next_delay(attempt, FlakyError(), elapsed=0.0)
    assert delay is not None
    assert math.isclose(delay, bound(policy, attempt), rel_tol=1e-9, abs_tol=1e-12)


@settings(deadline=None)  # no flaky DeadlineExceeded on a loaded machine
@given(policy=exponential_policies(jitter=True), attempt=attempt_numbers)
def test_delay_with_jitter_stays_within_zero_and_the_bound(
    policy: RetryPolicy, attempt: int
) -> None:
    delay = policy.next_delay(attempt, FlakyError(), elapsed=0.0)
    assert delay is not None
    assert 0.0 <= delay <= bound(policy, attempt) * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("attempt", [1, 2, 60, 1025, 5000])
def test_zero_backoff_never_waits(jitter: bool, attempt: int) -> None:
    """0 * multiplier ** (attempt - 1) is 0, however large the power grows."""
    policy = RetryPolicy(max_attempts=10_000, backoff=0.0, max_backoff=30.0, jitter=jitter)
    assert policy.next_delay(attempt, FlakyError(), elapsed=0.0) == 0.0


def test_jitter_spreads_the_delays() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=1.0, max_backoff=1.0)
    delays = {policy.next_delay(1, FlakyError(), 0.0) for _ in range(50)}
    assert len(delays) > 1
    assert all(d is not None and 0.0 <= d <= 1.0 for d in delays)


def test_the_default_policy_is_usable() -> None:
    policy = RetryPolicy()
    first = policy.next_delay(1, FlakyError(), 0.0)
    assert first is not None
    assert 0.0 <= first <= 0.1
    assert policy.next_delay(policy.max_attempts, FlakyError(), 0.0) is None


# -- when to give up ----------------------------------------------------------------------------


@settings(deadline=None)  # no flaky DeadlineExceeded on a loaded machine
@given(max_attempts=st.integers(1, 30), jitter=st.booleans())
def test_max_attempts_is_honoured(max_attempts: int, jitter: bool) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, backoff=0.01, jitter=jitter)
    for attempt in range(1, max_attempts):
        assert policy.next_delay(attempt, FlakyError(), elapsed=0.0) is not None
    assert policy.next_delay(max_attempts, FlakyError(), elapsed=0.0) is None
    assert policy.next_delay(max_attempts + 1, FlakyError(), elapsed=0.0) is None


def test_max_attempts_one_never_retries() -> None:
    assert RetryPolicy(max_attempts=1).next_delay(1, FlakyError(), 0.0) is None


@settings(deadline=None)  # no flaky DeadlineExceeded on a loaded machine
@given(
    backoff=st.floats(min_value=0.01, max_value=10.0),
    deadline=st.floats(min_value=0.01, max_value=100.0),
    elapsed=st.floats(min_value=0.0, max_value=200.0),
)
def test_deadline_gives_up_when_the_next_attempt_would_start_after_it(
    backoff: float, deadline: float, elapsed: float
) -> None:
    policy = RetryPolicy(
        max_attempts=100, backoff=backoff, max_backoff=backoff, jitter=False, deadline=deadline
    )
    start_of_next = elapsed + backoff
    assume(abs(start_of_next - deadline) > 1e-6 * max(1.0, deadline))  # off the boundary
    delay = policy.next_delay(1, FlakyError(), elapsed=elapsed)
    if start_of_next < deadline:
        assert delay == backoff
    else:
        assert delay is None


def test_deadline_looks_at_the_delay_it_would_wait() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=1.0, max_backoff=60, jitter=False, deadline=10)
    assert policy.next_delay(1, FlakyError(), elapsed=0.0) == 1.0  # retry at 1
    assert policy.next_delay(3, FlakyError(), elapsed=5.0) == 4.0  # retry at 9
    assert policy.next_delay(4, FlakyError(), elapsed=5.0) is None  # would retry at 13
    assert policy.next_delay(1, FlakyError(), elapsed=9.5) is None  # would retry at 10.5


# -- which errors are retried -------------------------------------------------------------------


def test_retry_on_limits_what_is_retried() -> None:
    policy = RetryPolicy(retry_on=(FlakyError, KeyError), jitter=False)
    assert policy.next_delay(1, FlakyError(), 0.0) is not None
    assert policy.next_delay(1, FlakyChildError(), 0.0) is not None
    assert policy.next_delay(1, KeyError("k"), 0.0) is not None
    assert policy.next_delay(1, FatalError(), 0.0) is None


def test_retry_on_accepts_one_class() -> None:
    # Accepted at run time and by the error message; the annotation says tuple only.
    policy = RetryPolicy(retry_on=FlakyError, jitter=False)  # type: ignore[arg-type]
    assert policy.retry_on == (FlakyError,)
    assert policy.next_delay(1, FlakyError(), 0.0) is not None
    assert policy.next_delay(1, FatalError(), 0.0) is None


def test_never_retry_on_wins_over_retry_on() -> None:
    policy = RetryPolicy(retry_on=(FlakyError,), never_retry_on=(FlakyChildError,), jitter=False)
    assert policy.next_delay(1, FlakyError(), 0.0) is not None
    assert policy.next_delay(1, FlakyChildError(), 0.0) is None


def test_timeouts_are_retried_by_default() -> None:
    assert RetryPolicy().next_delay(1, JobTimeoutError("slow"), 0.0) is not None


def test_non_retryable_error_is_never_retried() -> None:
    class PermanentError(NonRetryableError):
        pass

    for policy in (
        RetryPolicy(),
        RetryPolicy(retry_on=(NonRetryableError,)),
        RetryPolicy(retry=tenacity.retry_always),
    ):
        assert policy.next_delay(1, NonRetryableError("no"), 0.0) is None
        assert policy.next_delay(1, PermanentError("no"), 0.0) is None


@pytest.mark.parametrize(
    "error",
    [KeyboardInterrupt(), SystemExit(1), GeneratorExit(), JobInterrupted(), Custom()],
    ids=type,
)
@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(retry_on=(BaseException,)),
        RetryPolicy(retry_on=(BaseException,), max_attempts=100, stop=tenacity.stop_never),
        RetryPolicy(retry=tenacity.retry_always),
        RetryPolicy(retry=tenacity.retry_if_exception_type(BaseException)),
    ],
    ids=["retry_on", "stop_never", "retry_always", "retry_if_exception_type"],
)
def test_base_exceptions_are_never_retried(policy: RetryPolicy, error: BaseException) -> None:
    assert policy.next_delay(1, error, 0.0) is None


# -- tenacity strategies replace the defaults ---------------------------------------------------


def test_custom_wait_is_used() -> None:
    policy = RetryPolicy(max_attempts=5, wait=tenacity.wait_fixed(7))
    assert [policy.next_delay(n, FlakyError(), 0.0) for n in range(1, 5)] == [7.0] * 4


def test_custom_waits_compose() -> None:
    wait = tenacity.wait_fixed(1) + tenacity.wait_incrementing(start=0, increment=2)
    policy = RetryPolicy(max_attempts=5, wait=wait)
    assert [policy.next_delay(n, FlakyError(), 0.0) for n in range(1, 5)] == [1.0, 3.0, 5.0, 7.0]


def test_custom_wait_sees_the_attempt_number_and_error() -> None:
    seen: list[tuple[int, BaseException | None]] = []

    class Recording(tenacity.wait.wait_base):
        def __call__(self, retry_state: tenacity.RetryCallState) -> float:
            assert retry_state.outcome is not None
            seen.append((retry_state.attempt_number, retry_state.outcome.exception()))
            return 0.25

    error = FlakyError("x")
    assert RetryPolicy(wait=Recording()).next_delay(2, error, 0.0) == 0.25
    assert seen == [(2, error)]


def test_custom_stop_replaces_max_attempts_and_deadline() -> None:
    policy = RetryPolicy(
        max_attempts=2, deadline=1.0, jitter=False, stop=tenacity.stop_after_attempt(5)
    )
    assert policy.next_delay(3, FlakyError(), elapsed=100.0) is not None
    assert policy.next_delay(4, FlakyError(), elapsed=100.0) is not None
    assert policy.next_delay(5, FlakyError(), elapsed=0.0) is None


def test_custom_stop_after_delay_sees_the_elapsed_time() -> None:
    policy = RetryPolicy(max_attempts=100, stop=tenacity.stop_after_delay(10))
    assert policy.next_delay(1, FlakyError(), elapsed=9.0) is not None
    assert policy.next_delay(1, FlakyError(), elapsed=11.0) is None


def test_custom_retry_replaces_retry_on() -> None:
    policy = RetryPolicy(
        retry_on=(FlakyError,),
        never_retry_on=(KeyError,),
        retry=tenacity.retry_if_exception_message(match="again"),
    )
    assert policy.next_delay(1, KeyError("again"), 0.0) is None  # str() is "'again'"
    assert policy.next_delay(1, ValueError("again"), 0.0) is not None
    assert policy.next_delay(1, FlakyError("broken"), 0.0) is None


def test_custom_strategies_compose() -> None:
    policy = RetryPolicy(
        wait=tenacity.wait_fixed(2),
        stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(5),
        retry=tenacity.retry_if_exception_type(FlakyError)
        & tenacity.retry_if_not_exception_type(FlakyChildError),
    )
    assert policy.next_delay(1, FlakyError(), elapsed=0.0) == 2.0
    assert policy.next_delay(1, FlakyChildError(), elapsed=0.0) is None
    assert policy.next_delay(3, FlakyError(), elapsed=0.0) is None
    assert policy.next_delay(1, FlakyError(), elapsed=6.0) is None


# -- the policy object --------------------------------------------------------------------------


def test_policy_is_immutable_and_comparable() -> None:
    policy = RetryPolicy(max_attempts=4, backoff=1.0, max_backoff=8.0)
    with pytest.raises(AttributeError, match="max_attempts"):
        policy.max_attempts = 5  # type: ignore[misc]
    assert policy == RetryPolicy(max_attempts=4, backoff=1.0, max_backoff=8.0)
    assert policy != RetryPolicy(max_attempts=5, backoff=1.0, max_backoff=8.0)


# -- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1, got 0"),
        ({"max_attempts": -1}, ValueError, "max_attempts must be >= 1, got -1"),
        ({"max_attempts": 2.0}, TypeError, "max_attempts must be an int, got float"),
        ({"max_attempts": True}, TypeError, "max_attempts must be an int, got bool"),
        ({"max_attempts": "3"}, TypeError, "max_attempts must be an int, got str"),
        ({"backoff": -0.1}, ValueError, "backoff must be >= 0"),
        ({"backoff": math.nan}, ValueError, "backoff must be >= 0"),
        ({"backoff": "1"}, TypeError, "backoff must be a number, got str"),
        ({"backoff": True}, TypeError, "backoff must be a number, got bool"),
        ({"max_backoff": -1.0}, ValueError, "max_backoff must be >= 0"),
        ({"max_backoff": math.nan}, ValueError, "max_backoff must be >= 0"),
        ({"max_backoff": "1"}, TypeError, "max_backoff must be a number, got str"),
        ({"backoff": 5.0, "max_backoff": 1.0}, ValueError, "max_backoff must be >= backoff"),
        ({"multiplier": 0.5}, ValueError, "multiplier must be >= 1"),
        ({"multiplier": math.nan}, ValueError, "multiplier must be >= 1"),
        ({"multiplier": False}, TypeError, "multiplier must be a number, got bool"),
        ({"deadline": 0}, ValueError, "deadline must be > 0"),
        ({"deadline": -5.0}, ValueError, "deadline must be > 0"),
        ({"deadline": math.nan}, ValueError, "deadline must be > 0"),
        ({"deadline": "10"}, TypeError, "deadline must be a number, got str"),
        ({"retry_on": "FlakyError"}, TypeError, "retry_on must be an exception class"),
        ({"retry_on": (FlakyError, int)}, TypeError, "retry_on must be an exception class"),
        ({"retry_on": [FlakyError]}, TypeError, "retry_on must be an exception class"),
        ({"never_retry_on": FlakyError()}, TypeError, "never_retry_on must be an exception class"),
        ({"never_retry_on": (str,)}, TypeError, "never_retry_on must be an exception class"),
        ({"wait": 5}, TypeError, "wait must be a tenacity wait_base"),
        ({"stop": tenacity.wait_fixed(1)}, TypeError, "stop must be a tenacity stop_base"),
        ({"retry": "always"}, TypeError, "retry must be a tenacity retry_base"),
    ],
)
def test_bad_arguments_are_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**kwargs)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError, match="positional argument"):
        RetryPolicy(3)  # type: ignore[call-arg]
