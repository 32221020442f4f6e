"""The durable half of the backend contract: jobs kept in a store that outlives a process.

A :class:`DurableBackend` keeps :class:`chronos.JobSpec` jobs in named queues of a store
(SQLite, Redis, PostgreSQL) that any number of worker processes share.  The pool's
in-process :class:`chronos.backends.Backend` is unchanged; a durable worker claims from
this contract and feeds its pool.

**At least once, with leases.**  :meth:`DurableBackend.claim` moves a job to RUNNING under
a lease: ``lease`` seconds, timed on **the store's clock** (Redis ``TIME``, PostgreSQL
``now()``; SQLite runs on one machine, so its clock is the host's wall clock, injectable
for tests).  Clients only ever send durations, so their clocks may be wrong.  A worker that
dies stops beating; once its lease has expired, :meth:`DurableBackend.recover` (any
process may run it, it is idempotent; run it every lease/3) hands the job out again.  A job
may therefore run more than once: its side effects should be idempotent.

**Fencing tokens.**  Every claim adds one to the job's ``attempt`` and to its ``token``
(which never goes down, not even on :meth:`DurableBackend.requeue`).  Heartbeats and
finishes name ``(id, token)`` and act only while that pair is the live one: the job is
RUNNING and its token is still that one.  The job sees its token too: an idempotency key
for its own side effects.  A lease that expired but was not recovered yet is still live
(a late heartbeat or finish still counts); once recovered, it is lost for good.

**Finishing** (:meth:`DurableBackend.finish`) is the terminal write: outcome, lease release,
unique-key release and counters in one transaction, answering per item
(:class:`chronos.backends.FinishResult`):

- ``APPLIED``: the pair was live; the outcome is recorded.
- ``DUPLICATE``: this very token already finished (a replayed call after a lost reply):
  nothing changes, and it counts as a success.
- ``FENCED``: the claim was lost (recovered, cancelled, the job requeued or purged): the
  outcome is dropped, and counted.

**States and moves** (:class:`JobState`)::

    enqueue -> SCHEDULED (not_before in the future) | READY
    SCHEDULED --due: recover() or claim()--> READY --claim--> RUNNING
    RUNNING --COMPLETE--> SUCCEEDED
    RUNNING --RETRY(delay)--> SCHEDULED/READY (DEAD once attempts are used up)
    RUNNING --FAIL--> DEAD        RUNNING --RELEASE--> READY (attempt refunded)
    RUNNING --lease expired + recover()--> READY, or DEAD once attempts are used up
    SCHEDULED/READY --cancel--> CANCELLED; RUNNING --cancel--> cancel requested (reported
        by heartbeat); a RETRY, FAIL, RELEASE or expired lease of such a job -> CANCELLED
    DEAD/CANCELLED --requeue--> READY (attempt 0)
    SUCCEEDED/DEAD/CANCELLED --purge--> gone

``max_attempts`` bounds every attempt, crashed ones included, so a job that kills its
worker (a crash loop) ends DEAD.  Results and errors are stored as JSON and text: nothing is
pickled.

Thread-safety: every method of a durable backend may be called from any thread, and any
number of processes may share one store.  :meth:`DurableBackend.close` is the exception: call
it once the other threads are done with the backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from chronos.backends.base import FinishResult
from chronos.spec import JobSpec

__all__ = [
    "LIVE_STATES",
    "TERMINAL_STATES",
    "Claimed",
    "DurableBackend",
    "DurableStatistics",
    "Finish",
    "FinishKind",
    "FinishResult",
    "HeartbeatReply",
    "JobRecord",
    "JobState",
    "Recovery",
    "dump_result",
]


class JobState(StrEnum):
    """Where a durable job is.  Each job is in exactly one state."""

    #: Waiting for its not-before time or its retry time.
    SCHEDULED = "scheduled"
    #: May be claimed now.
    READY = "ready"
    #: Claimed: an attempt holds a lease on it.
    RUNNING = "running"
    #: Finished with a result.
    SUCCEEDED = "succeeded"
    #: Failed for good: attempts used up, an unknown task, a non-retryable error.
    DEAD = "dead"
    #: Cancelled before it ran, or while it ran at its worker's next look.
    CANCELLED = "cancelled"


#: States in which a job holds its unique key.
LIVE_STATES = frozenset({JobState.SCHEDULED, JobState.READY, JobState.RUNNING})
#: States that only :meth:`DurableBackend.requeue` and :meth:`DurableBackend.purge` leave.
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})


class FinishKind(StrEnum):
    """The outcome a :class:`Finish` reports."""

    #: Done: ``result`` (JSON) is stored; SUCCEEDED.
    COMPLETE = "complete"
    #: Failed, to run again after ``delay`` seconds (SCHEDULED, or READY at once for 0):
    #: the attempt is not refunded, and a job whose attempts are used up goes DEAD.
    RETRY = "retry"
    #: Failed for good (``error``): DEAD.
    FAIL = "fail"
    #: Handed back unstarted (a draining worker): READY again, the attempt refunded.
    RELEASE = "release"


@dataclass(frozen=True, slots=True)
class Claimed:
    """One claimed job: run ``spec`` and finish with ``(id, token)``.

    Attributes:
        id: the job's id.
        token: the fencing token of this claim (also an idempotency key for the job).
        attempt: 1 for the first attempt, counting crashed ones.
        queue: the queue it was claimed from.
        spec: the job.

    Thread-safety: immutable.
    """

    id: str
    token: int
    attempt: int
    queue: str
    spec: JobSpec


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of one claimed attempt, for :meth:`DurableBackend.finish`.

    Attributes:
        id, token: the claim.
        kind: what happened.
        result: the job's result, JSON-able (COMPLETE only).
        error: a description of the failure (RETRY, FAIL), kept as text.
        delay: seconds before a retry may run (RETRY), finite and >= 0.

    Raises:
        TypeError, ValueError: for a bad field, naming it (a result that is not JSON-able is
            refused by the backend, before it writes anything).

    Thread-safety: immutable.
    """

    id: str
    token: int
    kind: FinishKind
    result: Any = None
    error: str | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise TypeError(f"id must be a non-empty str, got {self.id!r}")
        if isinstance(self.token, bool) or not isinstance(self.token, int):
            raise TypeError(f"token must be an int, got {type(self.token).__name__}")
        object.__setattr__(self, "kind", FinishKind(self.kind))
        if self.error is not None and not isinstance(self.error, str):
            raise TypeError(f"error must be a str or None, got {type(self.error).__name__}")
        delay = self.delay
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"delay must be a number, got {type(delay).__name__}")
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delay must be finite and >= 0, got {delay!r}")


def dump_result(result: Any) -> str:
    """``result`` as JSON text, for a backend to store.

    Raises:
        TypeError: ``result`` is not JSON-able (a NaN or infinity included).
    """
    try:
        return json.dumps(result, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a job's result must be JSON-able: {exc}") from exc


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """What :meth:`DurableBackend.heartbeat` found.

    Attributes:
        lost: ids of claims that are no longer live: stop them, their finish will be FENCED.
        cancel_requested: ids of live claims whose job someone asked to cancel.

    Thread-safety: immutable.
    """

    lost: tuple[str, ...]
    cancel_requested: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What one :meth:`DurableBackend.recover` moved.

    Attributes:
        requeued: RUNNING jobs with an expired lease made READY again.
        dead: RUNNING jobs with an expired lease and no attempt left, made DEAD.
        promoted: SCHEDULED jobs that came due, made READY.
        cancelled: RUNNING jobs with an expired lease and a cancel request, made CANCELLED.

    Thread-safety: immutable.
    """

    requeued: int
    dead: int
    promoted: int
    cancelled: int = 0


@dataclass(frozen=True, slots=True)
class JobRecord:
    """Everything a store knows about one job, read at one moment.

    Attributes:
        id, queue, state: which job, where, and where it is.
        attempt: attempts claimed so far (0 before the first claim).
        max_attempts: the bound on ``attempt``.
        token: the token of the latest claim (0 before the first).
        spec: the job.
        result: the decoded result (SUCCEEDED), else None.
        error: the latest failure's text, or None.
        enqueued_at, run_at: store-clock times (epoch seconds) of the enqueue and of when it
            became (or becomes) due.
        lease_until: when the lease of a RUNNING job expires, else None.
        finished_at: when it reached its terminal state, else None.
        cancel_requested: someone asked to cancel it while it ran.
        owner: the owner named by the latest claim (None before the first).

    Thread-safety: immutable.
    """

    id: str
    queue: str
    state: JobState
    attempt: int
    max_attempts: int
    token: int
    spec: JobSpec
    result: Any
    error: str | None
    enqueued_at: float
    run_at: float
    lease_until: float | None
    finished_at: float | None
    cancel_requested: bool
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class DurableStatistics:
    """A snapshot of one queue of a store, read at one moment.

    The counters are kept *in the store* (they outlive processes and add up over every
    process that uses the queue) and counted per queue of the job concerned; a finish for
    a job that does not exist is FENCED but counted nowhere.

    Attributes:
        kind: the backend's kind (``"sqlite"``...).
        queue: the queue.
        counts: jobs per state, every state present.
        applied, duplicates, fenced: finishes answered so.
        recovered: expired leases that :meth:`DurableBackend.recover` handled.
        deduplicated: enqueues answered with a live job's id (its unique key).

    Thread-safety: immutable.
    """

    kind: str
    queue: str
    counts: Mapping[JobState, int]
    applied: int
    duplicates: int
    fenced: int
    recovered: int
    deduplicated: int


@runtime_checkable
class DurableBackend(Protocol):
    """A store of durable jobs.  See the module docstring for the contract.

    Thread-safety: every method may be called from any thread (:meth:`close` once the
    others are done); any number of processes may share one store.
    """

    def enqueue(self, specs: Sequence[JobSpec], queue: str = "default") -> list[str]:
        """Add ``specs`` to ``queue`` in one transaction; their ids, in order.

        A spec with a ``not_before`` in the future goes SCHEDULED, else READY.  A spec whose
        ``unique_key`` a live job of the queue holds adds nothing: its id is that job's
        (counted ``deduplicated``).  ``max_attempts`` is ``spec.retry.max_attempts``, or the
        backend's default without a retry policy.
        """
        ...

    def claim(self, queue: str, n: int, lease: float, owner: str) -> list[Claimed]:
        """Claim up to ``n`` READY jobs of ``queue`` (first making due SCHEDULED ones READY):
        highest priority first, then earliest ``run_at``, then enqueue order.  Each gets
        attempt + 1, token + 1, a lease of ``lease`` seconds and ``owner`` recorded."""
        ...

    def heartbeat(self, claims: Sequence[tuple[str, int]], lease: float) -> HeartbeatReply:
        """Extend the lease of every live ``(id, token)`` to now + ``lease`` in one call;
        report the lost ones and those with a cancel request."""
        ...

    def finish(self, finishes: Sequence[Finish]) -> list[FinishResult]:
        """Apply ``finishes`` in one transaction; one answer each, in order.

        Raises:
            TypeError: a COMPLETE result is not JSON-able (nothing is written).
        """
        ...

    def recover(self, queue: str, limit: int = 1000) -> Recovery:
        """Return RUNNING jobs whose lease expired to READY (DEAD when their attempts are
        used up, CANCELLED when a cancel was requested), and make due SCHEDULED jobs READY:
        at most ``limit`` of each.  Idempotent; any process may run it."""
        ...

    def cancel(self, ids: Sequence[str]) -> list[JobState | None]:
        """Cancel jobs: SCHEDULED/READY ones at once, RUNNING ones by a request that
        :meth:`heartbeat` reports; terminal ones are left alone.  The state after each call,
        or None for an unknown id."""
        ...

    def get(self, id: str) -> JobRecord | None:
        """The job ``id``, or None."""
        ...

    def list_jobs(
        self,
        queue: str,
        state: JobState | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[JobRecord]:
        """Up to ``limit`` jobs of ``queue`` (in ``state``, if given), in id order, after
        ``after_id``: pass the last id of a page to get the next."""
        ...

    def requeue(self, ids: Sequence[str]) -> int:
        """Make DEAD/CANCELLED jobs READY again with attempt 0; how many moved.  A job whose
        unique key a live job holds meanwhile stays where it is."""
        ...

    def purge(self, older_than: float) -> int:
        """Delete terminal jobs (every queue) finished more than ``older_than`` seconds ago,
        in batches; how many."""
        ...

    def statistics(self, queue: str = "default") -> DurableStatistics:
        """A snapshot of ``queue``."""
        ...

    def wait_for_work(self, queue: str, timeout: float) -> bool:
        """Block until a job of ``queue`` may be claimable (True) or ``timeout`` real seconds
        pass (False).  A hint only: a claim may still come back empty."""
        ...

    def close(self) -> None:
        """Release the backend's resources; idempotent.  :meth:`wait_for_work` returns False
        from now on (a waiting thread at once); other methods raise RuntimeError."""
        ...
