"""Live statistics of one pool: counters per job state, attempt counts, latency summaries.

Counters change in one place only: the job transition functions of :mod:`chronos._ledger`,
holding :attr:`Stats.lock` (the general one calls :meth:`Stats._record`; the moves every job
makes, in ``admit``, ``release_pending``, ``start_attempt`` and ``succeed_attempt``, write
the same fields inline: they are :meth:`Stats._record`'s copies).  Nothing else changes a job
counter, so a :class:`StatsSnapshot` (taken under the same lock) always adds up:
``submitted == pending + queued + running + waiting_to_retry + succeeded + failed + timed_out
+ cancelled``.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from chronos._validate import check_int
from chronos.status import JobStatus

__all__ = [
    "AtomicCounter",
    "LatencySummary",
    "Stats",
    "StatsSnapshot",
]

#: How many recent samples each latency summary keeps for its percentiles.
SAMPLE_WINDOW = 10_000


class AtomicCounter:
    """An integer that many threads may change at once without losing an update.

    Thread-safety: every method may be called from any thread; each is atomic.
    """

    __slots__ = ("_lock", "_value")

    def __init__(self, value: int = 0) -> None:
        """Start at ``value``.

        Raises:
            TypeError: ``value`` is not an int.
        """
        self._lock = threading.Lock()  # guards _value
        self._value = check_int("value", value)

    def increment(self, amount: int = 1) -> int:
        """Add ``amount`` and return the new value.

        Raises:
            TypeError: ``amount`` is not an int.
        """
        if type(amount) is not int:  # the one check of a hot-ish path; bool is refused too
            check_int("amount", amount)
        with self._lock:
            self._value += amount
            return self._value

    def decrement(self, amount: int = 1) -> int:
        """Subtract ``amount`` and return the new value.

        Raises:
            TypeError: ``amount`` is not an int.
        """
        if type(amount) is not int:
            check_int("amount", amount)
        return self.increment(-amount)

    def set(self, value: int) -> None:
        """Make it ``value`` (for a gauge recomputed from its source of truth).

        Raises:
            TypeError: ``value`` is not an int.
        """
        value = check_int("value", value)
        with self._lock:
            self._value = value

    @property
    def value(self) -> int:
        """The current value."""
        with self._lock:
            return self._value

    def __repr__(self) -> str:
        return f"AtomicCounter({self.value})"


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a latency, in seconds, over the most recent samples.

    ``count`` and ``max`` cover every sample ever observed; ``p50``/``p95``/``p99`` cover the
    last :data:`SAMPLE_WINDOW` samples (nearest-rank).  All are 0.0 when nothing was observed.
    """

    count: int = 0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, count: int, samples: list[float], maximum: float) -> LatencySummary:
        if not samples:
            return cls(count=count, max=maximum)
        ordered = sorted(samples)

        def rank(q: float) -> float:
            index = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
            return ordered[index]

        return cls(count=count, p50=rank(0.50), p95=rank(0.95), p99=rank(0.99), max=maximum)


class _Samples:
    """Count, maximum and a sliding window of recent samples.  Not locked: owned by Stats."""

    __slots__ = ("count", "maximum", "window")

    def __init__(self) -> None:
        self.count = 0
        self.maximum = 0.0
        self.window: deque[float] = deque(maxlen=SAMPLE_WINDOW)

    def copy(self) -> tuple[int, list[float], float]:
        return self.count, list(self.window), self.maximum

    def observe(self, value: float) -> None:
        self.count += 1
        if value > self.maximum:
            self.maximum = value
        self.window.append(value)


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """An immutable, consistent copy of a pool's :class:`Stats`.

    Every field was read under one lock, so the job counts add up:
    ``submitted == in_flight + finished``.
    """

    submitted: int
    pending: int
    queued: int
    running: int
    waiting_to_retry: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    attempts: int
    retries: int
    attempt_timeouts: int
    abandoned_threads: int
    abandoned_threads_total: int
    queue_wait: LatencySummary
    run_time: LatencySummary

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet terminal."""
        return self.pending + self.queued + self.running + self.waiting_to_retry

    @property
    def finished(self) -> int:
        """Jobs in a terminal state."""
        return self.succeeded + self.failed + self.timed_out + self.cancelled

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (nested dicts for the latency summaries), e.g. for JSON or logs."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, LatencySummary):
                value = {k: getattr(value, k) for k in value.__slots__}
            out[name] = value
        return out


def _zero_counts() -> dict[JobStatus, int]:
    return dict.fromkeys(JobStatus, 0)


@dataclass(eq=False)
class Stats:
    """Counters for one pool.

    Thread-safety: every public method may be called from any thread. :meth:`snapshot`
    returns an immutable :class:`StatsSnapshot` taken under :attr:`lock`, so its fields always
    add up. The job counters are written only by the job transition function, which holds
    :attr:`lock` while it changes a job's status and these counters together.  The two
    thread counters are :class:`AtomicCounter` because threads come and go outside any job
    transition.
    """

    #: Guards every field below except the two AtomicCounters; held by job transitions.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    submitted: int = 0
    attempts: int = 0
    retries: int = 0
    attempt_timeouts: int = 0
    #: Threads still running an attempt whose job already left them (timed out or cancelled).
    abandoned_threads: AtomicCounter = field(default_factory=AtomicCounter)
    #: Every thread ever abandoned.
    abandoned_threads_total: AtomicCounter = field(default_factory=AtomicCounter)
    _counts: dict[JobStatus, int] = field(default_factory=_zero_counts, repr=False)
    _queue_wait: _Samples = field(default_factory=_Samples, repr=False)
    _run_time: _Samples = field(default_factory=_Samples, repr=False)

    def count(self, status: JobStatus | str) -> int:
        """How many jobs are in ``status`` (a JobStatus, or its value: ``"queued"``) now.

        Raises:
            TypeError: ``status`` is not a JobStatus nor a str.
            ValueError: ``status`` is a str that names no JobStatus.
        """
        if not isinstance(status, str):  # a JobStatus is a str too
            raise TypeError(f"status must be a JobStatus, got {type(status).__name__}")
        with self.lock:
            count: int | None = self._counts.get(status)  # type: ignore[call-overload]
        if count is None:
            names = ", ".join(s.value for s in JobStatus)
            raise ValueError(f"status must be a JobStatus or one of {names}, got {status!r}")
        return count

    def snapshot(self) -> StatsSnapshot:
        """An immutable, consistent copy of every counter and latency summary."""
        with self.lock:
            counts = dict(self._counts)
            plain = (self.submitted, self.attempts, self.retries, self.attempt_timeouts)
            waits = (
                self._queue_wait.count,
                list(self._queue_wait.window),
                self._queue_wait.maximum,
            )
            runs = (self._run_time.count, list(self._run_time.window), self._run_time.maximum)
        submitted, attempts, retries, attempt_timeouts = plain
        return StatsSnapshot(
            submitted=submitted,
            pending=counts[JobStatus.PENDING],
            queued=counts[JobStatus.QUEUED],
            running=counts[JobStatus.RUNNING],
            waiting_to_retry=counts[JobStatus.RETRY_WAIT],
            succeeded=counts[JobStatus.SUCCEEDED],
            failed=counts[JobStatus.FAILED],
            timed_out=counts[JobStatus.TIMED_OUT],
            cancelled=counts[JobStatus.CANCELLED],
            attempts=attempts,
            retries=retries,
            attempt_timeouts=attempt_timeouts,
            abandoned_threads=self.abandoned_threads.value,
            abandoned_threads_total=self.abandoned_threads_total.value,
            queue_wait=LatencySummary.of(*waits),
            run_time=LatencySummary.of(*runs),
        )

    # -- called by chronos._ledger's transitions only, with self.lock held --------------------
    # Inlined copies (keep them in step): chronos._ledger.admit, release_pending,
    # start_attempt and succeed_attempt.

    def _record(
        self,
        old: JobStatus,
        new: JobStatus,
        *,
        queue_wait: float | None = None,
        run_time: float | None = None,
        timed_out: bool = False,
    ) -> None:
        counts = self._counts
        if old is JobStatus.CREATED:
            self.submitted += 1
        else:
            counts[old] -= 1
        counts[new] += 1
        if new is JobStatus.RUNNING:
            self.attempts += 1
        elif new is JobStatus.RETRY_WAIT:
            self.retries += 1
        if queue_wait is not None:
            self._queue_wait.observe(queue_wait)
        if run_time is not None:
            self._run_time.observe(run_time)
        if timed_out:
            self.attempt_timeouts += 1
