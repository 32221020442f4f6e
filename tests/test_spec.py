"""JobSpec (chronos/spec.py): a job as data, and Job.from_spec / Job.to_spec (chronos/job.py).

Every bad field is refused at construction with a TypeError/ValueError naming it; a spec
survives ``to_dict``/``from_dict`` and ``json.dumps``/``json.loads`` unchanged (a hypothesis
property over JSON-able arguments and every option); a Job made from a spec runs in a
WorkerPool with the spec's arguments, name, timeout and retry policy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Mapping
from typing import Any

import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

from chronos import Job, JobStatus, JobTimeoutError, RetryPolicy, WorkerPool
from chronos.spec import JobSpec
from chronos.testing import FakeClock
from tests.conftest import Gate

REAL_WAIT = 5.0


def status(job: Job[Any]) -> JobStatus:
    """A job's status, read afresh (it changes on other threads)."""
    return job.status


def make(**fields: Any) -> JobSpec:
    """A spec for task "t" with ``fields``."""
    return JobSpec(task="t", **fields)


def test_job_spec_is_exported_from_chronos_job() -> None:
    import chronos.job

    assert chronos.job.JobSpec is JobSpec


def test_defaults() -> None:
    spec = JobSpec("send")
    assert spec == JobSpec(
        task="send",
        args=(),
        kwargs={},
        timeout=None,
        retry=None,
        priority=0,
        not_before=None,
        unique_key=None,
    )
    assert spec.to_dict() == {
        "task": "send",
        "args": [],
        "kwargs": {},
        "timeout": None,
        "retry": None,
        "priority": 0,
        "not_before": None,
        "unique_key": None,
    }


def test_a_spec_is_frozen_and_copies_its_arguments() -> None:
    args = [1, 2]
    kwargs = {"a": 1}
    spec = make(args=args, kwargs=kwargs)
    assert spec.args == (1, 2) and isinstance(spec.args, tuple)  # a list becomes a tuple
    kwargs["b"] = 2
    assert spec.kwargs == {"a": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.task = "other"  # type: ignore[misc]


# -- validation: each error names its field -------------------------------------------------------


@pytest.mark.parametrize("task", ["", 3, None, b"t"])
def test_a_bad_task_is_refused(task: object) -> None:
    with pytest.raises(TypeError, match="task"):
        JobSpec(task=task)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        (object(),),
        ({1, 2},),
        (float("nan"),),
        (float("inf"),),
        ([1, [2, -math.inf]],),
        ({"k": object()},),
        (b"bytes",),
    ],
    ids=["object", "set", "nan", "inf", "nested-inf", "nested-object", "bytes"],
)
def test_args_that_are_not_json_are_refused(args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError, match="args must be JSON-able"):
        make(args=args)


@pytest.mark.parametrize("args", ["abc", 3, None, {"a": 1}])
def test_args_that_are_not_a_tuple_are_refused(args: object) -> None:
    with pytest.raises(TypeError, match="args must be a tuple"):
        make(args=args)


@pytest.mark.parametrize(
    "kwargs",
    [{"a": object()}, {"a": {1, 2}}, {"a": float("nan")}, {"a": [float("inf")]}],
    ids=["object", "set", "nan", "nested-inf"],
)
def test_kwargs_that_are_not_json_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="kwargs must be JSON-able"):
        make(kwargs=kwargs)


@pytest.mark.parametrize("key", [1, None, (1, 2), b"a"])
def test_a_kwargs_key_that_is_not_a_str_is_refused(key: object) -> None:
    with pytest.raises(TypeError, match="kwargs keys must be str"):
        make(kwargs={key: 1})


@pytest.mark.parametrize("kwargs", [[("a", 1)], "a", 3])
def test_kwargs_that_are_not_a_mapping_are_refused(kwargs: object) -> None:
    with pytest.raises(TypeError, match="kwargs must be a mapping"):
        make(kwargs=kwargs)


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (0, ValueError),
        (0.0, ValueError),
        (-1, ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        ("1", TypeError),
    ],
)
def test_a_bad_timeout_is_refused(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        make(timeout=timeout)


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(retry_on=(ValueError,)),
        RetryPolicy(never_retry_on=(KeyError,)),
        RetryPolicy(wait=tenacity.wait_fixed(1)),
        RetryPolicy(stop=tenacity.stop_after_attempt(2)),
        RetryPolicy(retry=tenacity.retry_if_exception_type(OSError)),
    ],
    ids=["retry_on", "never_retry_on", "wait", "stop", "retry"],
)
def test_a_retry_policy_with_custom_strategies_is_refused(policy: RetryPolicy) -> None:
    with pytest.raises(ValueError, match="retry"):
        make(retry=policy)


def test_a_retry_that_is_not_a_policy_is_refused() -> None:
    with pytest.raises(TypeError, match="retry must be a RetryPolicy"):
        make(retry={"max_attempts": 2})


def test_a_retry_policy_with_plain_fields_is_accepted() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=2.0, max_backoff=9.0, multiplier=3.0)
    # A bare exception class is the default tuple once normalised: still plain.
    bare = RetryPolicy(retry_on=Exception, jitter=False, deadline=4.0)  # type: ignore[arg-type]
    spec = make(retry=bare)
    assert spec.retry is not None and spec.retry.retry_on == (Exception,)  # the default
    assert make(retry=policy).to_dict()["retry"] == {
        "max_attempts": 5,
        "backoff": 2.0,
        "max_backoff": 9.0,
        "multiplier": 3.0,
        "jitter": True,
        "deadline": None,
    }


@pytest.mark.parametrize("priority", [1.0, True, False, "1", None])
def test_a_priority_that_is_not_exactly_an_int_is_refused(priority: object) -> None:
    # type(priority) is not int: a bool (an int subclass) is refused too.
    with pytest.raises(TypeError, match="priority"):
        make(priority=priority)


@pytest.mark.parametrize("priority", [0, -5, 10**30])
def test_any_int_priority_is_accepted(priority: int) -> None:
    assert make(priority=priority).priority == priority


@pytest.mark.parametrize(
    ("not_before", "error"),
    [(-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("0", TypeError)],
)
def test_a_bad_not_before_is_refused(not_before: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="not_before"):
        make(not_before=not_before)


def test_not_before_may_be_zero_or_an_epoch_time() -> None:
    assert make(not_before=0).not_before == 0
    assert make(not_before=1.7e9).not_before == 1.7e9


@pytest.mark.parametrize("unique_key", ["", 0, b"k"])
def test_a_bad_unique_key_is_refused(unique_key: object) -> None:
    with pytest.raises(TypeError, match="unique_key"):
        make(unique_key=unique_key)


@pytest.mark.parametrize(
    "args", [({1: "a"},), ([{None: 1}],), ({1: "a", "1": "b"},)], ids=["int", "None", "clash"]
)
def test_a_nested_dict_with_a_key_that_is_not_a_str_is_refused(args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError, match="args"):
        make(args=args)


# -- from_dict ---------------------------------------------------------------------------------


def test_from_dict_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown job spec fields: color, size"):
        JobSpec.from_dict({"task": "t", "size": 1, "color": "red"})


def test_from_dict_needs_a_task() -> None:
    with pytest.raises(ValueError, match="task"):
        JobSpec.from_dict({"args": [1]})


def test_from_dict_needs_a_mapping() -> None:
    with pytest.raises(TypeError, match="mapping"):
        JobSpec.from_dict([("task", "t")])  # type: ignore[arg-type]


def test_from_dict_fills_in_the_defaults() -> None:
    assert JobSpec.from_dict({"task": "t"}) == JobSpec("t")


@pytest.mark.parametrize(
    "retry",
    [{"max_attempts": 2, "retry_on": ["ValueError"]}, {"wait": 1}, [2], "3"],
)
def test_from_dict_refuses_a_retry_with_other_fields(retry: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        JobSpec.from_dict({"task": "t", "retry": retry})


def test_from_dict_validates_like_the_constructor() -> None:
    with pytest.raises(ValueError, match="timeout"):
        JobSpec.from_dict({"task": "t", "timeout": 0})
    with pytest.raises(TypeError, match="priority"):
        JobSpec.from_dict({"task": "t", "priority": 1.5})
    with pytest.raises(ValueError, match="max_attempts"):
        JobSpec.from_dict({"task": "t", "retry": {"max_attempts": 0}})
    with pytest.raises(TypeError, match="task"):
        JobSpec.from_dict({"task": ""})


@pytest.mark.parametrize("args", ["abc", {"a": 1}, None], ids=["str", "dict", "None"])
def test_from_dict_refuses_args_that_are_not_a_list(args: object) -> None:
    with pytest.raises(TypeError, match="args"):
        JobSpec.from_dict({"task": "t", "args": args})


# -- round trips ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=6,
)
positive_finite = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False) | st.integers(
    1, 10**6
)


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    backoff = draw(st.floats(min_value=0.0, max_value=1e6))
    max_backoff = draw(st.none() | st.floats(min_value=backoff, max_value=1e7))
    return RetryPolicy(
        max_attempts=draw(st.integers(1, 100)),
        backoff=backoff,
        max_backoff=max_backoff,
        multiplier=draw(st.floats(min_value=1.0, max_value=100.0)),
        jitter=draw(st.booleans()),
        deadline=draw(st.none() | positive_finite),
    )


specs = st.builds(
    JobSpec,
    task=st.text(min_size=1),
    args=st.lists(json_values, max_size=3).map(tuple),
    kwargs=st.dictionaries(st.text(), json_values, max_size=3),
    timeout=st.none() | positive_finite,
    retry=st.none() | retry_policies(),
    priority=st.integers(),
    not_before=st.none() | st.floats(min_value=0.0, allow_infinity=False),
    unique_key=st.none() | st.text(min_size=1),
)


@settings(max_examples=30, deadline=None)
@given(spec=specs)
def test_a_spec_survives_to_dict_from_dict_and_json(spec: JobSpec) -> None:
    data = spec.to_dict()
    assert JobSpec.from_dict(data) == spec
    stored = json.dumps(data, allow_nan=False)  # JSON-able as it is, no default needed
    again = JobSpec.from_dict(json.loads(stored))
    assert again == spec
    assert again.to_dict() == data
    assert json.dumps(again.to_dict(), allow_nan=False) == stored
    assert JobSpec.from_stored(json.loads(stored)) == spec  # a store's trusted read path


@settings(max_examples=25, deadline=None)
@given(
    args=st.lists(json_values, max_size=3),
    kwargs=st.dictionaries(st.text(), json_values, max_size=3),
)
def test_a_job_with_json_arguments_round_trips_through_a_spec(
    args: list[Any], kwargs: Mapping[str, Any]
) -> None:
    policy = RetryPolicy(max_attempts=4, backoff=0.5, jitter=False)
    job: Job[Any] = Job(len, tuple(args), kwargs, name="task.len", timeout=3.0, retry=policy)
    spec = job.to_spec()
    assert spec == JobSpec("task.len", tuple(args), kwargs, timeout=3.0, retry=policy)
    again = Job.from_spec(JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))), len)
    assert again.to_spec() == spec
    assert (again.name, again.args, again.kwargs) == ("task.len", tuple(args), kwargs)
    assert (again.timeout, again.retry) == (3.0, policy)


# -- Job.from_spec / Job.to_spec -------------------------------------------------------------------


def add(a: int, b: int, *, c: int = 0) -> int:
    return a + b + c


def test_a_job_from_a_spec_runs_its_task_with_its_arguments() -> None:
    spec = JobSpec("math.add", args=(1, 2), kwargs={"c": 3}, timeout=30.0)
    job = Job.from_spec(spec, add)
    assert job.status is JobStatus.CREATED
    assert (job.name, job.args, job.kwargs, job.timeout, job.retry) == (
        "math.add",
        (1, 2),
        {"c": 3},
        30.0,
        None,
    )
    with WorkerPool(1) as pool:
        assert pool.submit_job(job).result(timeout=REAL_WAIT) == 6
    assert status(job) is JobStatus.SUCCEEDED


def test_a_job_from_a_spec_retries_by_the_spec_policy() -> None:
    calls: list[int] = []

    def flaky(n: int) -> int:
        calls.append(n)
        if len(calls) < 3:
            raise ConnectionError("again")
        return n * 2

    policy = RetryPolicy(max_attempts=3, backoff=0.0, jitter=False)
    job = Job.from_spec(JobSpec("flaky", args=(21,), retry=policy), flaky)
    assert job.retry == policy
    with WorkerPool(1) as pool:  # the pool has no retry policy: the spec's applies
        assert pool.submit_job(job).result(timeout=REAL_WAIT) == 42
    assert calls == [21, 21, 21]
    assert len(job.attempts) == 3


def test_a_job_from_a_spec_times_out_by_the_spec_timeout(clock: FakeClock, gate: Gate) -> None:
    job = Job.from_spec(JobSpec("hang", args=("x",), timeout=2.0), gate.wait)
    pool = WorkerPool(1, clock=clock)  # no pool timeout: the spec's applies
    try:
        future = pool.submit_job(job)
        assert gate.entered(1)
        clock.advance(2.0)
        error = future.exception(timeout=REAL_WAIT)
        assert isinstance(error, JobTimeoutError)
        assert "hang" in str(error) and "2s timeout" in str(error)
        assert job.status is JobStatus.TIMED_OUT
    finally:
        gate.open()
        pool.shutdown()


def test_from_spec_refuses_what_is_not_a_spec_or_not_callable() -> None:
    with pytest.raises(TypeError, match="spec"):
        Job.from_spec({"task": "t"}, add)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must be callable"):
        Job.from_spec(JobSpec("t"), "add")  # type: ignore[arg-type]


def test_to_spec_names_the_task_after_the_job_or_as_asked() -> None:
    assert Job(abs, (-1,)).to_spec() == JobSpec("abs", (-1,))
    assert Job(add, (1, 2), name="math.add").to_spec().task == "math.add"
    assert Job(add, (1, 2)).to_spec(task="other").task == "other"


def test_to_spec_refuses_arguments_that_are_not_json() -> None:
    with pytest.raises(TypeError, match="args"):
        Job(add, (object(), 1)).to_spec()
    with pytest.raises(TypeError, match="kwargs"):
        Job(add, (1, 2), {"c": {1, 2}}).to_spec()
    with pytest.raises(ValueError, match="retry"):
        Job(add, (1, 2), retry=RetryPolicy(retry_on=(OSError,))).to_spec()


def test_to_spec_of_a_finished_job_raises() -> None:
    with WorkerPool(1) as pool:
        job = Job(add, (1, 2))
        assert pool.submit_job(job).result(timeout=REAL_WAIT) == 3
    with pytest.raises(RuntimeError, match="finished"):
        job.to_spec()


def test_to_spec_of_a_cancelled_job_still_works() -> None:
    # A cancelled job keeps its callable and arguments (for clone()), so it can be stored.
    started = threading.Event()
    release = threading.Event()

    def block() -> None:
        started.set()
        release.wait(REAL_WAIT)

    pool = WorkerPool(1)
    try:
        pool.submit(block)
        assert started.wait(REAL_WAIT)
        job = Job(add, (1, 2), {"c": 3})
        future = pool.submit_job(job)
        assert future.cancel()
        assert job.status is JobStatus.CANCELLED
        assert job.to_spec() == JobSpec("add", (1, 2), {"c": 3})
    finally:
        release.set()
        pool.shutdown()
