"""Interpreter exit with jobs still running, queued, in backoff or hung, in a child process.

A program that forgets to shut its pool down, or whose jobs hang, must still exit: worker
threads are daemon threads and the exit hook gives unfinished jobs ``exit_grace`` seconds,
then cancels them.  Each test runs a script with ``sys.executable`` and bounds every wait on
it; the scripts report on stdout, as JSON, from an ``atexit`` handler registered *before*
chronos is imported, so that it runs *after* chronos's own exit hook.  Each checks that the
process ended within a bound, with the right exit status and a clean stderr, and that every
job it made is terminal and counted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.child import SETTLE_SOURCE, Child, Spawn, assert_clean_stderr

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


atexit.register(report)  # runs after chronos's hook (threading._register_atexit)

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


atexit.register(report)  # runs after chronos's hook (threading._register_atexit)

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
import signal
import sys
import threading

# Ctrl+C raises KeyboardInterrupt, even if the test runs as a background job (whose children
# start with SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)

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


#: One phase a program can leave its pool in, chosen by the first argument; then the script
#: ends (or exits, or raises) without shutting anything down.  The report, from an atexit
#: handler registered before chronos's, covers every pool, future and dispatcher it made.
EXIT_PHASE_SCRIPT = (
    r"""
import atexit
import json
import sys
import threading
import time

END = []  # when the script stopped running its own code
POOLS = []
FUTURES = []
DISPATCHERS = []
PULLED = []  # jobs made by the generators, in the order pulled
hung = set()  # names of the threads stuck in a hung job


"""
    + SETTLE_SOURCE
    + r"""

def report():
    exit_seconds = time.monotonic() - END[0]
    threads = settle(hung, 5.0)
    pools = []
    for pool in POOLS:
        snapshot = pool.stats.snapshot()
        pools.append({
            "stats": snapshot.as_dict(),
            "in_flight": snapshot.in_flight,
            "finished": snapshot.finished,
            "unfinished": [job.name for job in pool.unfinished_jobs()],
        })
    print(json.dumps({
        "exit_seconds": exit_seconds,
        "pools": pools,
        "statuses": {f.job.name: f.job.status.value for f in FUTURES},
        "attempts": {f.job.name: len(f.job.attempts) for f in FUTURES},
        "pulled": {job.name: job.status.value for job in PULLED},
        "leftovers": [job.name for d in DISPATCHERS for job in d.leftover_jobs()],
        "dispatchers_alive": [d.thread.is_alive() for d in DISPATCHERS],
        "threads": threads,
        "hung": sorted(hung),
    }), flush=True)


atexit.register(report)  # runs after chronos's hook (threading._register_atexit)

import chronos
from chronos import Dispatcher, Job, RetryPolicy, WorkerPool

PHASE = sys.argv[1]
BOUND = 20.0
never = threading.Event()
started = threading.Semaphore(0)


def wait_for(predicate):
    deadline = time.monotonic() + BOUND
    while not predicate():
        assert time.monotonic() < deadline, "the phase was not reached in time"
        time.sleep(0.001)


def hang(name):
    hung.add(threading.current_thread().name)
    started.release()
    never.wait()


def cooperative(name):
    started.release()
    chronos.current_job().wait(60)  # returns as soon as the attempt is cancelled
    return name


def quick(name):
    return name


def submit(pool, fn, name, **options):
    future = pool.submit_job(Job(fn, (name,), name=name, **options))
    FUTURES.append(future)
    return future


if PHASE == "queued":
    # One job runs until the exit begins, five wait behind it: all of them can finish.
    release = threading.Event()

    def held(name):
        started.release()
        release.wait(BOUND)
        return name

    pool = WorkerPool(1, thread_name_prefix="worker", exit_grace=5.0)
    POOLS.append(pool)
    submit(pool, held, "held")
    assert started.acquire(timeout=BOUND)
    for i in range(5):
        submit(pool, quick, f"queued-{i}")
    # After chronos registered its exit hook (threading._register_atexit, which calls them
    # last in, first out): so this one runs first, as exit begins.
    threading._register_atexit(release.set)

elif PHASE == "backoff":
    # A job waits 0.5 s for its retry: well within exit_grace.
    def flaky(name):
        if chronos.current_job().attempt_number == 1:
            raise OSError("the first attempt fails")
        return name

    pool = WorkerPool(1, thread_name_prefix="worker", exit_grace=5.0)
    POOLS.append(pool)
    submit(pool, flaky, "retried", retry=RetryPolicy(max_attempts=2, backoff=0.5, jitter=False))
    wait_for(lambda: pool.stats.snapshot().waiting_to_retry == 1)

elif PHASE == "queue_full":
    # A hung worker, a full queue, a dispatcher blocked pushing the first item of an endless
    # generator into it, and a user thread blocked in submit_job.
    def endless():
        i = 0
        while True:
            job = Job(quick, (f"gen-{i}",), name=f"gen-{i}")
            PULLED.append(job)
            i += 1
            yield job

    pool = WorkerPool(1, thread_name_prefix="worker", queue_size=2, exit_grace=0.5)
    POOLS.append(pool)
    submit(pool, hang, "hung")
    assert started.acquire(timeout=BOUND)
    for i in range(2):
        submit(pool, quick, f"queued-{i}")
    dispatcher = Dispatcher(pool, name="dispatcher").start()
    DISPATCHERS.append(dispatcher)
    dispatcher.dispatch(endless())
    blocked = Job(quick, ("blocked-submit",), name="blocked-submit")
    FUTURES.append(blocked.future)
    producer = threading.Thread(target=pool.submit_job, args=(blocked,), name="producer")
    producer.daemon = True  # a non-daemon one would be joined before any atexit hook runs
    producer.start()
    # Both producers blocked, and the dispatcher's reader has read its one item ahead (it
    # does so right after the dispatcher took gen-0: waiting for it keeps this deterministic).
    wait_for(lambda: pool.statistics().backend.waiting_producers == 2 and len(PULLED) == 2)

elif PHASE in ("sys_exit", "exception"):
    # Two jobs run, two wait, when the program ends abnormally.
    pool = WorkerPool(2, thread_name_prefix="worker", exit_grace=0.5)
    POOLS.append(pool)
    for i in range(4):
        submit(pool, cooperative, f"cooperative-{i}")
    for _ in range(2):
        assert started.acquire(timeout=BOUND)

elif PHASE == "pools":
    # Three forgotten pools, each with a hung job and a queued one.
    for n in range(3):
        pool = WorkerPool(1, thread_name_prefix=f"pool{n}", exit_grace=0.3)
        POOLS.append(pool)
        submit(pool, hang, f"hung-{n}")
        assert started.acquire(timeout=BOUND)
        submit(pool, quick, f"queued-{n}")

print(json.dumps({"before": [pool.stats.snapshot().as_dict() for pool in POOLS]}), flush=True)
END.append(time.monotonic())
if PHASE == "sys_exit":
    sys.exit(3)
if PHASE == "exception":
    raise RuntimeError("the program failed")
"""
)


#: A producer blocked in submit() on a full queue (a hung job holds the only worker) when
#: the program ends or is interrupted.  The first argument says how:
#:
#: - ``ctrl-c``: the main thread is the producer, feeding the pool from a ``with`` block, as
#:   the simplest programs do; the test presses Ctrl+C (SIGINT) while it waits for room (the
#:   running job is released on the way out, so that leaving the block can finish);
#: - ``non-daemon``: a plain (non-daemon) user thread is the producer; the main thread ends.
#:
#: The atexit report (registered before chronos's hook, so it runs after it) gives the books.
BLOCKED_SUBMIT_SCRIPT = r"""
import atexit
import json
import signal
import sys
import threading
import time


def report():
    snapshot = pool.stats.snapshot()
    print(json.dumps({"stats": snapshot.as_dict(), "in_flight": snapshot.in_flight}), flush=True)


atexit.register(report)  # runs after chronos's hook (threading._register_atexit)
# Ctrl+C raises KeyboardInterrupt, even if the test runs as a background job (whose children
# start with SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)

from chronos import WorkerPool

never = threading.Event()
started = threading.Event()


def hang():
    started.set()
    never.wait()


def ready_when_blocked():
    while pool.statistics().backend.waiting_producers != 1:
        time.sleep(0.001)
    print("READY", flush=True)


if sys.argv[1] == "ctrl-c":
    release = threading.Event()

    def held():
        started.set()
        release.wait(20)

    with WorkerPool(1, queue_size=1) as pool:
        pool.submit(held)
        assert started.wait(20)
        threading.Thread(target=ready_when_blocked, daemon=True).start()
        try:
            for n in range(10):
                pool.submit(abs, -n)  # the first fills the queue, the second waits for room
        finally:
            release.set()  # on the way out: the running job can finish
else:
    pool = WorkerPool(1, queue_size=1, exit_grace=0.5)
    pool.submit(hang)
    assert started.wait(20)
    pool.submit(abs, -1)
    threading.Thread(target=pool.submit, args=(abs, -2), name="producer").start()
    ready_when_blocked()
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
    """Jobs in every state at once (running, queued, in backoff, hung, one hung past its
    timeout) when the script ends: exit comes after exit_grace, every job is terminal and
    the waiting ones are listed first."""
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
    """A dispatcher waiting 30 s for its next token does not hold the exit."""
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
    """Leaving a ``with WorkerPool`` block does not wait for a job hung past its timeout."""
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
    """The same one-hung-job program that never exits on a ThreadPoolExecutor (below)."""
    child = spawn(HUNG_EXECUTOR_SCRIPT, "chronos", "end")
    child.expect("READY")
    returncode, _, stderr = child.finish(timeout=10)  # the job would hang forever

    assert returncode == 0, stderr
    assert_clean_stderr(stderr)


@pytest.mark.slow
def test_for_comparison_a_hung_job_blocks_exit_from_a_thread_pool_executor(
    spawn: Spawn,
) -> None:
    """The contrast that motivates chronos's exit hook (this test shows CPython, not us)."""
    child = spawn(HUNG_EXECUTOR_SCRIPT, "futures", "end")
    child.expect("READY")
    # CPython joins ThreadPoolExecutor workers at exit (cpython#80961): this one never ends.
    # Two seconds is four times the exit_grace within which the chronos version exits.
    with pytest.raises(subprocess.TimeoutExpired, match="timed out after 2"):
        child.proc.communicate(timeout=2)
    child.kill()


def test_ctrl_c_without_graceful_shutdown_still_exits(spawn: Spawn) -> None:
    """Without GracefulShutdown, Ctrl+C ends the program as usual (KeyboardInterrupt, killed
    by SIGINT) and the exit hook still bounds the exit past a hung job."""
    child = spawn(HUNG_EXECUTOR_SCRIPT, "chronos", "wait-for-ctrl-c")
    child.expect("READY")
    child.proc.send_signal(signal.SIGINT)
    returncode, _, stderr = child.finish(timeout=10)  # the job would hang forever

    # KeyboardInterrupt ends the main thread as usual; the exit hook then bounds the exit.
    assert returncode == -signal.SIGINT, stderr
    assert stderr.count("Traceback") == 1, stderr
    assert "\nKeyboardInterrupt\n" in stderr, stderr
    # The exit hook says, in one line, what it waits for, then cancels the hung job (its
    # thread is left behind on purpose: an INFO event, not printed).
    assert "chronos: exiting: waiting up to 0.5s (exit_grace) for 1 unfinished job" in stderr
    assert "internal_error" not in stderr, stderr


def test_ctrl_c_while_submit_waits_for_room_still_exits(spawn: Spawn) -> None:
    """Ctrl+C while the main thread, inside ``with WorkerPool(...)``, waits for room in the
    full queue: KeyboardInterrupt leaves the block, whose shutdown() waits for the jobs the
    pool admitted (all can finish), and ends the program; every job is accounted for."""
    child = spawn(BLOCKED_SUBMIT_SCRIPT, "ctrl-c")
    child.expect("READY")
    child.proc.send_signal(signal.SIGINT)
    returncode, stdout, stderr = child.finish(timeout=4)  # a healthy exit takes milliseconds

    assert returncode == -signal.SIGINT, stderr
    assert stderr.count("Traceback") == 1 and "\nKeyboardInterrupt\n" in stderr, stderr
    (report,) = json_lines(stdout)
    assert report["in_flight"] == 0
    assert report["stats"]["submitted"] == 3  # the running job, the queued one, the interrupted one


def test_a_non_daemon_thread_blocked_in_submit_does_not_block_exit(spawn: Spawn) -> None:
    """A plain user thread blocked in submit() on a full queue, behind a hung job, when the
    main thread ends: the hung job must not block exit (docs/shutdown.md), so the pool's
    exit cancels the waiting jobs, which releases the thread, and the process ends."""
    child = spawn(BLOCKED_SUBMIT_SCRIPT, "non-daemon")
    child.expect("READY")
    returncode, stdout, stderr = child.finish(timeout=4)  # exit_grace is 0.5 s

    assert returncode == 0, stderr
    assert_clean_stderr(stderr)
    (report,) = json_lines(stdout)
    assert report["in_flight"] == 0
    assert report["stats"]["cancelled"] == 3


# -- each phase on its own (EXIT_PHASE_SCRIPT) ------------------------------------------------


def run_phase(spawn: Spawn, phase: str) -> tuple[int, list[dict[str, Any]], dict[str, Any], str]:
    """Run EXIT_PHASE_SCRIPT in ``phase``: (returncode, each pool's stats before the end,
    the report, stderr).

    Also checks what every phase must show: the books of every pool balance, and only the
    threads of hung jobs are left when the process ends.
    """
    child = spawn(EXIT_PHASE_SCRIPT, phase)
    returncode, stdout, stderr = child.finish()
    first, report = json_lines(stdout)
    before: list[dict[str, Any]] = first["before"]
    for pool in report["pools"]:
        assert pool["in_flight"] == 0, pool
        assert pool["finished"] == pool["stats"]["submitted"], pool
    assert report["threads"] == report["hung"]
    assert not any(report["dispatchers_alive"]), report
    return returncode, before, report, stderr


def test_queued_jobs_that_can_finish_run_at_exit(spawn: Spawn) -> None:
    """A job running and five queued when the script ends: the exit hook lets them all run
    (they can, within exit_grace) and the process exits as soon as they are done, not
    after the whole exit_grace."""
    returncode, before, report, stderr = run_phase(spawn, "queued")

    assert returncode == 0, stderr
    assert_clean_stderr(stderr)
    assert (before[0]["running"], before[0]["queued"]) == (1, 5)
    assert report["statuses"] == {
        "held": "succeeded",
        **{f"queued-{i}": "succeeded" for i in range(5)},
    }
    assert report["pools"][0]["unfinished"] == []
    assert report["exit_seconds"] < 2.5, report["exit_seconds"]  # exit_grace is 5 s


@pytest.mark.skipif(
    (3, 12, 0) <= sys.version_info[:3] < (3, 12, 3),
    reason="CPython 3.12.0-3.12.2 refuse to start a thread during interpreter exit "
    "(cpython#113964), which the retry needs here",
)
def test_a_retry_due_within_exit_grace_runs_at_exit(spawn: Spawn) -> None:
    """A job waiting 0.5 s for its retry when the script ends gets that retry at exit (the
    exit grace covers backoff, which holds no thread), succeeds, and the process exits."""
    returncode, before, report, stderr = run_phase(spawn, "backoff")

    assert returncode == 0, stderr
    assert before[0]["waiting_to_retry"] == 1
    assert report["statuses"] == {"retried": "succeeded"}
    assert report["attempts"] == {"retried": 2}
    assert 0.3 < report["exit_seconds"] < 3.5, report["exit_seconds"]  # exit_grace is 5 s
    assert "internal_error" not in stderr and "Traceback" not in stderr, stderr


def test_a_full_queue_with_blocked_producers_does_not_block_exit(spawn: Spawn) -> None:
    """A hung worker, a full queue, a dispatcher blocked pushing into it from an endless
    generator and a user thread blocked in submit_job: after exit_grace everything is
    cancelled, both producers are woken, the generator is dropped, and the process ends."""
    returncode, before, report, stderr = run_phase(spawn, "queue_full")

    assert returncode == 0, stderr
    assert_clean_stderr(stderr)
    assert (before[0]["running"], before[0]["queued"]) == (1, 4)  # 2 in the queue, 2 blocked
    assert report["statuses"] == {
        "hung": "cancelled",
        "queued-0": "cancelled",
        "queued-1": "cancelled",
        "blocked-submit": "cancelled",
    }
    # The generator was pulled no further than the item the dispatcher holds (gen-0) and the
    # one its reader thread read ahead (gen-1).
    assert report["pulled"] == {"gen-0": "cancelled", "gen-1": "cancelled"}
    stats = report["pools"][0]["stats"]
    assert (stats["submitted"], stats["cancelled"]) == (6, 6)
    unfinished = sorted(report["pools"][0]["unfinished"])
    assert unfinished == sorted([*report["statuses"], "gen-0", "gen-1"])
    assert report["leftovers"] == []  # the pool cancelled gen-0 and gen-1, and listed them
    assert len(report["hung"]) == 1
    assert 0.45 <= report["exit_seconds"] < 3.5, report["exit_seconds"]


@pytest.mark.parametrize(
    ("phase", "status"), [("sys_exit", 3), ("exception", 1)], ids=["sys_exit", "exception"]
)
def test_an_abnormal_end_keeps_its_exit_status_and_still_exits(
    spawn: Spawn, phase: str, status: int
) -> None:
    """A program that calls ``sys.exit(3)``, or dies of an exception, with jobs running and
    queued: chronos's exit hook cancels them after exit_grace without changing the exit
    status, and adds no error of its own."""
    returncode, before, report, stderr = run_phase(spawn, phase)

    assert returncode == status, stderr
    if phase == "exception":
        assert stderr.count("Traceback") == 1, stderr
        assert "RuntimeError: the program failed" in stderr
        assert "internal_error" not in stderr and "Exception ignored" not in stderr, stderr
    else:
        assert_clean_stderr(stderr)
    assert (before[0]["running"], before[0]["queued"]) == (2, 2)
    assert report["statuses"] == {f"cooperative-{i}": "cancelled" for i in range(4)}
    assert report["pools"][0]["unfinished"][:2] == ["cooperative-2", "cooperative-3"]
    assert 0.45 <= report["exit_seconds"] < 3.5, report["exit_seconds"]


def test_every_forgotten_pool_is_shut_down_at_exit(spawn: Spawn) -> None:
    """Three forgotten pools, each with a hung job and a queued one: every pool's jobs are
    cancelled and counted, and exit stays bounded.  The pools are shut down one after the
    other, so the exit takes up to the sum of their exit_grace (3 x 0.3 s)."""
    returncode, before, report, stderr = run_phase(spawn, "pools")

    assert returncode == 0, stderr
    assert_clean_stderr(stderr)
    assert [(b["running"], b["queued"]) for b in before] == [(1, 1)] * 3
    assert report["statuses"] == {
        **{f"hung-{n}": "cancelled" for n in range(3)},
        **{f"queued-{n}": "cancelled" for n in range(3)},
    }
    assert [pool["unfinished"] for pool in report["pools"]] == [
        [f"queued-{n}", f"hung-{n}"] for n in range(3)
    ]
    assert len(report["hung"]) == 3
    assert 0.25 <= report["exit_seconds"] < 3 * 0.3 + 3, report["exit_seconds"]
