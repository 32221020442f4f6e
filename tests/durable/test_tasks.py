"""chronos.tasks (Queue, @queue.task, enqueue, handles) and `chronos jobs`, on SQLite."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path

import pytest

from chronos import JobCancelledError, JobTimeoutError, RetryPolicy
from chronos.backends.durable import Finish, FinishKind, JobState
from chronos.cli.app import build_parser
from chronos.spec import JobSpec
from chronos.tasks import JobFailedError, Queue, TaskRegistry


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    with Queue(f"sqlite:///{tmp_path}/jobs.db") as q:
        yield q


def test_a_task_is_registered_by_name_and_still_callable(queue: Queue) -> None:
    @queue.task
    def add(a: int, b: int) -> int:
        return a + b

    @queue.task(name="mail.send", timeout=5, retry=RetryPolicy(max_attempts=4), priority=3)
    def send(to: str) -> str:
        return to

    assert add(2, 3) == 5
    assert queue.registry.names() == sorted([add.name, "mail.send"])
    assert add.name.endswith(".add")
    spec = send.spec(("ann",))
    assert queue.registry.get("mail.send") is send
    assert (spec.task, spec.timeout, spec.priority) == ("mail.send", 5, 3)
    assert spec.retry == RetryPolicy(max_attempts=4)


def test_enqueue_stores_the_spec_and_the_handle_follows_it(queue: Queue) -> None:
    @queue.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.enqueue(1, b=2)
    record = handle.record()
    assert handle.status() is JobState.READY
    assert (record.spec.task, record.spec.args, dict(record.spec.kwargs)) == ("add", (1,), {"b": 2})
    assert queue.job(handle.id) == handle


def test_enqueue_checks_the_arguments_before_storing_anything(queue: Queue) -> None:
    @queue.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match="add: missing a required argument: 'b'"):
        add.enqueue(1)
    with pytest.raises(TypeError, match="args must be JSON-able"):
        add.enqueue(1, object())
    with pytest.raises(ValueError, match="delay or eta"):
        add.enqueue(1, 2, delay=1, eta=2)
    with pytest.raises(ValueError, match="delay"):
        add.enqueue(1, 2, delay=-1)
    assert sum(queue.backend.statistics("default").counts.values()) == 0


def test_delay_schedules_and_a_unique_key_deduplicates(queue: Queue) -> None:
    @queue.task(name="t")
    def t(x: int) -> int:
        return x

    later = t.enqueue(1, delay=3600)
    assert later.status() is JobState.SCHEDULED
    first = t.enqueue(1, unique_key="k")
    assert t.enqueue(2, unique_key="k") == first


def test_option_names_in_a_signature_need_enqueue_with(queue: Queue) -> None:
    @queue.task(name="sleepy")
    def sleepy(delay: float) -> float:
        return delay

    with pytest.raises(TypeError, match="enqueue_with"):
        sleepy.enqueue(1.0)
    handle = sleepy.enqueue_with((1.0,), delay=3600)
    assert handle.record().spec.args == (1.0,)


def test_a_name_registered_twice_is_refused() -> None:
    registry = TaskRegistry()
    q = Queue.__new__(Queue)  # no store needed to build tasks for a bare registry
    from chronos.tasks import Task

    registry.add(Task(q, abs, "n", None, None, 0))
    with pytest.raises(ValueError, match="registered already"):
        registry.add(Task(q, len, "n", None, None, 0))


def test_a_retry_policy_that_cannot_be_stored_is_refused_at_registration(queue: Queue) -> None:
    with pytest.raises(ValueError, match="retry"):

        @queue.task(retry=RetryPolicy(retry_on=(KeyError,)))
        def f() -> None:
            pass


@pytest.mark.parametrize(
    ("url", "error", "match"),
    [
        ("ftp://x", ValueError, "unknown queue URL scheme"),
        ("redis://localhost", ValueError, r"chronos-jobs\[redis\]"),
        ("postgresql://localhost/db", ValueError, r"chronos-jobs\[postgres\]"),
        ("sqlite://host/x.db", ValueError, "no host"),
        ("sqlite:///", ValueError, "needs a file"),
        ("sqlite:///x.db?color=red", ValueError, "unknown sqlite URL option"),
        (42, TypeError, "url must be a str"),
    ],
)
def test_bad_urls_are_refused_clearly(url: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Queue(url)  # type: ignore[arg-type]


def _finish_claimed(queue: Queue, kind: FinishKind, **fields: object) -> None:
    [claimed] = queue.backend.claim(queue.name, 1, 30.0, "test")
    queue.backend.finish([Finish(claimed.id, claimed.token, kind, **fields)])  # type: ignore[arg-type]


def test_result_gives_the_stored_outcome(queue: Queue) -> None:
    @queue.task(name="t")
    def t() -> None:
        pass

    done = t.enqueue()
    _finish_claimed(queue, FinishKind.COMPLETE, result={"ok": [1, 2]})
    assert done.result(timeout=1) == {"ok": [1, 2]}

    failed = t.enqueue()
    _finish_claimed(queue, FinishKind.FAIL, error="ValueError: bad")
    with pytest.raises(JobFailedError, match="ValueError: bad") as info:
        failed.result(timeout=1)
    assert info.value.job_id == failed.id

    timed_out = t.enqueue()
    _finish_claimed(queue, FinishKind.FAIL, error="JobTimeoutError: too slow")
    with pytest.raises(JobTimeoutError):
        timed_out.result(timeout=1)

    cancelled = t.enqueue()
    assert cancelled.cancel()
    with pytest.raises(JobCancelledError):
        cancelled.result(timeout=1)
    assert not done.cancel()  # finished: nothing to cancel


def test_result_times_out_while_the_job_waits(queue: Queue) -> None:
    @queue.task(name="t")
    def t() -> None:
        pass

    with pytest.raises(FutureTimeoutError):
        t.enqueue().result(timeout=0.02)
    with pytest.raises(LookupError):
        queue.job("no-such-id").status()


def _jobs(queue: Queue, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["jobs", "--queue", queue.url, *argv])
    out = io.StringIO()
    status: int = args.handler(args, out)
    return status, out.getvalue()


def test_the_jobs_command_lists_shows_cancels_retries_and_purges(queue: Queue) -> None:
    @queue.task(name="t")
    def t(x: int) -> int:
        return x

    a, b = t.enqueue(1), t.enqueue(2)
    status, out = _jobs(queue, "list")
    assert status == 0 and a.id in out and b.id in out and "ready" in out
    status, out = _jobs(queue, "list", "--json", "--state", "ready", "--limit", "1")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [a.id]
    status, out = _jobs(queue, "show", a.id)
    assert json.loads(out)["spec"] == JobSpec("t", args=(1,)).to_dict()
    assert _jobs(queue, "cancel", a.id)[0] == 0 and a.status() is JobState.CANCELLED
    assert _jobs(queue, "retry", a.id) == (0, "requeued 1 of 1 job(s)\n")
    assert a.status() is JobState.READY
    status, out = _jobs(queue, "stats", "--json")
    assert json.loads(out)["counts"]["ready"] == 2
    assert _jobs(queue, "show", "nope")[0] == 1
    assert _jobs(queue, "purge", "--older-than", "0")[0] == 0


def test_the_jobs_command_needs_a_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHRONOS_QUEUE", raising=False)
    args = build_parser().parse_args(["jobs", "list"])
    assert isinstance(args, argparse.Namespace)
    with pytest.raises(SystemExit):
        args.handler(args)
