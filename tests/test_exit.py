"""Interpreter exit with jobs still running, in a child process.

A program that forgets to shut its pool down, or whose jobs hang, must still exit: worker
threads are daemon threads and the exit hook gives unfinished jobs ``exit_grace`` seconds,
then cancels them.  Each test runs a script with ``sys.executable`` and bounds every wait on
it; the scripts report on stdout, as JSON, from an ``atexit`` handler registered *before*
chronos is imported, so that it runs *after* chronos's own exit hook.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.child import SETTLE_SOURCE, Child, Spawn, assert_clean_stderr

#: Jobs in every state, then the script ends without shutting the pool down.
FORGOTTEN_POOL_SCRIPT = (
    r"""
import atexit
import json
import threading
import time

END = []  # when the script fell off its end


"""
    + SETTLE_SOURCE
    + r"""

def report():
    exit_seconds = time.monotonic() - END[0]
    threads = settle(hung, 5.0)
    snapshot = pool.stats.snapshot()
    print(json.dumps({
        "exit_seconds": exit_seconds,
        "after": snapshot.as_dict(),
        "in_flight": snapshot.in_flight,
        "statuses": {f.job.name: f.job.status.value for f in futures},
        "unfinished": [job.name for job in pool.unfinished_jobs()],
        "threads": threads,
        "hung": sorted(hung),
    }), flush=True)


atexit.register(report)  # before chronos registers its hook: so it runs after it

import chronos
from chronos import Job, JobTimeoutError, RetryPolicy, WorkerPool

BOUND = 20.0
cond = threading.Condition()
entered = []  # names of the jobs that started and are still in their attempt
hung = set()  # names of the threads stuck in a hung job
never = threading.Event()


def enter(hangs):
    with cond:
        entered.append(chronos.current_job().name)
        if hangs:
            hung.add(threading.current_thread().name)
        cond.notify_all()


def sleeps_past_its_timeout():
    with cond:
        hung.add(threading.current_thread().name)
    time.sleep(60)


def cooperative():
    enter(hangs=False)
    chronos.current_job().wait(60)  # returns as soon as the attempt is cancelled


def hangs():
    enter(hangs=True)
    never.wait()


def flaky():
    raise OSError("try again later")


pool = WorkerPool(3, thread_name_prefix="worker", exit_grace=0.5)
backoff = RetryPolicy(max_attempts=3, backoff=30.0, jitter=False)
futures = [
    pool.submit_job(Job(sleeps_past_its_timeout, name="past-timeout", timeout=0.2)),
    pool.submit_job(Job(cooperative, name="cooperative-0")),
    pool.submit_job(Job(hangs, name="hung")),
    pool.submit_job(Job(flaky, name="backoff", retry=backoff)),
    *(pool.submit_job(Job(cooperative, name=f"cooperative-{i}")) for i in range(1, 5)),
]
# past-timeout times out and its thread is replaced; the new thread runs backoff (which
# fails and waits 30 s for its retry), then cooperative-1.
assert isinstance(futures[0].exception(timeout=BOUND), JobTimeoutError)
with cond:
    assert cond.wait_for(lambda: len(entered) == 3, BOUND), entered
print(json.dumps({"before": pool.stats.snapshot().as_dict()}), flush=True)
END.append(time.monotonic())
"""
)

#: A rate-limited Dispatcher whose next token is 30 s away when the script ends.
FORGOTTEN_DISPATCHER_SCRIPT = r"""
import atexit
import json
import time

END = []


def report():
    snapshot = pool.stats.snapshot()
    print(json.dumps({
        "exit_seconds": time.monotonic() - END[0],
        "dispatcher_alive": dispatcher.thread.is_alive(),
        "stats": snapshot.as_dict(),
        "in_flight": snapshot.in_flight,
    }), flush=True)


atexit.register(report)  # before chronos registers its hook: so it runs after it

from chronos import Dispatcher, WorkerPool

pool = WorkerPool(2, exit_grace=0.5)
dispatcher = Dispatcher(pool, interval=30.0, name="dispatcher").start()
futures = [dispatcher.submit(sum, [i]) for i in range(5)]
assert futures[0].result(timeout=20) == 0  # the first token is free, the next 30 s away
END.append(time.monotonic())
"""

#: A pool used as a context manager, with a job hung past its timeout.
CONTEXT_MANAGER_SCRIPT = r"""
import json
import time

from chronos import WorkerPool

with WorkerPool(2, timeout=0.3, exit_grace=0.5) as pool:
    hung = pool.submit(time.sleep, 60)
    quick = pool.submit(sum, [1, 2, 3])
try:
    pool.submit(sum, [])
except RuntimeError as exc:
    refused = str(exc)
else:
    refused = None
print(json.dumps({
    "hung": type(hung.exception(timeout=0)).__name__,
    "quick": quick.result(timeout=0),
    "refused": refused,
    "stats": pool.stats.snapshot().as_dict(),
}), flush=True)
"""

#: The same program on a chronos WorkerPool or a ThreadPoolExecutor: one job that hangs.
HUNG_EXECUTOR_SCRIPT = r"""
import sys
import threading

if sys.argv[1] == "chronos":
    from chronos import WorkerPool

    executor = WorkerPool(1, exit_grace=0.5)
else:
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(1)
started = threading.Event()


def hang():
    started.set()
    threading.Event().wait()


executor.submit(hang)
assert started.wait(20)
print("READY", flush=True)
if sys.argv[2] == "wait-for-ctrl-c":
    threading.Event().wait()
"""


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(script_text, *args)`` runs a script; children still running at teardown die."""
    children: list[Child] = []

    def start(text: str, *args: str) -> Child:
        script = tmp_path / f"child_{len(children)}.py"
        script.write_text(text)
        child = Child(script, *args)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.proc.returncode is None:
            child.kill()


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_a_forgotten_pool_with_hung_jobs_does_not_block_exit(spawn: Spawn) -> None:
    child = spawn(FORGOTTEN_POOL_SCRIPT)
    returncode, stdout, stderr = child.finish()
    elapsed = time.monotonic() - child.started

    # Two jobs would hang for 60 s (one past its timeout) and one retry is 30 s away.
    assert elapsed < 10, elapsed
    assert returncode == 0, stderr
    assert_clean_stderr(stderr)
    first, last = json_lines(stdout)
    before = first["before"]
    assert before["running"] == 3  # cooperative-0, hung, cooperative-1
    assert before["queued"] == 3  # cooperative-2..4
    assert before["waiting_to_retry"] == 1  # backoff
    assert before["timed_out"] == 1  # past-timeout
    assert before["abandoned_threads"] == 1

    # The exit hook waited exit_grace for them, then cancelled every one.
    assert 0.45 <= last["exit_seconds"] < 5, last["exit_seconds"]
    after = last["after"]
    assert last["in_flight"] == 0
    assert after["submitted"] == 8
    assert after["cancelled"] == 7
    assert after["timed_out"] == 1
    assert after["abandoned_threads_total"] == 4
    assert last["statuses"] == {
        "past-timeout": "timed_out",
        "hung": "cancelled",
        "backoff": "cancelled",
        **{f"cooperative-{i}": "cancelled" for i in range(5)},
    }
    # Waiting jobs were cancelled first, in submission order, then the running ones.
    unfinished = last["unfinished"]
    assert unfinished[:4] == ["backoff", "cooperative-2", "cooperative-3", "cooperative-4"]
    assert sorted(unfinished[4:]) == ["cooperative-0", "cooperative-1", "hung"]
    # Only the two hung threads outlive the pool; the interpreter leaves them behind.
    assert len(last["hung"]) == 2
    assert last["threads"] == last["hung"]


def test_a_forgotten_rate_limited_dispatcher_does_not_delay_exit(spawn: Spawn) -> None:
    child = spawn(FORGOTTEN_DISPATCHER_SCRIPT)
    returncode, stdout, stderr = child.finish()

    assert returncode == 0, stderr
    assert_clean_stderr(stderr)
    (report,) = json_lines(stdout)
    # The jobs it held were cancelled after exit_grace, and its thread stopped with the pool:
    # exit does not wait for a token 30 s away, nor for a join to time out.
    assert report["in_flight"] == 0
    assert report["stats"]["succeeded"] == 1
    assert report["stats"]["cancelled"] == 4
    assert not report["dispatcher_alive"], report
    assert report["exit_seconds"] < 3, report["exit_seconds"]  # exit_grace is 0.5 s


def test_a_pool_used_as_a_context_manager_exits_past_a_hung_job(spawn: Spawn) -> None:
    child = spawn(CONTEXT_MANAGER_SCRIPT)
    returncode, stdout, stderr = child.finish()
    elapsed = time.monotonic() - child.started

    assert elapsed < 10, elapsed  # the job would sleep for 60 s
    assert returncode == 0, stderr
    assert_clean_stderr(stderr)
    (report,) = json_lines(stdout)
    assert report["hung"] == "JobTimeoutError"
    assert report["quick"] == 6
    assert report["refused"] == "cannot schedule new futures after shutdown"
    stats = report["stats"]
    assert stats["succeeded"] == 1
    assert stats["timed_out"] == 1
    assert stats["abandoned_threads"] == 1


def test_a_hung_job_does_not_block_exit(spawn: Spawn) -> None:
    child = spawn(HUNG_EXECUTOR_SCRIPT, "chronos", "end")
    child.expect("READY")
    returncode, _, stderr = child.finish(timeout=10)  # the job would hang forever

    assert returncode == 0, stderr
    assert_clean_stderr(stderr)


@pytest.mark.slow
def test_for_comparison_a_hung_job_blocks_exit_from_a_thread_pool_executor(
    spawn: Spawn,
) -> None:
    child = spawn(HUNG_EXECUTOR_SCRIPT, "futures", "end")
    child.expect("READY")
    # CPython joins ThreadPoolExecutor workers at exit (cpython#80961): this one never ends.
    # Two seconds is four times the exit_grace within which the chronos version exits.
    with pytest.raises(subprocess.TimeoutExpired, match="timed out after 2"):
        child.proc.communicate(timeout=2)
    child.kill()


def test_ctrl_c_without_graceful_shutdown_still_exits(spawn: Spawn) -> None:
    child = spawn(HUNG_EXECUTOR_SCRIPT, "chronos", "wait-for-ctrl-c")
    child.expect("READY")
    child.proc.send_signal(signal.SIGINT)
    returncode, _, stderr = child.finish(timeout=10)  # the job would hang forever

    # KeyboardInterrupt ends the main thread as usual; the exit hook then bounds the exit.
    assert returncode == -signal.SIGINT, stderr
    assert stderr.count("Traceback") == 1, stderr
    assert "\nKeyboardInterrupt\n" in stderr, stderr
    assert "pool.thread_abandoned" in stderr, stderr  # the exit hook cancelled the hung job
    assert "internal_error" not in stderr, stderr
