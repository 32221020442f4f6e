"""Jobs, their attempts, and the one transition function that moves them between states.

Every status change of every job goes through :func:`_apply`, called with the owning pool's
:class:`Ledger` lock held.  It refuses moves the state machine does not allow, updates the
pool's :class:`chronos.Stats` in the same critical section, and keeps the ledger's set of
unfinished jobs.  Callers move jobs with compare-and-set helpers (:func:`move`,
:func:`start_attempt`, :func:`end_attempt`): when a worker and the timeout watchdog race to
end the same attempt, exactly one wins and the other gets ``False``.

State machine::

    CREATED -> PENDING -> QUEUED -> RUNNING -> SUCCEEDED | FAILED | TIMED_OUT
        \\_________________^            \\-> RETRY_WAIT -> QUEUED or PENDING (again)
    any state before a terminal one -> CANCELLED
    a waiting state -> FAILED, only when the pool breaks (its initializer raised)
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED as _CANCELLED_FUTURE
from concurrent.futures._base import CANCELLED_AND_NOTIFIED as _CANCELLED_AND_NOTIFIED
from concurrent.futures._base import FINISHED as _FINISHED
from concurrent.futures._base import LOGGER as _FUTURES_LOGGER
from concurrent.futures._base import PENDING as _PENDING_FUTURE
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from chronos._validate import check_number
from chronos.errors import IllegalTransitionError
from chronos.retry import RetryPolicy
from chronos.stats import Stats
from chronos.status import TERMINAL_STATES, JobStatus

if TYPE_CHECKING:
    from chronos.events import JobEvents

__all__ = ["Attempt", "AttemptOutcome", "Job", "JobFuture", "JobStatus", "Ledger"]

T = TypeVar("T")
_S = JobStatus

_LEGAL: dict[JobStatus, frozenset[JobStatus]] = {
    _S.CREATED: frozenset({_S.PENDING, _S.QUEUED}),
    _S.PENDING: frozenset({_S.QUEUED, _S.CANCELLED, _S.FAILED}),
    _S.QUEUED: frozenset({_S.RUNNING, _S.CANCELLED, _S.FAILED}),
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.TIMED_OUT, _S.RETRY_WAIT, _S.CANCELLED}),
    _S.RETRY_WAIT: frozenset({_S.QUEUED, _S.PENDING, _S.CANCELLED, _S.FAILED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.TIMED_OUT: frozenset(),
    _S.CANCELLED: frozenset(),
}
#: States from which a job can be cancelled without touching a running thread.
WAITING_STATES = frozenset({_S.PENDING, _S.QUEUED, _S.RETRY_WAIT})

_job_ids = itertools.count(1)
#: A Future's states once done; CANCELLED only lasts until set_running_or_notify_cancel(),
#: which resolve_cancelled() calls at once.
_DONE_FUTURE_STATES = frozenset({_CANCELLED_FUTURE, _CANCELLED_AND_NOTIFIED, _FINISHED})
_CANCELLED_FUTURE_STATES = frozenset({_CANCELLED_FUTURE, _CANCELLED_AND_NOTIFIED})

# Module globals for the hot paths: an attribute of an Enum class costs a lookup each time.
_CREATED = JobStatus.CREATED
_PENDING = JobStatus.PENDING
_QUEUED = JobStatus.QUEUED
_RUNNING = JobStatus.RUNNING
_RETRY_WAIT = JobStatus.RETRY_WAIT
_SUCCEEDED = JobStatus.SUCCEEDED
_FAILED = JobStatus.FAILED
_TIMED_OUT = JobStatus.TIMED_OUT
_CANCELLED = JobStatus.CANCELLED


def legal_moves(status: JobStatus) -> frozenset[JobStatus]:
    """The states a job in ``status`` may move to next."""
    return _LEGAL[status]


class AttemptOutcome(StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


_OUTCOME_SUCCEEDED = AttemptOutcome.SUCCEEDED


@dataclass(eq=False, slots=True)
class Attempt:
    """One run of a job's callable.

    ``started``/``ended``/``deadline`` are readings of the pool's clock.  ``ended``,
    ``outcome`` and ``error`` are written once, by whichever thread ends the attempt first
    (the worker, the timeout watchdog, or shutdown); a result that arrives later is dropped.
    """

    number: int
    worker: str
    started: float
    deadline: float | None = None
    ended: float | None = None
    outcome: AttemptOutcome | None = None
    error: BaseException | None = None
    #: Who ended it when its own thread did not: ``"timer"`` (its deadline passed while it
    #: ran) or ``"shutdown"``; None when its thread ended it (returned, raised, or came back
    #: past its deadline and timed itself out).  Then its thread's outcome was dropped.
    ended_by: str | None = None
    _cancelled: bool = field(default=False, repr=False)
    _cancel_event: threading.Event | None = field(default=None, repr=False)
    #: Set by the worker thread once the callable returned or raised (whoever ended the
    #: attempt): a retry held back for its abandoned thread (``wait_for_abandoned``) waits
    #: for it.
    _returned: bool = field(default=False, repr=False)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while it runs."""
        return None if self.ended is None else self.ended - self.started


class AttemptHolder(Protocol):
    """Where a worker publishes its running attempt (a worker slot)."""

    current: tuple[Job[Any], Attempt] | None


class Route(Protocol):
    """Where a job re-enters after its retry backoff: the pool's queue or a Dispatcher.

    A route with ``_tracks_jobs`` (a Dispatcher) counts its unfinished jobs in
    ``_outstanding``, which only the transition functions change, under the ledger lock:
    +1 at admission, -1 when the job becomes terminal, and then, at 0, a call to
    ``_all_finished()`` (under the ledger lock: it must only set an Event).
    """

    _tracks_jobs: bool
    _outstanding: int

    def requeue(self, job: Job[Any]) -> None: ...

    def _all_finished(self) -> None: ...


class Ledger:
    """The books of one pool: its Stats, its unfinished jobs, and whether it still admits.

    Thread-safety: all state is guarded by :attr:`lock` (the Stats lock); the transition
    helpers of this module take it.  :attr:`drained` is set once the ledger is closed and no
    job is unfinished.
    """

    def __init__(self, stats: Stats, events: JobEvents) -> None:
        self.stats = stats
        self.events = events
        self.lock = stats.lock
        self.closed = False  # guarded by lock; once True, admit() refuses
        self.drained = threading.Event()
        self._live: dict[int, Job[Any]] = {}  # guarded by lock: every admitted, unfinished job

    def close(self) -> bool:
        """Refuse further admissions.  Returns True for the call that closed it."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            if not self._live:
                self.drained.set()
            return True

    def live_jobs(self) -> list[Job[Any]]:
        """Every admitted job that is not terminal yet, oldest first."""
        with self.lock:
            return list(self._live.values())


def callable_name(fn: object) -> str:
    """A short, safe label for a callable: its qualified name, never a ``repr``.

    The qualified name is shortened past its last ``<locals>.`` (a function defined inside
    another is named ``inner``, a method of a local class ``Local.method``).

    ``functools.partial`` objects are unwrapped (their arguments never appear), and an object
    without a usable ``__qualname__`` or ``__name__`` is named by its type.  Reading those
    attributes runs no user code for functions, methods, builtins and classes; for anything
    else a failing lookup is ignored.
    """
    name = getattr(fn, "__qualname__", None)  # a function's: the common, fast case
    if type(name) is str:
        return name.rpartition("<locals>.")[2] if "<locals>" in name else name
    while isinstance(fn, functools.partial):
        fn = fn.func
    for attribute in ("__qualname__", "__name__"):
        try:
            name = getattr(fn, attribute, None)
        except Exception:  # a hostile __getattr__: fall back on the type
            name = None
        if type(name) is str:
            return name.rpartition("<locals>.")[2]
    return type(fn).__qualname__.rpartition("<locals>.")[2]


def _released(*args: object, **kwargs: object) -> Any:
    """What a finished job's ``fn`` becomes: its callable and arguments were let go."""
    raise RuntimeError("this job finished: its callable and arguments were released")


_NO_KWARGS: dict[str, Any] = {}  # shared by released jobs; never mutated


class Job(Generic[T]):
    """A unit of work: a callable with its arguments, a name, and optional overrides.

    Args:
        fn: the callable to run.
        args: positional arguments for ``fn``.
        kwargs: keyword arguments for ``fn``, a mapping with str keys.
        name: a label for logs and reports (default: ``fn``'s qualified name, see
            :func:`callable_name`; never its ``repr``).
        timeout: seconds each attempt may run, overriding the pool's; > 0.
        retry: a :class:`RetryPolicy` overriding the pool's.

    Raises:
        TypeError, ValueError: for a bad argument (a non-callable ``fn``, a ``kwargs`` key
            that is not a str, a bad ``timeout``/``retry``...), naming it.

    Thread-safety: the fields set at construction are read-only afterwards.  ``status`` and
    ``attempts`` are written only by the owning pool's transition function under its lock;
    reading them from another thread gives a recent value, and :attr:`future` tells the end.
    A job can be submitted once.

    Memory: once a job succeeded, failed or timed out it lets go of its callable and
    arguments (``fn`` raises, ``args`` is empty), as ThreadPoolExecutor does, and the job
    and its Future stop referring to each other both ways, so a finished job and everything
    it held are freed by reference counting as soon as nobody holds them.  A cancelled job
    keeps them, so that :meth:`clone` can resubmit it.
    """

    __slots__ = (
        "__weakref__",
        "_error",
        "_future",
        "_ledger",
        "_name",
        "_queued_at",
        "_result",
        "_route",
        "_status",
        "args",
        "attempts",
        "fn",
        "id",
        "kwargs",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if not isinstance(args, tuple | list):
            raise TypeError(f"args must be a tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping, got {type(kwargs).__name__}")
        if kwargs:
            for key in kwargs:
                if not isinstance(key, str):
                    raise TypeError(f"kwargs keys must be str, got {type(key).__name__} {key!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.timeout = check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._init(fn, tuple(args), dict(kwargs) if kwargs else {}, name, self.timeout, retry)

    @classmethod
    def _of_call(
        cls, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job[T]:
        """A Job for ``submit(fn, *args, **kwargs)``: only ``fn`` needs checking there.

        The hot path of ``submit``: every field is set here, without a call to :meth:`_init`.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        job: Job[T] = cls.__new__(cls)
        job.id = next(_job_ids)
        job.fn = fn
        job.args = args
        job.kwargs = kwargs
        job._name = None
        job.timeout = None
        job.retry = None
        job.attempts = []
        job._future = JobFuture(job)
        job._result = None
        job._error = None
        job._status = _CREATED
        job._ledger = None
        job._route = None
        job._queued_at = 0.0
        return job

    def _init(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        timeout: float | None,
        retry: RetryPolicy | None,
    ) -> None:
        self.id = next(_job_ids)
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self._name = name
        self.timeout = timeout
        self.retry = retry
        self.attempts: list[Attempt] = []
        #: The Future while the job is unfinished; None once it is resolved (see future).
        self._future: JobFuture[T] | None = JobFuture(self)
        self._result: T | None = None  # a finished job's outcome, for a Future made anew
        self._error: BaseException | None = None
        self._status = _CREATED
        self._ledger: Ledger | None = None
        self._route: Route | None = None
        self._queued_at = 0.0

    @property
    def future(self) -> JobFuture[T]:
        """The job's Future.

        Until the job is finished it is one object, shared by everyone who asks.  A finished
        job does not keep its Future alive (the two would form a reference cycle holding the
        result): asked then, it gives a new resolved Future with the same outcome, so
        compare outcomes, not identities.
        """
        future = self._future
        if future is None:
            return JobFuture._finished(self)
        return future

    @property
    def name(self) -> str:
        """The label of logs and reports: the one given, else the callable's name."""
        name = self._name
        if name is None:
            name = self._name = callable_name(self.fn)
        return name

    @property
    def status(self) -> JobStatus:
        """The current state."""
        return self._status

    @property
    def last_error(self) -> BaseException | None:
        """What the latest attempt raised (a JobTimeoutError if it timed out), else None."""
        return self.attempts[-1].error if self.attempts else None

    def clone(self) -> Job[T]:
        """A new, unsubmitted Job with the same callable, arguments and settings.

        Use it to resubmit a job that shutdown cancelled (a Job can be submitted once).

        Raises:
            RuntimeError: the job succeeded, failed or timed out: it released its callable.
        """
        if self.fn is _released:
            raise RuntimeError(
                f"job #{self.id} finished ({self._status.value}) and released its callable "
                "and arguments; only unfinished or cancelled jobs can be cloned"
            )
        return Job(
            self.fn, self.args, self.kwargs, name=self._name, timeout=self.timeout, retry=self.retry
        )

    def __repr__(self) -> str:
        return f"<Job #{self.id} {self.name!r} {self._status.value} attempts={len(self.attempts)}>"


def detach_future(job: Job[T], result: T | None, error: BaseException | None) -> JobFuture[T]:
    """The Future of a job that just became terminal, which the caller then resolves.

    Breaks the job <-> Future cycle (the job keeps a copy of the outcome instead) and, unless
    the job was cancelled, releases its callable and arguments.  Called once per job, by the
    thread whose transition made it terminal.
    """
    future = job._future
    assert future is not None, "detach_future() called twice"
    job._future = None
    job._result = result
    job._error = error
    if job._status is not _CANCELLED:
        if job._name is None:
            job._name = callable_name(job.fn)
        job.fn = _released
        job.args = ()
        job.kwargs = _NO_KWARGS
    return future


def timeout_message(job: Job[Any], attempt: Attempt) -> str:
    """The one wording of a timeout, for the pool's JobTimeoutError and JobContext.check."""
    deadline = attempt.deadline
    seconds = 0.0 if deadline is None else deadline - attempt.started
    return f"job #{job.id} ({job.name}) attempt {attempt.number} exceeded its {seconds:g}s timeout"


def forget_frames(error: BaseException) -> None:
    """Clear the locals of the frames in ``error``'s traceback (it keeps file and line).

    For the errors of attempts that were retried: the job goes on, and must not pin what
    its failed attempts' frames held.
    """
    traceback.clear_frames(error.__traceback__)


def check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """Validate a timeout: None, or a finite number of seconds > 0."""
    if timeout is None:
        return None
    value = check_number(name, timeout, minimum=0.0, inclusive=False)
    if math.isinf(value):
        raise ValueError(f"{name} must be finite; pass None for no timeout")
    return value


#: Stored as a Future's Condition by :meth:`JobFuture._succeed` when it found none: from then
#: on the Future is FINISHED (a statement later) and nothing can wait for it any more.
_SUCCEEDED_UNLOCKED = object()
_UNLOCKED_SUCCESS_LOCK = threading.Lock()  # swaps that mark for a real Condition, once


class _LazyCondition:
    """A Future's ``_condition``, made the first time anything asks for it.

    A data descriptor over the instance's ``_cond`` slot of ``__dict__``, which holds
    nothing (no Condition made yet), a Condition, or :data:`_SUCCEEDED_UNLOCKED`.  Every
    hand-over is a ``dict.setdefault``, atomic in CPython, so :meth:`JobFuture._succeed` and
    a first reader agree on one outcome: either the reader's Condition is in place first,
    and ``_succeed`` takes it like the base class does, or ``_succeed``'s mark is, and the
    reader gets a Condition of a Future that is already FINISHED for good.
    """

    def __get__(self, future: object, owner: object = None) -> threading.Condition:
        if future is None:
            raise AttributeError("_condition is an attribute of JobFuture instances")
        slots = future.__dict__
        condition = slots.get("_cond")
        if condition is None:
            condition = slots.setdefault("_cond", threading.Condition())
        if condition is _SUCCEEDED_UNLOCKED:
            return _condition_of_finished(future)
        assert isinstance(condition, threading.Condition)
        return condition

    def __set__(self, future: object, condition: threading.Condition) -> None:
        future.__dict__["_cond"] = condition


def _condition_of_finished(future: Any) -> threading.Condition:
    """The Condition of a Future that succeeded without one (rare: ``wait()`` or a callback
    added after the fact).  Its state is final, so any Condition will do, as long as every
    caller gets the same one."""
    while future._state is not _FINISHED:  # _succeed writes it right after its mark
        time.sleep(0)  # noqa: TID251 -- not a wait: gives the GIL to the resolving thread
    with _UNLOCKED_SUCCESS_LOCK:
        slots = future.__dict__
        condition = slots["_cond"]
        if condition is _SUCCEEDED_UNLOCKED:
            condition = slots["_cond"] = threading.Condition()
        assert isinstance(condition, threading.Condition)
        return condition


class JobFuture(Future[T]):
    """The Future of one :class:`Job`; resolved exactly when the job reaches a terminal state.

    It behaves like any ``concurrent.futures.Future`` (``wait``/``as_completed`` work).  Two
    methods follow the job: :meth:`cancel` succeeds while the job waits (pending, queued, or in
    retry backoff) and not once an attempt runs; :meth:`running` is true while an attempt runs.

    Thread-safety, and what differs from the base class inside: most Futures are never
    waited on (the job is done before anyone asks), so the Condition that a Future guards
    its state with is made only when something needs it (``result()`` of a pending job,
    ``wait``, ``as_completed``, ``add_done_callback``, cancellation).  The one thread that
    resolves a job's success (:meth:`_succeed`) claims the Condition's place atomically: if
    a Condition is there, it resolves under it exactly as the base class does (waiters
    counted and woken, callbacks run); if not, it leaves a mark there and writes the state
    without a lock, and whoever asks for the Condition later finds the Future FINISHED for
    good (see :class:`_LazyCondition`).  So ``wait()`` and ``as_completed()``, which read the
    states twice under the Conditions, never see one change in between.
    ``result()``, ``done()``, ``cancelled()`` and ``cancel()`` of a finished Future read the
    state without a lock.
    """

    _condition = _LazyCondition()

    def __init__(self, job: Job[T]) -> None:
        # Future.__init__ without its Condition (see the class docstring).
        self._state = _PENDING_FUTURE
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[T]], object]] = []
        self.job = job

    @classmethod
    def _finished(cls, job: Job[T]) -> JobFuture[T]:
        """A resolved Future with the outcome of the finished ``job`` (see Job.future)."""
        future = cls(job)
        if job._status is _CANCELLED:
            future._state = _CANCELLED_AND_NOTIFIED
        else:
            future._result = job._result
            future._exception = job._error
            future._state = _FINISHED
        return future

    def set_running_or_notify_cancel(self) -> bool:
        """As the base class; False (not an error) for a Future cancelled and already
        notified, as happens to every Future that :meth:`cancel` cancelled: chronos tells
        waiters at once."""
        if self._state in _CANCELLED_FUTURE_STATES:
            return False
        return super().set_running_or_notify_cancel()

    def cancel(self) -> bool:
        if self._state is _FINISHED:  # Executor.map cancels every Future it has read
            return False
        job = self.job
        if job._ledger is not None and cancel_waiting(job, WAITING_STATES, 0.0, "future.cancel"):
            return True
        return self.cancelled()

    def running(self) -> bool:
        return self.job._status is JobStatus.RUNNING

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_FUTURE_STATES  # once cancelled, it stays so

    def done(self) -> bool:
        return self._state in _DONE_FUTURE_STATES  # once done, a Future never changes

    def result(self, timeout: float | None = None) -> T:
        if self._state is _FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]
        return super().result(timeout)

    def _invoke_callbacks(self) -> None:
        """Run the done-callbacks, as the base class does, except that *any* exception one
        raises is logged (on the ``concurrent.futures`` logger, like the base class's
        Exceptions): a BaseException such as SystemExit from a callback must neither kill
        the chronos thread that resolved the job nor cut its accounting short."""
        callbacks, self._done_callbacks = self._done_callbacks, []  # run once, then let go
        for callback in callbacks:
            try:
                callback(self)
            except BaseException:
                _FUTURES_LOGGER.exception("exception calling callback for %r", self)

    def _succeed(self, result: T) -> None:
        """Resolve with ``result``: ``set_running_or_notify_cancel()`` then ``set_result()``,
        without a lock when nobody waits.

        Called once, by the thread whose transition made the job SUCCEEDED, so the Future is
        still PENDING (it is never marked RUNNING: see :meth:`running`).
        """
        self._result = result
        condition = self.__dict__.setdefault("_cond", _SUCCEEDED_UNLOCKED)
        if condition is _SUCCEEDED_UNLOCKED:  # no Condition: no waiter, no callback
            self._state = _FINISHED
            return
        condition.acquire()
        try:
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            condition.notify_all()
        finally:
            condition.release()
        self._invoke_callbacks()


def resolve_cancelled(job: Job[Any]) -> None:
    """Resolve the Future of a job that just became CANCELLED.

    ``Future.cancel()`` then ``set_running_or_notify_cancel()`` in one critical section:
    waiters are told before any done-callback runs.
    """
    future = detach_future(job, None, None)
    condition = future._condition
    with condition:
        future._state = _CANCELLED_AND_NOTIFIED
        for waiter in future._waiters:
            waiter.add_cancelled(future)
        condition.notify_all()
    future._invoke_callbacks()


def cancel_waiting(
    job: Job[Any], expected: JobStatus | frozenset[JobStatus], now: float, reason: str
) -> bool:
    """Cancel a job that waits (in ``expected``): the move, its Future, its event.

    Returns:
        True if this call cancelled it; False if it was no longer in ``expected``.
    """
    if not move(job, expected, JobStatus.CANCELLED, now):
        return False
    resolve_cancelled(job)
    assert job._ledger is not None  # move() succeeded: the job was admitted
    job._ledger.events.cancelled(job, reason=reason)
    return True


# -- the transition function and its compare-and-set helpers -------------------------------


def _check_legal(job: Job[Any], new: JobStatus) -> None:
    old = job._status
    if new not in _LEGAL[old]:
        raise IllegalTransitionError(f"job #{job.id}: {old.value} -> {new.value} is not allowed")


def _apply(
    job: Job[Any],
    ledger: Ledger,
    new: JobStatus,
    now: float,
    *,
    queue_wait: float | None = None,
    run_time: float | None = None,
    timed_out: bool = False,
) -> None:
    """Write ``job._status`` and the books: the general transition.

    The caller holds ``ledger.lock`` and has checked the move (:func:`_check_legal`).  The
    moves of the hot paths (:func:`admit`, :func:`release_pending`, :func:`start_attempt`,
    :func:`succeed_attempt`) do the same writes inline, for speed; nothing else writes a
    status.
    """
    old = job._status
    job._status = new
    if new is _QUEUED:
        job._queued_at = now
    ledger.stats._record(old, new, queue_wait=queue_wait, run_time=run_time, timed_out=timed_out)
    if old is _CREATED:
        ledger._live[job.id] = job
    elif new in TERMINAL_STATES:
        del ledger._live[job.id]
        if ledger.closed and not ledger._live:
            ledger.drained.set()
        _route_finished(job)


def _route_finished(job: Job[Any]) -> None:
    """``job`` just became terminal: count it off its route.  Caller holds the ledger lock."""
    route = job._route
    if route is not None and route._tracks_jobs:
        route._outstanding -= 1
        if not route._outstanding:
            route._all_finished()


def admit(job: Job[Any], ledger: Ledger, new: JobStatus, now: float, route: Route) -> None:
    """Submit ``job`` to the pool that keeps ``ledger``: CREATED -> PENDING or QUEUED.

    Raises:
        TypeError: ``job`` is not a Job.
        ValueError: the job was submitted before.
        RuntimeError: the pool is shut down.
    """
    if not isinstance(job, Job):
        raise TypeError(f"job must be a chronos.Job, got {type(job).__name__}")
    with ledger.lock:
        if job._ledger is not None or job._status is not _CREATED:
            raise ValueError(f"{job!r} was already submitted; a Job can be submitted once")
        if new is not _QUEUED and new is not _PENDING:
            _check_legal(job, new)  # raises: a job is admitted as queued or pending only
        if ledger.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        job._ledger = ledger
        job._route = route
        # _apply(job, ledger, new, now), inline:
        job._status = new
        job._queued_at = now
        stats = ledger.stats
        stats.submitted += 1
        stats._counts[new] += 1
        ledger._live[job.id] = job
        if route._tracks_jobs:
            route._outstanding += 1


def move(
    job: Job[Any], expected: JobStatus | frozenset[JobStatus], new: JobStatus, now: float = 0.0
) -> bool:
    """Compare-and-set between waiting states (never into or out of RUNNING).

    Returns:
        True if the job was in ``expected`` (one state or a set) and is now in ``new``.

    Raises:
        IllegalTransitionError: ``new`` or ``expected`` is RUNNING (use start_attempt or
            end_attempt), or the state machine does not allow the move.
    """
    ledger = job._ledger
    assert ledger is not None, "move() on a job that was never submitted"
    if new is _RUNNING or (
        expected is _RUNNING or (isinstance(expected, frozenset) and _RUNNING in expected)
    ):
        raise IllegalTransitionError("move() never enters or leaves RUNNING: use the attempts")
    with ledger.lock:
        status = job._status
        if status is not expected and (
            not isinstance(expected, frozenset) or status not in expected
        ):
            return False
        _check_legal(job, new)
        _apply(job, ledger, new, now)
        return True


def release_pending(job: Job[Any], now: float) -> bool:
    """PENDING -> QUEUED: a Dispatcher lets ``job`` into the pool's queue.

    :func:`move` for the move every dispatched job makes, with its writes inline.

    Returns:
        True if the job was pending; False if it is not any more (cancelled meanwhile).
    """
    ledger = job._ledger
    assert ledger is not None
    with ledger.lock:
        if job._status is not _PENDING:
            return False
        job._status = _QUEUED  # PENDING -> QUEUED is always legal
        job._queued_at = now
        counts = ledger.stats._counts
        counts[_PENDING] -= 1
        counts[_QUEUED] += 1
        return True


def start_attempt(
    job: Job[Any], now: float, worker: str, deadline: float | None, holder: AttemptHolder
) -> Attempt | None:
    """QUEUED -> RUNNING with a new Attempt, or None if the job is no longer queued.

    The attempt is published on ``holder.current`` in the same critical section, so whoever
    sees the job RUNNING (shutdown, under the same lock) also finds the thread running it.
    """
    ledger = job._ledger
    assert ledger is not None
    with ledger.lock:
        if job._status is not _QUEUED:
            return None  # QUEUED -> RUNNING is always legal
        attempts = job.attempts
        attempt = Attempt(len(attempts) + 1, worker, now, deadline)
        attempts.append(attempt)
        holder.current = (job, attempt)
        # _apply(job, ledger, RUNNING, now, queue_wait=...), inline:
        job._status = _RUNNING
        stats = ledger.stats
        counts = stats._counts
        counts[_QUEUED] -= 1
        counts[_RUNNING] += 1
        stats.attempts += 1
        stats._queue_wait.observe(now - job._queued_at)
        return attempt


def succeed_attempt(job: Job[Any], attempt: Attempt, now: float, holder: AttemptHolder) -> bool:
    """RUNNING -> SUCCEEDED, by the worker whose ``attempt`` returned: :func:`end_attempt`
    for the common case, which also clears ``holder.current`` in the same critical section.

    Returns:
        True if this call ended the attempt; False if someone else already did (the
        worker's thread is then still published on ``holder``, for the evictor to find).
    """
    ledger = job._ledger
    assert ledger is not None
    with ledger.lock:
        if job._status is not _RUNNING or attempt.outcome is not None:
            return False  # (a RUNNING job's last attempt is the one running: see fencing)
        attempt.ended = now
        attempt.outcome = _OUTCOME_SUCCEEDED
        holder.current = None
        # _apply(job, ledger, SUCCEEDED, now, run_time=...), inline:
        job._status = _SUCCEEDED
        stats = ledger.stats
        counts = stats._counts
        counts[_RUNNING] -= 1
        counts[_SUCCEEDED] += 1
        stats._run_time.observe(now - attempt.started)
        live = ledger._live
        del live[job.id]
        if not live and ledger.closed:
            ledger.drained.set()
        route = job._route
        if route is not None and route._tracks_jobs:  # _route_finished(job), inline
            route._outstanding -= 1
            if not route._outstanding:
                route._all_finished()
        return True


def _runs(job: Job[Any], attempt: Attempt) -> bool:
    """``attempt`` is ``job``'s running attempt, not ended yet.  Caller holds the ledger lock
    (:func:`succeed_attempt` has the same test inline)."""
    return job._status is _RUNNING and job.attempts[-1] is attempt and attempt.outcome is None


def end_attempt(
    job: Job[Any],
    attempt: Attempt,
    new: JobStatus,
    outcome: AttemptOutcome,
    now: float,
    error: BaseException | None = None,
    ended_by: str | None = None,
) -> bool:
    """RUNNING -> ``new``, only if ``attempt`` is still running (fencing): what
    :func:`fence_attempt` and then :func:`settle_attempt` do, in one critical section.

    Returns:
        True if this call ended the attempt; False if someone else already did.
    """
    ledger = job._ledger
    assert ledger is not None
    with ledger.lock:
        if not _runs(job, attempt):
            return False
        _check_legal(job, new)
        attempt.ended = now
        attempt.outcome = outcome
        attempt.error = error
        attempt.ended_by = ended_by
        if outcome is not _OUTCOME_SUCCEEDED:
            _signal_cancel(attempt)
        _apply(
            job,
            ledger,
            new,
            now,
            run_time=now - attempt.started,
            timed_out=outcome is AttemptOutcome.TIMED_OUT,
        )
        return True


def fence_attempt(job: Job[Any], attempt: Attempt, outcome: AttemptOutcome, now: float) -> bool:
    """End ``attempt`` without deciding what follows: the first half of :func:`end_attempt`.

    The timer fences an attempt that passed its deadline: from here the attempt's thread
    can no longer end it (its result is dropped) and its cancel Event is set, while the job
    stays RUNNING until :func:`settle_attempt` (on another thread: deciding may run user
    code, the retry policy) moves it on.

    Returns:
        True if this call ended the attempt; False if someone else already did.
    """
    ledger = job._ledger
    assert ledger is not None
    with ledger.lock:
        if not _runs(job, attempt):
            return False
        attempt.ended = now
        attempt.outcome = outcome
        attempt.ended_by = "timer"
        _signal_cancel(attempt)
        if outcome is AttemptOutcome.TIMED_OUT:
            ledger.stats.attempt_timeouts += 1  # counted with the outcome, as end_attempt does
        return True


def settle_attempt(
    job: Job[Any], attempt: Attempt, new: JobStatus, error: BaseException | None
) -> bool:
    """RUNNING -> ``new`` for a job whose ``attempt`` was fenced: the second half.

    Returns:
        True if this call moved the job; False if someone else settled it first (shutdown
        cancels a fenced job whose settlement is late).
    """
    ledger = job._ledger
    assert ledger is not None
    with ledger.lock:
        ended = attempt.ended
        if job._status is not _RUNNING or job.attempts[-1] is not attempt or ended is None:
            return False
        _check_legal(job, new)
        if attempt.error is None:
            attempt.error = error
        _apply(job, ledger, new, ended, run_time=ended - attempt.started)  # (timeout counted)
        return True


def _signal_cancel(attempt: Attempt) -> None:
    """Tell the code of an attempt that it should stop.  Caller holds the ledger lock."""
    attempt._cancelled = True
    if attempt._cancel_event is not None:
        attempt._cancel_event.set()


def cancel_event(job: Job[Any], attempt: Attempt) -> threading.Event:
    """The Event set when ``attempt`` is cancelled or times out (created on first use)."""
    ledger = job._ledger
    assert ledger is not None
    with ledger.lock:
        if attempt._cancel_event is None:
            attempt._cancel_event = threading.Event()
            if attempt._cancelled:
                attempt._cancel_event.set()
        return attempt._cancel_event
