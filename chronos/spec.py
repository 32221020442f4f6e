"""JobSpec: a job as data, which can be stored in a queue and sent to another process.

A spec names a *task* (a name registered in the worker process, never an import path) and
carries JSON-able arguments and options.  Nothing in it is live: no callable, no Future, no
state.  Durable backends keep specs; a worker resolves the task name through its own
registry and runs the result as a :class:`chronos.Job`.

Checked at construction: a bad field raises ``TypeError``/``ValueError`` naming it, so
nothing unstorable is ever enqueued.  JSON-able means what :func:`json.dumps` accepts
without a ``default``: dicts with str keys, lists, tuples (stored as lists), str, int,
finite float, bool and None.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chronos._validate import check_number
from chronos.retry import RetryPolicy

__all__ = ["JobSpec"]

#: The RetryPolicy fields a spec can carry: plain numbers and flags.  Custom predicates,
#: tenacity strategies and exception classes stay in the process that defined them.
_RETRY_FIELDS = ("max_attempts", "backoff", "max_backoff", "multiplier", "jitter", "deadline")
_DEFAULT_POLICY = RetryPolicy()


def _check_json(name: str, value: object) -> None:
    """Raise TypeError naming ``name`` unless ``value`` survives a JSON round trip as it is
    (``json.dumps`` alone would turn a dict's int keys into str keys).  One walk: the store
    encodes the value once, later."""
    problem = _json_problem(value)
    if problem is not None:
        raise TypeError(
            f"{name} must be JSON-able (str, int, float, bool, None, and lists and "
            f"str-keyed dicts of them): {problem}"
        )


def _json_problem(value: object, depth: int = 0) -> str | None:
    """What keeps ``value`` from being JSON data that reads back as it is, or None."""
    if value is None or isinstance(value, str | int):  # (bool is an int)
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    if depth > 100:
        return "nested too deeply (or a value that contains itself)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"a dict key {key!r} is not a str"
            if (problem := _json_problem(item, depth + 1)) is not None:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            if (problem := _json_problem(item, depth + 1)) is not None:
                return problem
    else:
        return f"Object of type {type(value).__name__} is not JSON serializable"
    return None


@functools.lru_cache(maxsize=256)
def _stored_policy(fields: tuple[tuple[str, Any], ...]) -> RetryPolicy:
    """The RetryPolicy of stored plain fields (immutable, so shared between the jobs that
    carry the same one)."""
    return RetryPolicy(**dict(fields))


def retry_to_dict(policy: RetryPolicy) -> dict[str, Any]:
    """The plain fields of ``policy``.

    Raises:
        ValueError: the policy has a custom ``wait``/``stop``/``retry`` strategy or
            exception filters, which cannot leave the process.
    """
    custom = [
        name
        for name in ("wait", "stop", "retry", "retry_on", "never_retry_on")
        if getattr(policy, name) != getattr(_DEFAULT_POLICY, name)
    ]
    if custom:
        raise ValueError(
            f"retry: a policy with a custom {', '.join(custom)} cannot be stored in a job "
            "spec; keep it on the task instead"
        )
    return {name: getattr(policy, name) for name in _RETRY_FIELDS}


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job as data.

    Args:
        task: the registered task name (a non-empty str).
        args: positional arguments, JSON-able (a tuple or list).
        kwargs: keyword arguments, a JSON-able mapping with str keys.
        timeout: seconds each attempt may run (None: the worker's default); > 0, finite.
        retry: a :class:`chronos.RetryPolicy` with plain fields only (see
            :func:`retry_to_dict`), or None for the worker's default.
        priority: higher runs first among ready jobs of a queue; an int.
        not_before: wall-clock time (seconds since the epoch) before which the job does not
            start, or None.
        unique_key: while a job with this key is unfinished, enqueueing another with the
            same key gives the existing one; a non-empty str or None.

    Raises:
        TypeError, ValueError: for a bad field, naming it.

    Thread-safety: immutable.
    """

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    retry: RetryPolicy | None = None
    priority: int = 0
    not_before: float | None = None
    unique_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise TypeError(f"task must be a non-empty str, got {self.task!r}")
        if not isinstance(self.args, tuple | list):
            raise TypeError(f"args must be a tuple, got {type(self.args).__name__}")
        object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping, got {type(self.kwargs).__name__}")
        for key in self.kwargs:
            if not isinstance(key, str):
                raise TypeError(f"kwargs keys must be str, got {type(key).__name__} {key!r}")
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        _check_json("args", list(self.args))
        _check_json("kwargs", self.kwargs)
        if self.timeout is not None:
            timeout = check_number("timeout", self.timeout, minimum=0.0, inclusive=False)
            if math.isinf(timeout):
                raise ValueError("timeout must be finite; pass None for no timeout")
        if self.retry is not None:
            if not isinstance(self.retry, RetryPolicy):
                raise TypeError(f"retry must be a RetryPolicy, got {type(self.retry).__name__}")
            retry_to_dict(self.retry)  # raises for what cannot be stored
        if type(self.priority) is not int:
            raise TypeError(f"priority must be an int, got {type(self.priority).__name__}")
        if self.not_before is not None:
            check_number("not_before", self.not_before, minimum=0.0, inclusive=True, finite=True)
        if self.unique_key is not None and (
            not isinstance(self.unique_key, str) or not self.unique_key
        ):
            raise TypeError(f"unique_key must be a non-empty str or None, got {self.unique_key!r}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (``json.dumps`` takes it as it is)."""
        return {
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "timeout": self.timeout,
            "retry": None if self.retry is None else retry_to_dict(self.retry),
            "priority": self.priority,
            "not_before": self.not_before,
            "unique_key": self.unique_key,
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> JobSpec:
        """The spec a store wrote with :meth:`to_dict` of a checked spec, read back without
        checking its fields again (walking the arguments for JSON-ability is the costly
        part of a claim).  For a store's own rows only: anything else goes through
        :meth:`from_dict`.
        """
        spec = object.__new__(cls)
        put = object.__setattr__
        put(spec, "task", data["task"])
        put(spec, "args", tuple(data["args"]))
        put(spec, "kwargs", data["kwargs"])
        put(spec, "timeout", data["timeout"])
        retry = data["retry"]
        put(spec, "retry", None if retry is None else _stored_policy(tuple(retry.items())))
        put(spec, "priority", data["priority"])
        put(spec, "not_before", data["not_before"])
        put(spec, "unique_key", data["unique_key"])
        return spec

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """The spec that :meth:`to_dict` gave ``data`` for.

        Raises:
            TypeError, ValueError: ``data`` is not such a dict (a missing ``task``, an
                unknown key, a bad field), naming the problem.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a job spec must be a mapping, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown job spec fields: {', '.join(sorted(unknown))}")
        if "task" not in data:
            raise ValueError("a job spec needs a task")
        retry = data.get("retry")
        if retry is not None:
            if not isinstance(retry, Mapping) or set(retry) - set(_RETRY_FIELDS):
                raise ValueError(f"retry must be a mapping of {', '.join(_RETRY_FIELDS)}")
            retry = RetryPolicy(**retry)
        args = data.get("args", ())
        if not isinstance(args, list | tuple):
            raise TypeError(f"args must be a list, got {type(args).__name__}")
        return cls(
            task=data["task"],
            args=tuple(args),
            kwargs=data.get("kwargs", {}),
            timeout=data.get("timeout"),
            retry=retry,
            priority=data.get("priority", 0),
            not_before=data.get("not_before"),
            unique_key=data.get("unique_key"),
        )
