"""GracefulShutdown against real signals, in a child process.

Each test runs ``SIGNAL_SCRIPT`` with ``sys.executable`` and talks to it through its stdout:
the child prints ``READY`` once its jobs are in a known state, the test sends signals, and
the child ends with chronos's final report (:func:`chronos.cli.report.summarize`), then a JSON
line with what it saw, and exits with the report's exit status.  Nothing waits by sleeping:
every wait is bounded and ends on a line from the child (or on its exit).

The child's jobs: 40 submitted to a Dispatcher limited to 8 back to back, then one every
10 s, feeding a pool of 4 workers.  At ``READY`` four jobs run, four wait in the pool's queue
and 32 wait in the dispatcher (its next token is 10 s away), whatever the machine's speed.
How the running jobs behave is the child's first argument:

- ``finish``: they block until the child has seen every waiting job cancelled, then return;
- ``cooperative``: they wait on their :meth:`chronos.JobContext.wait`, so they return as
  soon as their attempt is cancelled;
- ``hang``: they block for 60 s, ignoring cancellation (a hung job).

The tests at the end run in this process (pytest runs tests on the main thread): handlers
installed and restored, and the error when entered from another thread.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chronos import GracefulShutdown, WorkerPool
from tests.conftest import Gate
from tests.reliability.child import SETTLE_SOURCE, Child, Spawn, assert_clean_stderr

SIGNAL_SCRIPT = (
    r'''
import concurrent.futures
import json
import signal
import sys
import threading
import time

import chronos
from chronos import Dispatcher, GracefulShutdown, Job, JobStatus, WorkerPool
from chronos.cli.report import summarize

BEGAN = time.monotonic()
# Behave as a foreground program even if the test runs as a background job (whose children
# start with SIGINT ignored), so that restoring the handlers means restoring this one.
signal.signal(signal.SIGINT, signal.default_int_handler)
MODE = sys.argv[1]
GRACE = float(sys.argv[2])
BOUND = 20.0  # the longest the child waits for anything; the test's own bound is the same


class WatchedClock:
    """The system clock; records when the dispatcher starts waiting for a token (> 1 s)."""

    def __init__(self):
        self.throttled = threading.Event()

    def now(self):
        return chronos.SYSTEM_CLOCK.now()

    def wait_until(self, wakeup, deadline):
        if deadline is not None and deadline - self.now() > 1.0:
            self.throttled.set()
        return chronos.SYSTEM_CLOCK.wait_until(wakeup, deadline)


cond = threading.Condition()
started = []  # names of the jobs that started, in order
hung = set()  # names of the threads stuck in a hung job
release = threading.Event()
never = threading.Event()


def body():
    ctx = chronos.current_job()
    with cond:
        started.append(ctx.name)
        if MODE == "hang":
            hung.add(threading.current_thread().name)
        cond.notify_all()
    if MODE == "finish":
        release.wait(BOUND)
    elif MODE == "cooperative":
        ctx.wait(BOUND)
    else:
        never.wait(60)
    return ctx.name


'''
    + SETTLE_SOURCE
    + r"""

clock = WatchedClock()
pool = WorkerPool(4, thread_name_prefix="worker", exit_grace=0.5)
dispatcher = Dispatcher(pool, rate=0.1, burst=8, clock=clock, name="dispatcher")
with GracefulShutdown(pool, dispatcher, grace=GRACE) as stop:
    installed = signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    dispatcher.start()
    futures = [dispatcher.submit(Job(body, name=f"job-{i}")) for i in range(40)]
    dispatcher.close()
    with cond:
        assert cond.wait_for(lambda: len(started) == 4, BOUND), started
    assert clock.throttled.wait(BOUND)  # jobs 0-7 are in the pool, the rest in the dispatcher
    print("READY", flush=True)
    assert stop.requested.wait(BOUND), "no signal came"
    print("INTERRUPTED", flush=True)
    if MODE == "finish":
        waiting = [f for f in futures if f.job.name not in started]
        _, not_done = concurrent.futures.wait(waiting, timeout=BOUND)
        assert not not_done, f"{len(not_done)} waiting jobs were not cancelled"
        release.set()
    dispatcher.join(BOUND)

threads = settle(hung, 5.0)
run = summarize(
    pool,
    futures,
    wall_time=time.monotonic() - BEGAN,
    dispatcher=dispatcher,
    interrupted=stop.interrupted,
    forced=stop.forced.is_set(),
)
print(run.format(), flush=True)
snapshot = pool.stats.snapshot()
report = {
    "run": run.as_dict(),
    "stats": snapshot.as_dict(),
    "in_flight": snapshot.in_flight,
    "finished": snapshot.finished,
    "statuses": {f.job.name: f.job.status.value for f in futures},
    "started": started,
    "unfinished": [job.name for job in pool.unfinished_jobs()],
    "leftovers": [job.name for job in dispatcher.leftover_jobs()],
    "signals": stop.signals_received,
    "installed": installed,
    "sigint_restored": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
    "sigterm_restored": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
    "threads": threads,
    "hung": sorted(hung),
}
print(json.dumps(report), flush=True)
sys.exit(run.exit_status)
"""
)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(*args)`` runs SIGNAL_SCRIPT; every child still running at teardown is killed."""
    script = tmp_path / "child.py"
    script.write_text(SIGNAL_SCRIPT)
    children: list[Child] = []

    def start(*args: str) -> Child:
        child = Child(script, *args)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.proc.returncode is None:
            child.kill()


def report_of(stdout: str) -> dict[str, Any]:
    """The JSON report: the child's last stdout line."""
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return report


def assert_books_balance(report: dict[str, Any]) -> None:
    """Every job reached a terminal state and was counted once."""
    stats = report["stats"]
    assert stats["submitted"] == 40
    assert report["in_flight"] == 0
    assert report["finished"] == stats["submitted"]
    assert stats["running"] == stats["queued"] == stats["pending"] == 0
    assert stats["waiting_to_retry"] == 0
    assert sorted(report["statuses"].values()) == sorted(
        ["succeeded"] * stats["succeeded"] + ["cancelled"] * stats["cancelled"]
    )


def assert_cancel_order(unfinished: list[str]) -> None:
    """The pool listed its queued jobs (cancelled first, in order), then its running ones."""
    assert unfinished[:4] == WAITING_IN_POOL
    assert sorted(unfinished[4:]) == FIRST_FOUR


def assert_clean_interrupted_exit(
    returncode: int, stdout: str, stderr: str, *, forced: bool
) -> dict[str, Any]:
    """The child exited on its own, with status 130 (interrupted), after printing the final
    report, which says how it was interrupted and lists every job that did not succeed; its
    books balance and its signal handlers were restored.  Returns the JSON report."""
    assert returncode == 130, stderr
    assert_clean_stderr(stderr)
    report = report_of(stdout)
    assert_books_balance(report)
    run, stats = report["run"], report["stats"]
    assert run["exit_status"] == 130
    assert run["interrupted"] is True
    assert run["forced"] is forced
    counts = ("submitted", "succeeded", "failed", "timed_out", "cancelled")
    assert {k: run["stats"][k] for k in counts} == {k: stats[k] for k in counts}
    assert sorted(job["name"] for job in run["unsuccessful"]) == sorted(
        name for name, status in report["statuses"].items() if status != "succeeded"
    )
    # The same report, as text, before the JSON line.
    assert "=== FINAL REPORT ===" in stdout
    assert (
        f"40 submitted: {stats['succeeded']} succeeded, 0 failed, 0 timed out, "
        f"{stats['cancelled']} cancelled\n" in stdout
    )
    if forced:
        assert "yes, twice: running jobs were cancelled at once" in stdout
    else:
        assert "yes: waiting jobs cancelled, running ones given the grace" in stdout
    assert report["sigint_restored"]
    assert report["sigterm_restored"]
    return report


WAITING_IN_POOL = [f"job-{i}" for i in range(4, 8)]
WAITING_IN_DISPATCHER = [f"job-{i}" for i in range(8, 40)]
FIRST_FOUR = [f"job-{i}" for i in range(4)]
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("signum", SIGNALS)
def test_first_signal_lets_running_jobs_finish_and_cancels_the_waiting_ones(
    spawn: Spawn, signum: signal.Signals
) -> None:
    """SIGINT and SIGTERM alike: waiting jobs are cancelled and handed back, running ones
    finish within the grace, and the child exits 130 with its report."""
    child = spawn("finish", "10")
    child.expect("READY")
    child.proc.send_signal(signum)
    returncode, stdout, stderr = child.finish()

    report = assert_clean_interrupted_exit(returncode, stdout, stderr, forced=False)
    assert report["signals"] == [signum]
    # The four running jobs finished well within their grace; nothing else ever started.
    assert sorted(report["started"]) == FIRST_FOUR
    assert report["stats"]["succeeded"] == 4
    assert report["stats"]["cancelled"] == 36
    assert report["stats"]["abandoned_threads_total"] == 0
    # The dispatcher cancelled and listed what it still held, the pool what it had queued.
    assert report["leftovers"] == WAITING_IN_DISPATCHER
    assert report["unfinished"] == WAITING_IN_POOL
    assert report["installed"]
    assert report["threads"] == []


@pytest.mark.parametrize("mode", ["cooperative", "hang"])
def test_running_jobs_are_cancelled_when_the_grace_period_ends(spawn: Spawn, mode: str) -> None:
    """After one signal, jobs still running when the grace ends are cancelled and their
    threads abandoned: a cooperative job returns at once, a hung one is left behind, and
    either way the child exits soon after the grace (not after the jobs' 20 or 60 s)."""
    child = spawn(mode, "0.3")
    child.expect("READY")
    signalled = time.monotonic()
    child.proc.send_signal(signal.SIGINT)
    returncode, stdout, stderr = child.finish()
    elapsed = time.monotonic() - signalled

    assert elapsed < 10, elapsed
    report = assert_clean_interrupted_exit(returncode, stdout, stderr, forced=False)
    assert report["stats"]["cancelled"] == 40
    assert_cancel_order(report["unfinished"])
    assert report["leftovers"] == WAITING_IN_DISPATCHER
    assert report["stats"]["abandoned_threads_total"] == 4
    if mode == "cooperative":  # their threads returned from ctx.wait() when cancelled
        assert report["stats"]["abandoned_threads"] == 0
        assert report["threads"] == []
    else:  # the hung threads are still stuck, and the only ones left; exit leaves them
        assert report["stats"]["abandoned_threads"] == 4
        assert len(report["hung"]) == 4
        assert report["threads"] == report["hung"]


@pytest.mark.parametrize(
    "signals",
    [
        pytest.param((signal.SIGINT, signal.SIGINT), id="SIGINT-SIGINT"),
        pytest.param((signal.SIGTERM, signal.SIGTERM), id="SIGTERM-SIGTERM"),
        pytest.param((signal.SIGTERM, signal.SIGINT), id="SIGTERM-SIGINT"),
    ],
)
def test_second_signal_cancels_hung_jobs_at_once_and_exits_without_them(
    spawn: Spawn, signals: tuple[signal.Signals, signal.Signals]
) -> None:
    """A second signal (of either kind) does not wait for the grace: hung jobs are
    cancelled at once, and the child exits 130 with a report that says "twice"."""
    child = spawn("hang", "30")  # a grace that would outlast the test
    child.expect("READY")
    child.proc.send_signal(signals[0])
    child.expect("INTERRUPTED")  # the first signal was handled: a second one is not merged
    forced_at = time.monotonic()
    child.proc.send_signal(signals[1])
    returncode, stdout, stderr = child.finish()
    elapsed = time.monotonic() - forced_at

    # The jobs would hang for 60 s and the grace was 30 s: exit came long before either.
    assert elapsed < 10, elapsed
    report = assert_clean_interrupted_exit(returncode, stdout, stderr, forced=True)
    assert report["signals"] == list(signals)
    assert report["stats"]["cancelled"] == 40
    assert_cancel_order(report["unfinished"])
    assert report["leftovers"] == WAITING_IN_DISPATCHER
    # The four hung threads are counted as abandoned, and they are the only ones left.
    assert report["stats"]["abandoned_threads"] == 4
    assert report["stats"]["abandoned_threads_total"] == 4
    assert len(report["hung"]) == 4
    assert report["threads"] == report["hung"]


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_burst_of_signals_shuts_down_cleanly(spawn: Spawn, signum: signal.Signals) -> None:
    """Five signals back to back: one shutdown, no error from the extra ones, exit 130."""
    child = spawn("cooperative", "0.3")
    child.expect("READY")
    for _ in range(5):
        child.proc.send_signal(signum)
    returncode, stdout, stderr = child.finish()

    report = report_of(stdout)
    # The kernel may merge signals that arrive before the handler runs: two or more that
    # were told apart force the shutdown.
    assert 1 <= len(report["signals"]) <= 5
    assert set(report["signals"]) == {signum}
    assert_clean_interrupted_exit(returncode, stdout, stderr, forced=len(report["signals"]) >= 2)
    assert report["stats"]["cancelled"] == 40
    assert_cancel_order(report["unfinished"])
    assert report["leftovers"] == WAITING_IN_DISPATCHER
    assert report["threads"] == []


# -- in this process: pytest runs tests on the main thread ----------------------------------


def test_handlers_are_installed_inside_the_block_and_restored_after() -> None:
    """Inside the block, SIGINT and SIGTERM go to GracefulShutdown; after it, to whatever
    handled them before (a Python function, SIG_DFL)."""

    def previous(signum: int, frame: object) -> None:  # pragma: no cover - never called
        raise AssertionError("not expected to run")

    old_int = signal.signal(signal.SIGINT, previous)
    try:
        with WorkerPool(1) as pool, GracefulShutdown(pool, grace=0) as stop:
            installed = signal.getsignal(signal.SIGINT)
            assert installed not in (previous, signal.default_int_handler)
            assert callable(installed)
            assert signal.getsignal(signal.SIGTERM) == installed
        assert signal.getsignal(signal.SIGINT) is previous
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert not stop.interrupted
        assert stop.signals_received == []
    finally:
        signal.signal(signal.SIGINT, old_int)


@pytest.mark.parametrize("count", [1, 2], ids=["one-signal", "two-signals"])
def test_previous_handlers_are_back_in_force_after_a_handled_signal(count: int, gate: Gate) -> None:
    """After a block that handled one signal (graceful shutdown) or two (forced), the
    handlers from before are not only what ``getsignal`` says but what the next signal
    runs: SIGTERM a Python function, SIGINT the default KeyboardInterrupt."""
    seen: list[int] = []

    def previous(signum: int, frame: object) -> None:
        seen.append(signum)

    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, previous)
    try:
        with WorkerPool(1, thread_name_prefix="in-force") as pool:
            running = pool.submit(gate.wait)
            assert gate.entered(1)
            with GracefulShutdown(pool, grace=0.1) as stop:
                for _ in range(count):
                    signal.raise_signal(signal.SIGTERM)  # its handler runs before the next
            assert stop.signals_received == [signal.SIGTERM] * count
            assert stop.forced.is_set() is (count == 2)
            assert running.cancelled()  # the grace ran out, or the second signal cut it
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert seen == []
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert [t.name for t in threading.enumerate() if t.name == "in-force_signals"] == []
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_handlers_are_restored_when_the_block_raises() -> None:
    """An exception leaving the block restores the handler too."""
    before = signal.getsignal(signal.SIGINT)
    with (
        WorkerPool(1) as pool,
        pytest.raises(ZeroDivisionError, match="division by zero"),
        GracefulShutdown(pool, signals=(signal.SIGINT,)),
    ):
        _ = 1 / 0
    assert signal.getsignal(signal.SIGINT) is before


def test_a_failed_enter_restores_the_handlers_and_stops_its_watcher() -> None:
    """If installing one handler fails, those already installed are put back and the
    watcher thread stops."""
    before = signal.getsignal(signal.SIGINT)
    with WorkerPool(1, thread_name_prefix="failed-enter") as pool:
        stop = GracefulShutdown(pool, signals=(signal.SIGINT,))
        # The constructor refuses SIGKILL; slip it in past the check to make the install fail.
        stop._signals = (signal.SIGINT, signal.SIGKILL)
        try:
            with pytest.raises(OSError, match="Invalid argument"):
                stop.__enter__()  # SIGKILL cannot be caught: the second install fails
            assert signal.getsignal(signal.SIGINT) is before
            watchers = [t.name for t in threading.enumerate() if t.name == "failed-enter_signals"]
            assert watchers == []
        finally:  # undo what a failed __enter__ left behind, so later tests are not affected
            stop.__exit__(None, None, None)
            signal.signal(signal.SIGINT, before)


def test_entering_from_another_thread_raises() -> None:
    """Entering the block off the main thread raises a RuntimeError that says why, and
    changes nothing: no handler installed, no watcher thread, the pool untouched."""
    errors: list[BaseException] = []
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with WorkerPool(1, thread_name_prefix="off-main") as pool:
        stop = GracefulShutdown(pool)

        def enter() -> None:
            try:
                with stop:
                    raise AssertionError("the block must not run")  # pragma: no cover
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=enter, name="not-main")
        thread.start()
        thread.join(5)
        assert not thread.is_alive()
        assert [t.name for t in threading.enumerate() if t.name == "off-main_signals"] == []
        assert pool.submit(abs, -1).result(timeout=5) == 1
    assert len(errors) == 1
    with pytest.raises(RuntimeError, match="must be entered from the main thread"):
        raise errors[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert not stop.interrupted
