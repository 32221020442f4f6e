"""chronos.worker.Worker: a WorkerPool fed from the claims of a durable queue (SQLite files
on tmp_path).  Threads are ordered with Events and Gates; a state nothing signals (a row in
the store, a counter) is polled with a bound (``wait_until``); heartbeats are paced by a
FakeClock the test advances."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

import chronos
from chronos import JobTimeoutError, RetryPolicy, WorkerPool
from chronos.backends.durable import Finish, FinishKind, FinishResult, HeartbeatReply, JobState
from chronos.backends.sqlite import SQLiteBackend
from chronos.clock import SYSTEM_CLOCK
from chronos.spec import JobSpec
from chronos.tasks import JobFailedError, Queue
from chronos.testing import FakeClock
from chronos.worker import Worker, current_claim
from tests.conftest import Gate, wait_until
from tests.durable.conftest import StoreClock

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("worker_child.py")
#: Upper bound (real seconds) of any one wait on a child process.
CHILD_TIMEOUT = 20.0


class FlakySQLite(SQLiteBackend):
    """A SQLite backend whose heartbeat or finish raise while the test says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_heartbeat = threading.Event()
        self.finish_failures = 0  # how many finish calls still raise
        self.lost_replies = 0  # how many finish calls still write, then raise

    def heartbeat(self, claims: Sequence[tuple[str, int]], lease: float) -> HeartbeatReply:
        if self.fail_heartbeat.is_set():
            raise TimeoutError("the store is unreachable")
        return super().heartbeat(claims, lease)

    def finish(self, finishes: Sequence[Finish]) -> list[FinishResult]:
        if self.finish_failures:
            self.finish_failures -= 1
            raise TimeoutError("the store is unreachable")
        answers = super().finish(finishes)
        if self.lost_replies:
            self.lost_replies -= 1
            raise ConnectionResetError("the reply was lost")
        return answers


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = Queue(f"sqlite:///{tmp_path}/q.db")
    yield q
    q.close()


@pytest.fixture
def store_clock() -> StoreClock:
    return StoreClock()


@pytest.fixture
def clocked_queue(tmp_path: Path, store_clock: StoreClock) -> Iterator[Queue]:
    """A queue whose store runs on ``store_clock`` (a flaky SQLite backend)."""
    q = Queue(f"sqlite:///{tmp_path}/q.db")
    q.backend.close()
    q.backend = FlakySQLite(tmp_path / "q.db", clock=store_clock)
    yield q
    q.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """Starts Workers; stops each at the end (at once) so that no thread outlives a test."""
    started: list[Worker] = []

    def start(queue: Queue, **options: Any) -> Worker:
        worker = Worker(queue, **options).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.terminate()


def counts(queue: Queue) -> dict[JobState, int]:
    return dict(queue.backend.statistics(queue.name).counts)


# -- running jobs ---------------------------------------------------------------------------


def test_jobs_enqueued_before_and_after_start_run_once(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    calls: list[int] = []

    @queue.task(name="square")
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    before = [square.enqueue(i) for i in range(5)]
    worker = start_worker(queue, workers=3, lease=5.0)
    after = [square.enqueue(i) for i in range(5, 10)]
    assert [h.result(timeout=5) for h in before + after] == [i * i for i in range(10)]
    assert sorted(calls) == list(range(10))
    assert all(h.record().attempt == 1 for h in before + after)
    wait_until(lambda: worker.statistics().completed == 10)
    stats = worker.statistics()
    assert (stats.claimed, stats.running, stats.fenced, stats.state) == (10, 0, 0, "running")
    assert stats.claiming


def test_failing_task_is_retried_by_the_store_then_succeeds_or_dies(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    policy = RetryPolicy(max_attempts=3, backoff=0.01, jitter=False)
    tries: list[int] = []

    @queue.task(name="flaky", retry=policy)
    def flaky() -> str:
        tries.append(1)
        if len(tries) <= 2:
            raise ConnectionError(f"try {len(tries)}")
        return "ok"

    @queue.task(name="doomed", retry=policy)
    def doomed() -> None:
        raise ValueError("boom")

    start_worker(queue, workers=2, lease=5.0)
    ok, dead = flaky.enqueue(), doomed.enqueue()
    assert ok.result(timeout=5) == "ok"
    record = ok.record()
    assert (record.state, record.attempt, len(tries)) == (JobState.SUCCEEDED, 3, 3)
    with pytest.raises(JobFailedError, match="ValueError: boom"):
        dead.result(timeout=5)
    record = dead.record()
    assert (record.state, record.attempt, record.error) == (JobState.DEAD, 3, "ValueError: boom")


def test_unknown_task_dies_at_once(queue: Queue, start_worker: Callable[..., Worker]) -> None:
    [handle] = queue.enqueue_specs([JobSpec("nope")])
    worker = start_worker(queue, workers=1, lease=5.0)
    with pytest.raises(JobFailedError, match="unknown task 'nope'"):
        handle.result(timeout=5)
    assert handle.record().state is JobState.DEAD
    wait_until(lambda: worker.statistics().failed == 1)


def test_timeout_fails_with_a_job_timeout_error(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    release = threading.Event()

    @queue.task(name="stuck", timeout=0.05)
    def stuck() -> None:
        release.wait(5)

    start_worker(queue, workers=1, lease=5.0)
    handle = stuck.enqueue()
    try:
        with pytest.raises(JobTimeoutError, match=r"exceeded its 0\.05s timeout"):
            handle.result(timeout=5)
    finally:
        release.set()  # the abandoned thread returns
    record = handle.record()
    assert record.state is JobState.DEAD
    assert record.error is not None and record.error.startswith("JobTimeoutError: ")


def test_result_that_is_not_json_dies_with_a_clear_error(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    @queue.task(name="opaque")
    def opaque() -> object:
        return object()

    start_worker(queue, workers=1, lease=5.0)
    handle = opaque.enqueue()
    with pytest.raises(JobFailedError, match=r"must be JSON-able.*task 'opaque'"):
        handle.result(timeout=5)
    assert handle.record().state is JobState.DEAD


def test_current_claim_gives_the_token_and_attempt(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    @queue.task(name="whoami")
    def whoami() -> list[Any]:
        claim = current_claim()
        assert claim is not None
        return [claim.id, claim.token, claim.attempt, claim.queue]

    start_worker(queue, workers=1, lease=5.0)
    handle = whoami.enqueue()
    job_id, token, attempt, queue_name = handle.result(timeout=5)
    record = handle.record()
    assert (job_id, token, attempt, queue_name) == (handle.id, record.token, 1, queue.name)
    assert current_claim() is None  # not in a job


def test_claims_no_more_than_the_free_slots(
    queue: Queue, start_worker: Callable[..., Worker], gate: Gate
) -> None:
    @queue.task(name="blocked")
    def blocked(i: int) -> int:
        gate.wait()
        return i

    handles = [blocked.enqueue(i) for i in range(10)]
    worker = start_worker(queue, workers=2, lease=5.0)
    assert gate.entered(2)
    assert counts(queue)[JobState.RUNNING] == 2
    assert counts(queue)[JobState.READY] == 8
    assert (worker.statistics().claimed, worker.statistics().running) == (2, 2)
    gate.open()
    assert [h.result(timeout=5) for h in handles] == list(range(10))
    assert worker.statistics().claimed == 10


# -- the drain ------------------------------------------------------------------------------


def test_drain_releases_waiting_jobs_and_lets_running_ones_finish(
    queue: Queue, start_worker: Callable[..., Worker], gate: Gate
) -> None:
    @queue.task(name="slow")
    def slow(i: int) -> int:
        gate.wait()
        return i

    handles = [slow.enqueue(i) for i in range(7)]
    clock = FakeClock()
    with WorkerPool(2) as pool:  # 7 claims, 2 threads: 5 claimed jobs wait in the pool
        worker = start_worker(queue, workers=7, lease=3.0, pool=pool, clock=clock)
        assert gate.entered(2)
        wait_until(lambda: worker.statistics().claimed == 7)
        stopper = threading.Thread(target=worker.stop, kwargs={"grace": 10.0})
        stopper.start()
        wait_until(lambda: counts(queue)[JobState.READY] == 5)  # released while it drains
        assert worker.statistics().state == "draining"
        beats = worker.statistics().heartbeats
        clock.advance(1.0)  # the heartbeats go on through the drain
        wait_until(lambda: worker.statistics().heartbeats == beats + 1)
        gate.open()
        stopper.join(5)
        assert not stopper.is_alive()
    stats = worker.statistics()
    assert (stats.state, stats.completed, stats.released, stats.running) == ("stopped", 2, 5, 0)
    done = [h for h in handles if h.status() is JobState.SUCCEEDED]
    released = [h.record() for h in handles if h.status() is JobState.READY]
    assert len(done) == 2
    assert [(r.attempt, r.lease_until) for r in released] == [(0, None)] * 5  # refunded


def test_drain_releases_jobs_waiting_for_the_rate_limit(
    queue: Queue, start_worker: Callable[..., Worker], gate: Gate
) -> None:
    @queue.task(name="paced")
    def paced(i: int) -> int:
        gate.wait()
        return i

    for i in range(4):
        paced.enqueue(i)
    worker = start_worker(queue, workers=4, lease=5.0, rate=0.001)  # one now, then 1/1000 s
    assert gate.entered(1)
    wait_until(lambda: worker.statistics().claimed == 4)
    gate.open()
    worker.stop(grace=5.0)
    stats = worker.statistics()
    assert (stats.completed, stats.released) == (1, 3)
    assert counts(queue)[JobState.READY] == 3
    assert counts(queue)[JobState.SUCCEEDED] == 1


def test_a_running_job_cut_short_is_left_to_its_lease(
    queue: Queue, start_worker: Callable[..., Worker], gate: Gate
) -> None:
    @queue.task(name="endless")
    def endless() -> None:
        gate.wait()

    handle = endless.enqueue()
    worker = start_worker(queue, workers=1, lease=5.0)
    assert gate.entered(1)
    worker.stop(grace=0.05)
    stats = worker.statistics()
    assert (stats.state, stats.abandoned, stats.released, stats.failed) == ("stopped", 1, 0, 0)
    record = handle.record()
    assert (record.state, record.attempt) == (JobState.RUNNING, 1)  # until its lease ends
    worker.stop()  # idempotent


# -- leases ---------------------------------------------------------------------------------


def test_a_lost_lease_is_reported_and_its_finish_fenced(
    clocked_queue: Queue,
    store_clock: StoreClock,
    start_worker: Callable[..., Worker],
    gate: Gate,
) -> None:
    queue, backend = clocked_queue, clocked_queue.backend

    @queue.task(name="zombie")
    def zombie() -> str:
        gate.wait()
        return "late"

    handle = zombie.enqueue()
    clock = FakeClock()
    with structlog.testing.capture_logs() as logs:
        worker = start_worker(queue, workers=1, lease=3.0, clock=clock)
        assert gate.entered(1)
        store_clock.advance(10.0)  # the lease expired: another worker recovers and runs it
        assert backend.recover(queue.name).requeued == 1
        [other] = backend.claim(queue.name, 1, 30.0, "other")
        finish = Finish(other.id, other.token, FinishKind.COMPLETE, "other")
        assert backend.finish([finish]) == [FinishResult.APPLIED]
        clock.advance(1.0)  # the next heartbeat finds the claim lost
        wait_until(lambda: worker.statistics().lost_leases == 1)
        gate.open()
        wait_until(lambda: worker.statistics().fenced == 1)
    assert handle.result(timeout=5) == "other"
    stats = worker.statistics()
    assert (stats.completed, stats.claimed, stats.heartbeats) == (0, 1, 1)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["worker.leases_lost", "worker.finish_fenced"]
    assert warnings[1]["job_id"] == handle.id


def test_a_job_claimed_again_by_the_same_worker_keeps_both_claims_apart(
    clocked_queue: Queue,
    store_clock: StoreClock,
    start_worker: Callable[..., Worker],
    gate: Gate,
) -> None:
    queue, backend = clocked_queue, clocked_queue.backend

    @queue.task(name="twice")
    def twice() -> int:
        claim = current_claim()
        assert claim is not None
        if claim.attempt == 1:
            gate.wait()  # the zombie attempt
        return claim.attempt

    handle = twice.enqueue()
    worker = start_worker(queue, workers=2, lease=3.0, clock=FakeClock())
    assert gate.entered(1)
    store_clock.advance(10.0)
    assert backend.recover(queue.name).requeued == 1  # the worker's free slot claims it again
    assert handle.result(timeout=5) == 2
    wait_until(lambda: worker.statistics().completed == 1)
    assert worker.statistics().lost_leases == 1  # the first claim, known lost at the re-claim
    gate.open()
    wait_until(lambda: worker.statistics().fenced == 1)
    stats = worker.statistics()
    assert (stats.claimed, stats.running, stats.completed) == (2, 0, 1)
    assert handle.record().attempt == 2


def test_the_watchdog_stops_claiming_until_a_heartbeat_succeeds(
    clocked_queue: Queue, start_worker: Callable[..., Worker], gate: Gate
) -> None:
    queue, backend = clocked_queue, clocked_queue.backend
    assert isinstance(backend, FlakySQLite)

    @queue.task(name="held")
    def held(i: int) -> int:
        gate.wait()
        return i

    first = held.enqueue(1)
    clock = FakeClock()
    worker = start_worker(queue, workers=2, lease=3.0, clock=clock)
    assert gate.entered(1)
    backend.fail_heartbeat.set()
    clock.advance(1.0)  # a failed beat, 1 s after the last good one: not yet
    wait_until(lambda: worker.statistics().heartbeat_failures == 1)
    assert worker.statistics().claiming
    clock.advance(1.0)  # 2 s = lease - lease/3 without a good beat: the watchdog trips
    wait_until(lambda: worker.statistics().heartbeat_failures == 2)
    stats = worker.statistics()
    assert (stats.claiming, stats.lost_leases, stats.state) == (False, 1, "running")
    second = held.enqueue(2)
    backend.fail_heartbeat.clear()
    clock.advance(1.0)  # a good beat: claiming again
    wait_until(lambda: worker.statistics().claiming)
    assert gate.entered(2)
    gate.open()
    assert (first.result(timeout=5), second.result(timeout=5)) == (1, 2)


def test_a_cancel_request_releases_a_waiting_job_and_the_store_cancels_it(
    queue: Queue, start_worker: Callable[..., Worker], gate: Gate
) -> None:
    @queue.task(name="queued")
    def queued(i: int) -> int:
        gate.wait()
        return i

    running, waiting = queued.enqueue(1), queued.enqueue(2)
    clock = FakeClock()
    worker = start_worker(queue, workers=2, lease=3.0, rate=0.001, clock=clock)
    assert gate.entered(1)
    wait_until(lambda: worker.statistics().claimed == 2)
    assert waiting.cancel()  # RUNNING in the store: a cancel request
    clock.advance(1.0)  # the heartbeat reports it; the job waits for its token: released
    wait_until(lambda: waiting.status() is JobState.CANCELLED)
    gate.open()
    assert running.result(timeout=5) == 1


def test_store_errors_in_finish_are_retried(
    clocked_queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    queue, backend = clocked_queue, clocked_queue.backend
    assert isinstance(backend, FlakySQLite)
    backend.finish_failures = 2

    @queue.task(name="simple")
    def simple() -> str:
        return "done"

    worker = start_worker(queue, workers=1, lease=5.0)
    assert simple.enqueue().result(timeout=5) == "done"
    wait_until(lambda: worker.statistics().completed == 1)
    stats = worker.statistics()
    assert (stats.store_errors, stats.duplicates, stats.state) == (2, 0, "running")


def test_a_lost_finish_reply_is_replayed_as_a_duplicate(
    clocked_queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    queue, backend = clocked_queue, clocked_queue.backend
    assert isinstance(backend, FlakySQLite)
    backend.lost_replies = 1

    @queue.task(name="simple")
    def simple() -> str:
        return "done"

    worker = start_worker(queue, workers=1, lease=5.0)
    assert simple.enqueue().result(timeout=5) == "done"
    wait_until(lambda: worker.statistics().duplicates == 1)
    stats = worker.statistics()
    assert (stats.store_errors, stats.completed, stats.fenced) == (1, 1, 0)
    assert queue.backend.statistics(queue.name).duplicates == 1


# -- a shared pool, run(), arguments ----------------------------------------------------------


def test_in_a_shared_pool_beside_the_programs_jobs(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    @queue.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    with WorkerPool(4) as pool:
        worker = start_worker(queue, workers=2, lease=5.0, pool=pool)
        own = pool.submit(lambda: "mine")
        handles = [double.enqueue(i) for i in range(6)]
        assert [h.result(timeout=5) for h in handles] == [0, 2, 4, 6, 8, 10]
        assert own.result(timeout=5) == "mine"
        worker.stop()
        assert pool.submit(lambda: "still open").result(timeout=5) == "still open"
        assert pool.statistics().state == "running"


def test_run_returns_0_once_stopped_from_another_thread(queue: Queue) -> None:
    worker = Worker(queue, workers=1, lease=5.0)

    def stop_once_running() -> None:
        wait_until(lambda: worker.statistics().state == "running")
        worker.stop()

    stopper = threading.Thread(target=stop_once_running)
    stopper.start()
    assert worker.run(install_signals=False) == 0
    stopper.join(5)
    assert worker.statistics().state == "stopped"
    with pytest.raises(RuntimeError, match="started once"):
        worker.start()


def test_run_with_signals_needs_the_main_thread(queue: Queue) -> None:
    worker = Worker(queue, workers=1, lease=5.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert len(errors) == 1 and "main thread" in str(errors[0])
    worker.stop()


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"workers": 0}, ValueError, "workers"),
        ({"workers": 1.5}, TypeError, "workers"),
        ({"rate": 0}, ValueError, "rate"),
        ({"lease": float("inf")}, ValueError, "lease"),
        ({"grace": -1}, ValueError, "grace"),
        ({"pool": "pool"}, TypeError, "pool must be a chronos.WorkerPool"),
        ({"owner": ""}, TypeError, "owner"),
        ({"clock": FakeClock}, TypeError, "clock"),
    ],
)
def test_bad_arguments_are_named(
    queue: Queue, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Worker(queue, **options)


def test_queue_must_be_a_queue() -> None:
    with pytest.raises(TypeError, match=r"queue must be a chronos\.tasks\.Queue"):
        Worker("sqlite:///jobs.db")  # type: ignore[arg-type]


# -- real processes ---------------------------------------------------------------------------


class Child:
    """worker_child.py in a child process; its stdout read line by line with a deadline."""

    def __init__(self, path: Path, out: Path, grace: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), str(out), str(grace)],
            stdout=subprocess.PIPE,
            env=env,
        )
        self._pending = b""

    def expect(self, event: str) -> dict[str, Any]:
        """Read lines until the JSON event ``event``; fail on EOF or after CHILD_TIMEOUT."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = SYSTEM_CLOCK.now() + CHILD_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._pending:
                    raw, self._pending = self._pending.split(b"\n", 1)
                    line = json.loads(raw)
                    if line["event"] == event:
                        return dict(line)
                left = deadline - SYSTEM_CLOCK.now()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"no {event} from the child in {CHILD_TIMEOUT} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"the child exited before {event}")
                self._pending += chunk

    def wait(self) -> int:
        """Its exit status, waiting at most CHILD_TIMEOUT."""
        status = self.proc.wait(CHILD_TIMEOUT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait()


@pytest.mark.timeout(60)
def test_two_processes_run_200_jobs_exactly_once(queue: Queue, tmp_path: Path) -> None:
    out = tmp_path / "runs.txt"
    path = tmp_path / "q.db"
    lock = threading.Lock()

    @queue.task(name="record")
    def record(i: int) -> int:
        claim = current_claim()
        assert claim is not None
        with lock, open(out, "a", encoding="utf-8") as file:
            file.write(f"{os.getpid()} {claim.id} {claim.token} {claim.attempt}\n")
        return i

    child = Child(path, out, grace=5.0)
    try:
        child.expect("worker.started")
        worker = Worker(queue, workers=4, lease=5.0).start()
        handles = queue.enqueue_specs([record.spec((i,)) for i in range(200)])
        assert [h.result(timeout=20) for h in handles] == list(range(200))
        worker.stop()
        child.proc.send_signal(signal.SIGTERM)
        child.expect("worker.stopped")
        assert child.wait() == 130
    finally:
        child.kill()
    runs = [line.split() for line in out.read_text().splitlines()]
    assert sorted(run[1] for run in runs) == sorted(h.id for h in handles)  # once each
    assert {run[3] for run in runs} == {"1"}
    assert counts(queue)[JobState.SUCCEEDED] == 200
    stats = queue.backend.statistics(queue.name)
    assert (stats.applied, stats.fenced, stats.duplicates) == (200, 0, 0)


@pytest.mark.timeout(60)
def test_a_second_sigterm_stops_the_child_at_once(queue: Queue, tmp_path: Path) -> None:
    child = Child(tmp_path / "q.db", tmp_path / "runs.txt", grace=30.0)
    try:
        child.expect("worker.started")
        [hang] = queue.enqueue_specs([JobSpec("hang")])
        wait_until(lambda: hang.status() is JobState.RUNNING, timeout=CHILD_TIMEOUT)
        child.proc.send_signal(signal.SIGTERM)
        child.expect("worker.stopping")  # draining: the job may run for 30 s more
        started = SYSTEM_CLOCK.now()
        child.proc.send_signal(signal.SIGTERM)
        stopped = child.expect("worker.stopped")
        assert child.wait() == 130
        assert SYSTEM_CLOCK.now() - started < 10.0
    finally:
        child.kill()
    assert (stopped["abandoned"], stopped["released"]) == (1, 0)
    record = hang.record()
    assert (record.state, record.attempt) == (JobState.RUNNING, 1)  # left to its lease


def test_a_cancel_request_stops_a_cooperative_running_job(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    started, stopped = threading.Event(), threading.Event()

    @queue.task(name="patient")
    def patient() -> str:
        started.set()
        if chronos.current_job().wait(30):  # True: told to stop
            stopped.set()
            chronos.current_job().check()  # raises JobCancelledError
        return "ran to the end"

    handle = patient.enqueue()
    clock = FakeClock()
    start_worker(queue, workers=1, lease=3.0, clock=clock)
    assert started.wait(5)
    assert handle.cancel()  # RUNNING in the store: a cancel request
    clock.advance(1.0)  # the heartbeat reports it: the running attempt is told to stop
    assert stopped.wait(5)
    wait_until(lambda: handle.status() is JobState.CANCELLED)


def test_request_stop_tells_only_a_running_attempt() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def job() -> None:
        started.set()
        assert release.wait(5)
        seen.append(chronos.current_job().cancelled)

    with WorkerPool(1) as pool:
        waiting = chronos.Job(abs, (-1,))
        assert not waiting.request_stop()  # never submitted
        future = pool.submit(job)
        assert started.wait(5)
        assert future.job.request_stop()
        release.set()
        future.result(timeout=5)  # it looked only after returning from its wait: it ran on
        assert not future.job.request_stop()  # finished
    assert seen == [True]


def test_finished_jobs_are_purged_after_their_result_ttl(
    queue: Queue, start_worker: Callable[..., Worker]
) -> None:
    @queue.task(name="quick")
    def quick(i: int) -> int:
        return i

    clock = FakeClock()
    handle = quick.enqueue(7)
    start_worker(queue, workers=1, lease=3.0, clock=clock, result_ttl=0.0)
    assert handle.result(timeout=5) == 7
    clock.advance(60.0)  # the worker purges once a minute: everything finished is older than 0 s
    wait_until(lambda: queue.backend.get(handle.id) is None)
    with pytest.raises(ValueError, match="result_ttl"):
        Worker(queue, result_ttl=-1.0)
