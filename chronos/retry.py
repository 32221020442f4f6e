"""RetryPolicy: tenacity's strategies turned into "retry after N seconds" or "give up".

chronos uses tenacity as the *policy* only.  It never runs tenacity's retry loop, which
sleeps in the calling thread: a job waiting for its retry holds no worker thread; it waits in
the pool's timer heap and re-enters the queue (or its Dispatcher) when due.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from chronos._validate import check_bool, check_count, check_number
from chronos.errors import NonRetryableError

__all__ = ["RetryPolicy"]

#: Never retried, whatever a policy says.
NEVER_RETRIED: tuple[type[BaseException], ...] = (
    NonRetryableError,
    KeyboardInterrupt,
    SystemExit,
)

DEFAULT_MAX_BACKOFF = 30.0
#: No retry waits longer than this (seconds), whatever a custom ``wait=`` strategy says;
#: one that answers infinity or NaN waits ``max_backoff`` instead.
MAX_RETRY_DELAY = 24 * 3600.0

#: A tenacity strategy: a ``*_base`` instance, or any callable of a ``RetryCallState`` (as
#: tenacity itself accepts).
Strategy = Callable[[tenacity.RetryCallState], Any]

# tenacity's strategies read a RetryCallState, whose constructor wants a retrying object.
# None of stop/wait/retry look at it; this one is never called.
_RETRYING = tenacity.Retrying()


def _check_exception_types(name: str, value: object) -> tuple[type[BaseException], ...]:
    if isinstance(value, type):
        value = (value,)
    if not isinstance(value, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        raise TypeError(f"{name} must be an exception class or a tuple of them, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often, and after how long, a failed or timed-out attempt runs again.

    By default: up to ``max_attempts`` attempts in all; the n-th retry waits a random time
    in ``[0, min(max_backoff, backoff * multiplier ** (n - 1))]`` ("full jitter"), or exactly
    that bound with ``jitter=False``; ``max_backoff`` defaults to 30 s (or ``backoff``, if
    larger); exceptions in ``retry_on`` are retried unless they are
    in ``never_retry_on``.  With ``deadline``, no retry is scheduled that would start later
    than ``deadline`` seconds after the first attempt started.

    Any tenacity strategy replaces the matching default for full control: ``wait=`` (e.g.
    ``tenacity.wait_fixed(1)``), ``stop=`` (replaces both ``max_attempts`` and ``deadline``)
    and ``retry=`` (replaces ``retry_on``/``never_retry_on``); as in tenacity, a plain
    callable of a ``tenacity.RetryCallState`` works too.  A delay is never infinite: the
    default wait is capped by ``max_backoff`` (finite), and a custom one by
    :data:`MAX_RETRY_DELAY` (an infinite or NaN answer waits ``max_backoff``).  Whatever
    they say,
    :class:`chronos.NonRetryableError`, ``KeyboardInterrupt``, ``SystemExit`` and other
    ``BaseException`` subclasses that are not ``Exception`` are never retried.

    Thread-safety: immutable; share one policy between many jobs and threads.
    """

    max_attempts: int = 3
    backoff: float = 0.1
    max_backoff: float | None = None
    multiplier: float = 2.0
    jitter: bool = True
    deadline: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    never_retry_on: tuple[type[BaseException], ...] = ()
    wait: wait_base | Strategy | None = None
    stop: stop_base | Strategy | None = None
    retry: retry_base | Strategy | None = None
    _wait: Any = field(init=False, repr=False, compare=False)
    _stop: Any = field(init=False, repr=False, compare=False)
    _retry: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_count("max_attempts", self.max_attempts, 1)
        # Finite: an infinite backoff would leave the job waiting to retry for ever.
        check_number("backoff", self.backoff, minimum=0.0, inclusive=True, finite=True)
        check_number("multiplier", self.multiplier, minimum=1.0, inclusive=True, finite=True)
        if self.max_backoff is None:
            object.__setattr__(self, "max_backoff", max(DEFAULT_MAX_BACKOFF, float(self.backoff)))
        # Finite: it caps every delay, and a job must never wait for ever to retry.
        check_number("max_backoff", self.max_backoff, minimum=0.0, inclusive=True, finite=True)
        assert self.max_backoff is not None
        if self.max_backoff < self.backoff:
            raise ValueError(
                f"max_backoff must be >= backoff, got {self.max_backoff!r} < {self.backoff!r}"
            )
        check_bool("jitter", self.jitter)
        if self.deadline is not None:
            check_number("deadline", self.deadline, minimum=0.0, inclusive=False)
        object.__setattr__(self, "retry_on", _check_exception_types("retry_on", self.retry_on))
        object.__setattr__(
            self,
            "never_retry_on",
            _check_exception_types("never_retry_on", self.never_retry_on),
        )
        for name, base in (("wait", wait_base), ("stop", stop_base), ("retry", retry_base)):
            value = getattr(self, name)
            wrong_family = isinstance(value, wait_base | stop_base | retry_base)
            if value is not None and not (
                isinstance(value, base) or (callable(value) and not wrong_family)
            ):
                raise TypeError(
                    f"{name} must be a tenacity {base.__name__} (e.g. from tenacity.{name}) "
                    f"or a callable of a tenacity.RetryCallState, got {value!r}"
                )
        object.__setattr__(self, "_wait", self.wait or self._default_wait())
        object.__setattr__(self, "_stop", self.stop or self._default_stop())
        object.__setattr__(self, "_retry", self.retry or self._default_retry())

    def _default_wait(self) -> wait_base:
        cap = self.max_backoff
        assert cap is not None  # filled in by __post_init__
        if self.backoff == 0:  # tenacity's exponential overflows to its max after ~1024 tries
            return tenacity.wait_none()
        if self.jitter:
            return tenacity.wait_random_exponential(
                multiplier=self.backoff, max=cap, exp_base=self.multiplier
            )
        return tenacity.wait_exponential(
            multiplier=self.backoff, max=cap, exp_base=self.multiplier, min=0
        )

    def _default_stop(self) -> stop_base:
        stop: stop_base = tenacity.stop_after_attempt(self.max_attempts)
        if self.deadline is not None:
            stop = stop | tenacity.stop_before_delay(self.deadline)
        return stop

    def _default_retry(self) -> retry_base:
        retry: retry_base = tenacity.retry_if_exception_type(self.retry_on)
        if self.never_retry_on:
            retry = retry & tenacity.retry_if_not_exception_type(self.never_retry_on)
        return retry

    def next_delay(self, attempt_number: int, error: BaseException, elapsed: float) -> float | None:
        """Decide what follows a failed attempt.

        Args:
            attempt_number: the attempt that just failed, 1 for the first.
            error: what it raised (a :class:`chronos.JobTimeoutError` if it timed out).
            elapsed: seconds from the start of the first attempt to this failure.

        Returns:
            Seconds to wait before the next attempt, or None to give up.

        Raises:
            TypeError, ValueError: for a bad argument, naming it.
        """
        check_count("attempt_number", attempt_number, 1)
        if not isinstance(error, BaseException):
            raise TypeError(f"error must be an exception, got {type(error).__name__}")
        check_number("elapsed", elapsed, minimum=0.0, inclusive=True)
        if isinstance(error, NEVER_RETRIED) or not isinstance(error, Exception):
            return None
        state = tenacity.RetryCallState(_RETRYING, None, (), {})
        state.attempt_number = attempt_number
        state.start_time = 0.0
        outcome: tenacity.Future = tenacity.Future(attempt_number)
        outcome.set_exception(error)
        state.outcome, state.outcome_timestamp = outcome, elapsed
        if not self._retry(state):
            return None
        delay = float(self._wait(state))
        if not math.isfinite(delay):
            delay = float(self.max_backoff)  # type: ignore[arg-type]
        delay = max(0.0, delay)
        if self.wait is not None:  # the default wait is capped by max_backoff already
            delay = min(delay, MAX_RETRY_DELAY)
        state.upcoming_sleep = delay
        if self._stop(state):
            return None
        return delay
