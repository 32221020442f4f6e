"""Durable jobs, as a user writes them: ``chronos.Queue``, ``@queue.task``, ``.enqueue()``.

::

    queue = chronos.Queue("sqlite:///jobs.db")

    @queue.task(timeout=30, retry=chronos.RetryPolicy(max_attempts=5))
    def send_email(to: str, subject: str) -> str: ...

    job = send_email.enqueue("ann@example.com", "hi", delay=60, unique_key="welcome:ann")
    job.id, job.status()        # from any process that opens the same queue
    job.result(timeout=10)      # waits through the store
    job.cancel()

A job stores its task's registered *name* and JSON arguments, checked at enqueue (nothing is
stored on a TypeError or ValueError); a worker resolves names only through its own registry
(:class:`TaskRegistry`), never by importing a path read from the queue.  Nothing is pickled.

Thread-safety: a Queue, its tasks and handles may be used from any thread; registering tasks
is meant for import time (it takes a lock, so it is safe anyway).
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, Generic, ParamSpec, TypeVar, overload

from chronos._validate import check_number, check_optional_number
from chronos.backends.durable import TERMINAL_STATES, DurableBackend, JobRecord, JobState
from chronos.backends.urls import open_backend
from chronos.clock import SYSTEM_CLOCK, wall_time
from chronos.errors import ChronosError, JobCancelledError, JobTimeoutError
from chronos.job import check_timeout
from chronos.retry import RetryPolicy
from chronos.spec import JobSpec

__all__ = ["JobFailedError", "JobHandle", "Queue", "Task", "TaskRegistry"]

P = ParamSpec("P")
R = TypeVar("R")

#: Names ``Task.enqueue`` takes as options; a task whose function has a parameter of one of
#: these names is enqueued with :meth:`Task.enqueue_with` instead.
ENQUEUE_OPTIONS = frozenset({"delay", "eta", "priority", "unique_key"})
#: How often :meth:`JobHandle.result` looks at the store while it waits (seconds, growing).
_POLL_FIRST, _POLL_MAX = 0.005, 0.2


class JobFailedError(ChronosError):
    """A durable job failed for good (it is DEAD): its last error, as the store kept it.

    Attributes:
        job_id: the job.
        error: the stored text of its last error.
    """

    def __init__(self, job_id: str, error: str | None) -> None:
        super().__init__(f"job {job_id} failed: {error or 'no error recorded'}")
        self.job_id = job_id
        self.error = error


class TaskRegistry:
    """Task names and the callables they stand for, in one process.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _tasks
        self._tasks: dict[str, Task[..., Any]] = {}

    def add(self, task: Task[..., Any]) -> None:
        """Register ``task`` under its name.

        Raises:
            ValueError: another task has that name.
        """
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing is not task:
                raise ValueError(
                    f"a task named {task.name!r} is registered already (for "
                    f"{existing.fn.__module__}.{existing.fn.__qualname__}); give one of them "
                    "another name: @queue.task(name=...)"
                )
            self._tasks[task.name] = task

    def get(self, name: str) -> Task[..., Any] | None:
        """The task registered as ``name``, or None."""
        with self._lock:
            return self._tasks.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._tasks)

    def __iter__(self) -> Iterator[Task[..., Any]]:
        with self._lock:
            return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)


class Queue:
    """A durable queue of jobs, named by a URL, with its task registry.

    Args:
        url: where the jobs are kept: ``sqlite:///jobs.db`` (see
            :mod:`chronos.backends.urls`).
        name: the queue's name within the store (several queues may share one store).

    Raises:
        TypeError, ValueError: a bad URL or name, naming the problem; the store's own errors
            (a missing directory, a read-only file) as it raises them.

    Thread-safety: every method may be called from any thread.  :meth:`close` releases the
    store's connections: call it once you are done.
    """

    def __init__(self, url: str, *, name: str = "default") -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.url = url
        self.name = name
        self.registry = TaskRegistry()
        self.backend: DurableBackend = open_backend(url)

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        priority: int = 0,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        priority: int = 0,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task of this queue: ``@queue.task`` or
        ``@queue.task(timeout=..., retry=..., priority=..., name=...)``.

        Args:
            name: the task's registered name (default: ``module.qualname`` of the function).
            timeout: seconds each attempt may run (None: the worker's default).
            retry: a :class:`chronos.RetryPolicy` with plain fields (it is stored with the
                job); None: one attempt.
            priority: the default priority of its jobs (higher runs first).

        Raises:
            TypeError, ValueError: a bad option, or a name registered twice.
        """
        timeout = check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        if type(priority) is not int:
            raise TypeError(f"priority must be an int, got {type(priority).__name__}")

        def register(function: Callable[P, R]) -> Task[P, R]:
            task = Task(self, function, name, timeout, retry, priority)
            self.registry.add(task)
            return task

        return register if fn is None else register(fn)

    def job(self, job_id: str) -> JobHandle:
        """A handle on the job ``job_id`` of this queue's store."""
        if not isinstance(job_id, str) or not job_id:
            raise TypeError(f"job_id must be a non-empty str, got {job_id!r}")
        return JobHandle(self, job_id)

    def enqueue_specs(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        """Enqueue prepared specs in one transaction (a batch); their handles, in order.

        Raises:
            TypeError: an item is not a JobSpec.
        """
        for spec in specs:
            if not isinstance(spec, JobSpec):
                raise TypeError(f"specs must hold chronos.JobSpec, got {type(spec).__name__}")
        ids = self.backend.enqueue(list(specs), self.name)
        return [JobHandle(self, job_id) for job_id in ids]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<chronos.Queue {self.name!r} at {self.url!r}: {len(self.registry)} tasks>"


class Task(Generic[P, R]):
    """A function registered with a :class:`Queue`.  Call it to run it here and now;
    :meth:`enqueue` it to have a worker run it.

    Thread-safety: immutable after registration.
    """

    def __init__(
        self,
        queue: Queue,
        fn: Callable[P, R],
        name: str | None,
        timeout: float | None,
        retry: RetryPolicy | None,
        priority: int,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a task must be callable, got {type(fn).__name__}")
        if name is None:
            name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.queue = queue
        self.fn = fn
        self.name = name
        self.timeout = timeout
        self.retry = retry
        self.priority = priority
        self.signature = inspect.signature(fn)
        if retry is not None:
            JobSpec(name, retry=retry)  # a policy that cannot be stored fails here, not later
        clashes = ENQUEUE_OPTIONS & set(self.signature.parameters)
        self._options_clash = sorted(clashes)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def enqueue(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueue a job calling this task with ``args`` and ``kwargs``.

        Options, as keywords: ``delay`` (seconds from now) or ``eta`` (epoch seconds),
        ``priority`` (an int; default the task's), ``unique_key`` (while a job with this key
        is unfinished, the existing job's handle is returned).

        Raises:
            TypeError: the arguments do not fit the function's signature, or are not JSON;
                or the function has a parameter named like an option (use
                :meth:`enqueue_with`).
            ValueError: a bad option.
        """
        if self._options_clash:
            raise TypeError(
                f"{self.name} has parameters named like enqueue options "
                f"({', '.join(self._options_clash)}): use enqueue_with(args=..., kwargs=...)"
            )
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in ENQUEUE_OPTIONS}
        return self.enqueue_with(args, kwargs, **options)

    def enqueue_with(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        delay: float | None = None,
        eta: float | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> JobHandle:
        """:meth:`enqueue` with the call's arguments apart from the options."""
        spec = self.spec(args, kwargs, delay, eta, priority, unique_key)
        return self.queue.enqueue_specs([spec])[0]

    def spec(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        delay: float | None = None,
        eta: float | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
    ) -> JobSpec:
        """The :class:`JobSpec` :meth:`enqueue_with` would store (for batches: see
        :meth:`Queue.enqueue_specs`).

        Raises:
            TypeError, ValueError: as :meth:`enqueue`.
        """
        kwargs = dict(kwargs or {})
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        if delay is not None and eta is not None:
            raise ValueError("give delay or eta, not both")
        not_before = None
        if delay is not None:
            delay = check_number("delay", delay, minimum=0.0, inclusive=True, finite=True)
            not_before = wall_time() + delay
        elif eta is not None:
            not_before = check_number("eta", eta, minimum=0.0, inclusive=True, finite=True)
        return JobSpec(
            task=self.name,
            args=tuple(args),
            kwargs=kwargs,
            timeout=self.timeout,
            retry=self.retry,
            priority=self.priority if priority is None else priority,
            not_before=not_before,
            unique_key=unique_key,
        )

    def __repr__(self) -> str:
        return f"<chronos.Task {self.name!r} of {self.queue.name!r}>"


class JobHandle:
    """A durable job, by id: ask its state, wait for its result, cancel it.

    Thread-safety: stateless but for its id; every method asks the store.
    """

    __slots__ = ("id", "queue")

    def __init__(self, queue: Queue, job_id: str) -> None:
        self.queue = queue
        self.id = job_id

    def record(self) -> JobRecord:
        """Everything the store knows about the job now.

        Raises:
            LookupError: no such job (never enqueued, or purged).
        """
        record = self.queue.backend.get(self.id)
        if record is None:
            raise LookupError(f"no job {self.id} in {self.queue.url}")
        return record

    def status(self) -> JobState:
        """The job's state now (a :class:`chronos.backends.durable.JobState`)."""
        return self.record().state

    def cancel(self) -> bool:
        """Cancel the job: at once if it waits; if it runs, its worker is asked to stop (it
        sees ``current_job().cancelled``) and it ends CANCELLED when its attempt ends.

        Returns:
            True if the job is cancelled or its cancel was requested; False if it had
            finished already.
        """
        [state] = self.queue.backend.cancel([self.id])
        if state is None:
            raise LookupError(f"no job {self.id} in {self.queue.url}")
        return state is JobState.CANCELLED or state is JobState.RUNNING

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish, and return its result.

        Raises:
            TimeoutError: ``timeout`` seconds passed first (``concurrent.futures``'s, as a
                Future's ``result`` raises).
            JobFailedError: the job failed for good (a :class:`chronos.JobTimeoutError`
                when its last attempt timed out).
            JobCancelledError: it was cancelled.
            LookupError: no such job.
        """
        check_optional_number("timeout", timeout, minimum=0.0, inclusive=True)
        deadline = math.inf if timeout is None else SYSTEM_CLOCK.now() + timeout
        pause = _POLL_FIRST
        wakeup = threading.Event()  # never set: a bounded wait between two looks
        while True:
            record = self.record()
            if record.state in TERMINAL_STATES:
                return _outcome(record)
            left = deadline - SYSTEM_CLOCK.now()
            if left <= 0:
                raise FutureTimeoutError(f"job {self.id} is still {record.state.value}")
            SYSTEM_CLOCK.wait_until(wakeup, SYSTEM_CLOCK.now() + min(pause, left))
            pause = min(pause * 2, _POLL_MAX)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<chronos.JobHandle {self.id}>"


def _outcome(record: JobRecord) -> Any:
    if record.state is JobState.SUCCEEDED:
        return record.result
    if record.state is JobState.CANCELLED:
        raise JobCancelledError(f"job {record.id} was cancelled")
    error = record.error or ""
    if error.startswith("JobTimeoutError"):
        raise JobTimeoutError(f"job {record.id} failed: {error}")
    raise JobFailedError(record.id, record.error)
