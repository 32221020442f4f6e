"""The job: what to run (its spec) and the record of its runs (status, attempts, Future).

- :class:`JobSpec` is a job as data: a registered task *name*, JSON-able arguments and
  options.  It can be stored and sent (``to_dict``/``from_dict``); durable backends keep it.
- :class:`Job` is a job in this process: its spec's fields, with a live callable instead of
  (or resolved from) a task name, and its run record: status, attempts and Future.  The run
  record is written only by the owning pool's ledger (:mod:`chronos._ledger`, under its
  lock); everyone else reads it through the public properties.
- :class:`Attempt` is one run of a job; :class:`JobFuture` its ``concurrent.futures`` face.

(A little over the ~400 lines the house style aims at, by docstrings: the job, its attempt
and its Future are one value and its two faces.)

State machine (enforced by the ledger)::

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
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from chronos._future import LazyFuture
from chronos._validate import check_number
from chronos.retry import RetryPolicy
from chronos.spec import JobSpec
from chronos.status import JobStatus

__all__ = ["Attempt", "AttemptOutcome", "Job", "JobFuture", "JobSpec", "callable_name"]

T = TypeVar("T")

_job_ids = itertools.count(1)
_CREATED = JobStatus.CREATED
_RUNNING = JobStatus.RUNNING
_CANCELLED = JobStatus.CANCELLED


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
    #: Set (once, by whoever ends it) when the attempt was told to stop: it was cancelled or
    #: timed out while it ran.  A cooperative job reads it through ``current_job()``.
    stop_requested: bool = field(default=False, repr=False)
    #: Set by the worker thread once the callable returned or raised (whoever ended the
    #: attempt): a retry held back for its abandoned thread (``wait_for_abandoned``) waits
    #: for it.
    returned: bool = field(default=False, repr=False)
    #: The Event behind ``current_job().wait()``: made on first use, by chronos._ledger.
    _stop_event: threading.Event | None = field(default=None, repr=False)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while it runs."""
        return None if self.ended is None else self.ended - self.started


class JobBook(Protocol):
    """What a submitted job asks of the books that own its run record (the pool's ledger)."""

    def cancel_waiting(self, job: Job[Any], reason: str) -> bool:
        """Cancel ``job`` if it waits; True if this call did."""
        ...

    def request_stop(self, job: Job[Any]) -> bool:
        """Tell ``job``'s running attempt to stop; True if one runs."""
        ...


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
        "_tracker",
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
    def future_of_call(
        cls, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> JobFuture[T]:
        """The Future of a new Job for ``submit(fn, *args, **kwargs)`` (the job is its
        ``job``): only ``fn`` is checked (``args`` and ``kwargs`` are what a call collected,
        a tuple and a dict of str keys).

        The hot path of ``submit``: every field is set here, without a call to ``_init``,
        and the Future is returned (the job is one attribute away; the other way round
        would cost a property call per job).

        Raises:
            TypeError: ``fn`` is not callable.
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
        future: JobFuture[T] = JobFuture(job)
        job._future = future
        job._result = None
        job._error = None
        job._status = _CREATED
        job._ledger = None
        job._route = None
        job._tracker = None
        job._queued_at = 0.0
        return future

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
        # The run record's books, written by chronos._ledger only (typed loosely here: the
        # ledger module sits above this one, and knows what it stored).
        self._ledger: JobBook | None = None
        self._route: Any = None  # a chronos._ledger.Route once submitted
        self._tracker: Any = None  # its producer's chronos._ledger.JobTracker, if any
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
            future = JobFuture(self)
            future.resolve_copy(self._result, self._error, self._status is _CANCELLED)
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

    @classmethod
    def from_spec(cls, spec: JobSpec, fn: Callable[..., T]) -> Job[T]:
        """A Job running ``fn`` (the callable the spec's task name stands for, from a
        registry) with the spec's arguments, timeout and retry policy, named by the task.

        Raises:
            TypeError: ``spec`` is not a JobSpec, or ``fn`` is not callable.
        """
        if not isinstance(spec, JobSpec):
            raise TypeError(f"spec must be a chronos.JobSpec, got {type(spec).__name__}")
        return cls(
            fn, spec.args, spec.kwargs, name=spec.task, timeout=spec.timeout, retry=spec.retry
        )

    def to_spec(self, task: str | None = None) -> JobSpec:
        """This job as data: a :class:`JobSpec` for ``task`` (default: the job's name).

        Raises:
            TypeError, ValueError: the arguments are not JSON-able, or the retry policy has
                custom strategies (see :class:`JobSpec`); RuntimeError: the job finished
                and released its arguments.
        """
        if self.fn is _released:
            raise RuntimeError(f"job #{self.id} finished and released its arguments")
        return JobSpec(
            task=self.name if task is None else task,
            args=self.args,
            kwargs=self.kwargs,
            timeout=self.timeout,
            retry=self.retry,
        )

    def request_stop(self) -> bool:
        """Ask the running attempt to stop, without ending it: a cooperative job sees it
        (``current_job().cancelled`` is True, ``check()`` raises
        :class:`chronos.JobCancelledError`, ``wait()`` returns at once) and steps out; one
        that does not look runs on to its end.  (A durable worker asks so when the job's
        cancel was requested, or its lease was lost.)

        Returns:
            True if an attempt was running and is now told; False otherwise.
        """
        ledger = self._ledger
        return ledger is not None and ledger.request_stop(self)

    def cancel(self, *, reason: str = "job.cancel") -> bool:
        """Cancel the job if it waits (pending, queued, or in its retry backoff).

        Args:
            reason: recorded in the ``job.cancelled`` event.

        Returns:
            True if this call cancelled it; False if it was never submitted, has an attempt
            running, or is finished.
        """
        ledger = self._ledger
        return ledger is not None and ledger.cancel_waiting(self, reason)

    def __repr__(self) -> str:
        return f"<Job #{self.id} {self.name!r} {self._status.value} attempts={len(self.attempts)}>"


class JobFuture(LazyFuture[T]):
    """The Future of one :class:`Job`; resolved exactly when the job reaches a terminal state.

    It behaves like any ``concurrent.futures.Future`` (``wait``/``as_completed`` work; see
    :class:`chronos._future.LazyFuture` for how it stays cheap).  Two methods follow the
    job: :meth:`cancel` succeeds while the job waits (pending, queued, or in retry backoff)
    and not once an attempt runs; :meth:`running` is true while an attempt runs.

    Thread-safety: as ``concurrent.futures.Future``.
    """

    job: Job[T]  # set by LazyFuture.__init__(job): JobFuture(job) is one call per job

    def cancel(self) -> bool:
        if self.is_finished():  # Executor.map cancels every Future it has read
            return False
        if self.job.cancel(reason="future.cancel"):
            return True
        return self.cancelled()

    def running(self) -> bool:
        return self.job.status is _RUNNING


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
