"""Shutdown in every phase: whatever the pool and its dispatcher are doing, no job is lost.

A matrix of the phases a pool can be in when it is told to stop, times the ways to stop it.
Each phase is built deterministically: a :class:`~tests.conftest.Gate` holds jobs inside
their attempt, a :class:`~chronos.testing.FakeClock` holds retries in their backoff and a
dispatcher behind its rate limit, and every wait for a state is bounded.

Phases:

- ``generator``: a rate-limited Dispatcher feeds the pool from a generator of 12 jobs: two
  run, one waits in the pool's queue, one waits in the dispatcher for its token, eight are
  still in the generator.
- ``generator_blocked``: one job runs; the dispatcher thread is inside the generator's
  ``next()``, which waits for its source (a generator reading from something slow).
- ``backoff``: six jobs failed their first attempt and wait 10 s (of the FakeClock) for a
  retry, three submitted to the pool and three through a Dispatcher.
- ``hung``: both workers are held by jobs that ignore cancellation; five jobs wait in the
  pool's queue behind them (two of them dispatched by a Dispatcher).
- ``queue_full``: one hung worker, the pool's queue full (bound 2), the dispatcher thread
  blocked pushing a job into it with two more waiting behind, and a user thread blocked in
  ``submit_job``.

Ways to stop:

- ``wait``: ``shutdown()``, graceful: it waits while the test lets every job finish;
- ``grace``: ``shutdown(grace=0.2)``: what is unfinished after 0.2 s is cancelled;
- ``cancel_futures``: ``shutdown(cancel_futures=True)``: waiting jobs are cancelled at once,
  running ones finish;
- ``terminate``: ``terminate()``: everything unfinished is cancelled at once;
- ``dispatcher_stop``: ``Dispatcher.stop()``: the jobs it holds are cancelled and returned,
  jobs in the pool run on (then the pool shuts down gracefully);
- ``dispatcher_close``: ``Dispatcher.close()`` and ``join()``: it dispatches everything it
  holds, its generator included (then the pool shuts down).

Every case checks, through :func:`check_books`: the stop took a bounded time; every job
submitted reached exactly one terminal state (its done-callback ran once, one terminal
event was logged) and the one the mode calls for; the stats add up; each Future agrees with
its job; every job cancelled or never submitted was returned to the caller
(``pool.unfinished_jobs()`` or ``dispatcher.leftover_jobs()``, exactly once); items the
dispatcher never pulled are still in the caller's generator; no thread outlives the test.

A last test forces one interleaving the matrix only meets by chance on a loaded machine: a
worker started while the pool shuts down, which the shutdown must join too.

Defects this matrix found, now fixed: the pool's shutdown joined a dispatcher stuck in its
generator's ``next()`` for 5 s (grace and terminate overran their bound; it now waits
``DISPATCHER_JOIN_TIMEOUT``, 0.1 s); ``Dispatcher.stop()`` let the item its thread was
pulling into the pool; a worker started by a submit woken at shutdown was not joined.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import pytest
from structlog.testing import capture_logs

import chronos
from chronos import AttemptOutcome, Dispatcher, Job, JobStatus, RetryPolicy, WorkerPool
from chronos.pool import core_of
from chronos.testing import FakeClock
from tests.conftest import Gate, wait_until

T = TypeVar("T")
LogList = list[MutableMapping[str, Any]]
Mode = Literal[
    "wait", "grace", "cancel_futures", "terminate", "dispatcher_stop", "dispatcher_close"
]

#: The grace period of the ``grace`` mode (real seconds).
GRACE = 0.2
#: The longest (real seconds) any stop may take beyond what it waits for on purpose.  A
#: healthy one takes milliseconds; this leaves room for a slow, shared machine.
BOUND = 3.0
#: How many jobs the generators of the generator phases hold.
GENERATED = 12
#: The events that mark a job's terminal state, one per job.
TERMINAL_EVENTS = frozenset({"job.succeeded", "job.gave_up", "job.cancelled"})


# -- what a test made, and what became of it ------------------------------------------------


class Books:
    """Every job a test made, and how many times each one's Future called back.

    Thread-safety: :meth:`job` may be called from any thread (the dispatcher's pulls from
    the generators); the callbacks run on whichever thread resolves a Future.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the two fields below
        self.jobs: list[Job[Any]] = []
        self.callbacks: Counter[int] = Counter()
        #: What each job runs (a finished job lets go of its callable).
        self.bodies: dict[int, Callable[..., Any]] = {}

    def job(self, fn: Callable[..., T], name: str) -> Job[T]:
        """A new job running ``fn(name)``, registered here with a counting done-callback."""
        job = Job(fn, (name,), name=name)
        job_id = job.id
        self.bodies[job_id] = fn

        def called(_: object) -> None:
            with self._lock:
                self.callbacks[job_id] += 1

        job.future.add_done_callback(called)
        with self._lock:
            self.jobs.append(job)
        return job

    def snapshot(self) -> tuple[list[Job[Any]], Counter[int]]:
        with self._lock:
            return list(self.jobs), Counter(self.callbacks)


class Source:
    """A generator of ``GENERATED`` gate-held jobs that records what it yielded.

    With ``block_at``, it waits for :attr:`feed` before making that item, as a generator
    reading from a slow source would; :attr:`blocked` tells when it is waiting.
    """

    def __init__(self, books: Books, gate: Gate, block_at: int | None = None) -> None:
        self.yielded: list[Job[Any]] = []  # appended by whichever thread advances it
        self.blocked = threading.Event()
        self.feed = threading.Event()
        self._books = books
        self._gate = gate
        self._block_at = block_at
        self.iterator = self._items()

    def _items(self) -> Iterator[Job[Any]]:
        for i in range(GENERATED):
            if i == self._block_at:
                self.blocked.set()
                self.feed.wait(30)
            job = self._books.job(self._gate.wait, f"gen-{i}")
            self.yielded.append(job)
            yield job


def flaky(name: str) -> str:
    """Fails its first attempt, succeeds on the next."""
    if chronos.current_job().attempt_number == 1:
        raise OSError(f"{name}: first attempt fails")
    return name


@dataclass
class Scene:
    """A pool (and its dispatcher) in a known phase, about to be stopped.

    Attributes:
        running: the jobs inside an attempt (held by the gate) when the stop begins.
        held: the jobs the dispatcher holds, not yet in the pool's queue, in its order.
        dispatcher_backoff: jobs of the dispatcher waiting for a retry.
        release: lets every held job finish (opens the gate, advances the clock, feeds the
            generator); idempotent.
        unblock: lets a blocked generator yield its next item (a no-op otherwise).
    """

    pool: WorkerPool
    dispatcher: Dispatcher
    books: Books
    logs: LogList
    release: Callable[[], None]
    running: list[Job[Any]] = field(default_factory=list)
    held: list[Job[Any]] = field(default_factory=list)
    dispatcher_backoff: list[Job[Any]] = field(default_factory=list)
    source: Source | None = None
    unblock: Callable[[], None] = lambda: None
    producers: list[threading.Thread] = field(default_factory=list)
    yielded_at_stop: int = 0


# -- the phases ----------------------------------------------------------------------------


def generator_phase(books: Books, logs: LogList, clock: FakeClock, gate: Gate) -> Scene:
    pool = WorkerPool(2, clock=clock, thread_name_prefix="generator")
    dispatcher = Dispatcher(pool, rate=1.0, burst=3, name="generator-dispatcher").start()
    source = Source(books, gate)
    dispatcher.dispatch(source.iterator)
    assert gate.entered(2)
    # Three tokens went at once; the fourth job waits for the next, a FakeClock second away,
    # and the dispatcher's reader has read the rest ahead (fewer than READ_AHEAD).
    wait_until(
        lambda: (
            len(source.yielded) == GENERATED
            and all(job.status is JobStatus.PENDING for job in source.yielded[3:])
            and clock.waiters == 1
        )
    )
    assert [job.status for job in source.yielded[:3]] == [
        JobStatus.RUNNING,
        JobStatus.RUNNING,
        JobStatus.QUEUED,
    ]

    def release() -> None:
        gate.open()
        # Every token the dispatcher may still ask for, until it is done: one period at a
        # time (a token bucket never grants more than its burst at once, however late).
        end = time.monotonic() + BOUND * 5
        while dispatcher.thread.is_alive() and time.monotonic() < end:
            clock.advance(1.0)
            time.sleep(0.002)

    return Scene(
        pool,
        dispatcher,
        books,
        logs,
        release,
        running=source.yielded[:2],
        held=source.yielded[3:],  # the one waiting for its token, the ones read ahead
        source=source,
    )


def generator_blocked_phase(books: Books, logs: LogList, clock: FakeClock, gate: Gate) -> Scene:
    pool = WorkerPool(2, clock=clock, thread_name_prefix="blocked")
    dispatcher = Dispatcher(pool, name="blocked-dispatcher").start()
    source = Source(books, gate, block_at=1)
    dispatcher.dispatch(source.iterator)
    assert gate.entered(1)
    assert source.blocked.wait(5)  # the dispatcher thread waits inside next()

    def release() -> None:
        gate.open()
        source.feed.set()

    return Scene(
        pool,
        dispatcher,
        books,
        logs,
        release,
        running=source.yielded[:1],
        source=source,
        unblock=source.feed.set,
    )


def backoff_phase(books: Books, logs: LogList, clock: FakeClock, gate: Gate) -> Scene:
    policy = RetryPolicy(max_attempts=3, backoff=10.0, jitter=False)
    pool = WorkerPool(2, clock=clock, retry=policy, thread_name_prefix="backoff")
    dispatcher = Dispatcher(pool, name="backoff-dispatcher").start()
    for i in range(3):
        pool.submit_job(books.job(flaky, f"pool-{i}"))
    dispatched = [books.job(flaky, f"dispatched-{i}") for i in range(3)]
    for job in dispatched:
        dispatcher.submit(job)
    wait_until(lambda: pool.stats.snapshot().waiting_to_retry == 6)
    return Scene(
        pool,
        dispatcher,
        books,
        logs,
        lambda: clock.advance(10.0),  # the retries come due
        dispatcher_backoff=dispatched,
    )


def hung_phase(books: Books, logs: LogList, clock: FakeClock, gate: Gate) -> Scene:
    # A timeout the FakeClock never reaches: the timer thread watches the hung attempts.
    pool = WorkerPool(2, clock=clock, timeout=60.0, thread_name_prefix="hung")
    dispatcher = Dispatcher(pool, name="hung-dispatcher").start()
    running = [books.job(gate.wait, f"hung-{i}") for i in range(2)]
    for job in running:
        pool.submit_job(job)
    assert gate.entered(2)
    for i in range(3):
        pool.submit_job(books.job(gate.wait, f"queued-{i}"))
    for i in range(2):
        dispatcher.submit(books.job(gate.wait, f"dispatched-{i}"))
    wait_until(lambda: pool.stats.snapshot().queued == 5)
    return Scene(pool, dispatcher, books, logs, gate.open, running=running)


def queue_full_phase(books: Books, logs: LogList, clock: FakeClock, gate: Gate) -> Scene:
    pool = WorkerPool(1, clock=clock, queue_size=2, thread_name_prefix="full")
    dispatcher = Dispatcher(pool, name="full-dispatcher").start()
    running = books.job(gate.wait, "running")
    pool.submit_job(running)
    assert gate.entered(1)
    for i in range(2):
        pool.submit_job(books.job(gate.wait, f"queued-{i}"))
    held = [books.job(gate.wait, f"dispatched-{i}") for i in range(3)]
    for job in held:
        dispatcher.submit(job)
    blocked = books.job(gate.wait, "blocked-submit")
    producer = threading.Thread(target=pool.submit_job, args=(blocked,), name="producer")
    producer.start()
    # The dispatcher (with dispatched-0) and the producer both wait for room in the queue.
    wait_until(
        lambda: (
            pool.statistics().backend.waiting_producers == 2 and held[0].status is JobStatus.QUEUED
        )
    )
    assert [job.status for job in held[1:]] == [JobStatus.PENDING] * 2
    return Scene(
        pool,
        dispatcher,
        books,
        logs,
        gate.open,
        running=[running],
        held=held,
        producers=[producer],
    )


Phase = Callable[[Books, LogList, FakeClock, Gate], Scene]
PHASES: dict[str, Phase] = {
    "generator": generator_phase,
    "generator_blocked": generator_blocked_phase,
    "backoff": backoff_phase,
    "hung": hung_phase,
    "queue_full": queue_full_phase,
}


# -- the ways to stop ----------------------------------------------------------------------


class Background(Generic[T]):
    """Calls ``fn`` on its own thread; keeps what it returned and how long it took."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self.elapsed = 0.0
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        began = time.monotonic()
        try:
            self._value = self._fn()
        except BaseException as exc:
            self._error = exc
        self.elapsed = time.monotonic() - began

    def result(self, timeout: float) -> T | None:
        """Wait (bounded) for the call to return; what it returned (or raise what it did)."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} still runs after {timeout} s"
        if self._error is not None:
            raise self._error
        return self._value


def shutdown_began(logs: LogList) -> bool:
    return any(e["event"] == "pool.shutdown" and e.get("phase") == "started" for e in logs[:])


def graceful_wait(scene: Scene) -> float:
    """shutdown() waits for every job, retries included: release them while it waits."""
    shutdown = Background(scene.pool.shutdown, "test-shutdown")
    wait_until(lambda: shutdown_began(scene.logs))
    assert shutdown.thread.is_alive()  # jobs are held: it cannot be done
    began = time.monotonic()
    scene.release()
    shutdown.result(BOUND)
    return time.monotonic() - began


def graceful_with_grace(scene: Scene) -> float:
    began = time.monotonic()
    scene.pool.shutdown(grace=GRACE)
    elapsed = time.monotonic() - began
    assert elapsed >= GRACE - 0.01  # it did give the jobs their grace
    return elapsed - GRACE


def cancel_futures(scene: Scene) -> float:
    """Waiting jobs are cancelled at once; running ones are waited for."""
    began = time.monotonic()
    shutdown = Background(lambda: scene.pool.shutdown(cancel_futures=True), "test-shutdown")
    wait_until(
        lambda: all(
            job.status is JobStatus.CANCELLED
            for job in scene.books.snapshot()[0]
            if job not in scene.running and job.status is not JobStatus.CREATED
        ),
        timeout=BOUND,
    )
    cancelled_in = time.monotonic() - began
    if scene.running:
        assert shutdown.thread.is_alive()  # it waits for the running jobs
    scene.release()
    shutdown.result(BOUND)
    return cancelled_in


def terminate(scene: Scene) -> float:
    began = time.monotonic()
    scene.pool.terminate()
    return time.monotonic() - began


def dispatcher_stop(scene: Scene) -> float:
    """The dispatcher stops at once; then the pool finishes what it had."""
    dispatcher = scene.dispatcher
    dispatched = dispatcher.dispatched  # the dispatcher is idle or blocked: this is final
    stop = Background(dispatcher.stop, "test-stop")
    wait_until(lambda: "stopped" in repr(dispatcher))
    scene.unblock()  # a blocked generator yields its item only now, after stop()
    returned = stop.result(BOUND)
    assert dispatcher.join(BOUND)
    # Nothing was dispatched after stop(); what it held (and an item it was still pulling
    # from a generator) it returned, in its order.
    assert dispatcher.dispatched == dispatched
    late = scene.source.yielded[scene.yielded_at_stop :] if scene.source else []
    assert returned == [*scene.held, *late]
    scene.release()
    began = time.monotonic()
    scene.pool.shutdown()
    # Its jobs in backoff were cancelled when their retry came due, and listed as well.
    assert {job.name for job in dispatcher.leftover_jobs()} == {
        job.name for job in [*scene.held, *late, *scene.dispatcher_backoff]
    }
    return stop.elapsed + time.monotonic() - began


def dispatcher_close(scene: Scene) -> float:
    """The dispatcher dispatches all it holds, generator included, then exits."""
    scene.dispatcher.close()
    began = time.monotonic()
    scene.release()
    assert scene.dispatcher.join(BOUND)
    scene.pool.shutdown()
    return time.monotonic() - began


MODES: dict[Mode, Callable[[Scene], float]] = {
    "wait": graceful_wait,
    "grace": graceful_with_grace,
    "cancel_futures": cancel_futures,
    "terminate": terminate,
    "dispatcher_stop": dispatcher_stop,
    "dispatcher_close": dispatcher_close,
}


def expected_status(scene: Scene, mode: Mode, job: Job[Any]) -> JobStatus:
    """The terminal state ``mode`` gives a job submitted in ``scene`` (docs/shutdown.md)."""
    if mode in ("wait", "dispatcher_close"):
        return JobStatus.SUCCEEDED
    if mode in ("grace", "terminate"):
        return JobStatus.CANCELLED
    if mode == "cancel_futures":
        return JobStatus.SUCCEEDED if job in scene.running else JobStatus.CANCELLED
    assert mode == "dispatcher_stop"
    pulled_late = scene.source is not None and job in scene.source.yielded[scene.yielded_at_stop :]
    from_dispatcher = job in scene.held or job in scene.dispatcher_backoff or pulled_late
    return JobStatus.CANCELLED if from_dispatcher else JobStatus.SUCCEEDED


# -- the checks ----------------------------------------------------------------------------


def check_future(job: Job[Any]) -> None:
    """The job's Future says what the job says."""
    future = job.future
    assert future.done(), job
    if job.status is JobStatus.SUCCEEDED:
        assert not future.cancelled()
        assert future.exception(timeout=0) is None
        assert future.result(timeout=0) == job.name
        assert job.attempts[-1].outcome is AttemptOutcome.SUCCEEDED
    elif job.status is JobStatus.CANCELLED:
        assert future.cancelled(), job
        with pytest.raises(CancelledError):
            future.result(timeout=0)
    else:
        error = future.exception(timeout=0)
        assert error is not None and error is job.last_error, job


def check_attempts(scene: Scene, mode: Mode, job: Job[Any]) -> None:
    """How many attempts the job ran, and how its last one ended."""
    outcomes = [attempt.outcome for attempt in job.attempts]
    if job.status is JobStatus.SUCCEEDED:
        first = [AttemptOutcome.FAILED] if scene.books.bodies[job.id] is flaky else []
        assert outcomes == [*first, AttemptOutcome.SUCCEEDED], job
    elif job in scene.running:  # cut short: cancelled while running, thread abandoned
        assert mode in ("grace", "terminate")
        assert outcomes == [AttemptOutcome.CANCELLED], job
    elif job.fn is flaky:  # cancelled while it waited for its retry
        assert outcomes == [AttemptOutcome.FAILED], job
    else:
        assert outcomes == [], job  # cancelled before it ever ran


def terminal_events(logs: LogList) -> Counter[int]:
    return Counter(e["job_id"] for e in logs[:] if e["event"] in TERMINAL_EVENTS)


def check_books(scene: Scene, mode: Mode) -> None:
    pool, dispatcher = scene.pool, scene.dispatcher
    jobs = scene.books.snapshot()[0]
    submitted = [job for job in jobs if job.status is not JobStatus.CREATED]
    never_submitted = [job for job in jobs if job.status is JobStatus.CREATED]
    # Each submitted job called back once and was logged once as terminal (both come just
    # after the state changes, on the thread that changed it: wait for them, bounded).
    wait_until(
        lambda: (
            all(scene.books.snapshot()[1][job.id] >= 1 for job in submitted)
            and all(terminal_events(scene.logs)[job.id] >= 1 for job in submitted)
        )
    )
    callbacks = scene.books.snapshot()[1]
    assert {job.name: callbacks[job.id] for job in jobs} == {
        job.name: int(job in submitted) for job in jobs
    }
    events = terminal_events(scene.logs)
    assert {job.name: events[job.id] for job in submitted} == {job.name: 1 for job in submitted}
    assert not [e for e in scene.logs[:] if e["event"] == "chronos.internal_error"]

    # Every submitted job is terminal, in the state the mode calls for; the stats agree.
    assert {job.name: job.status for job in submitted} == {
        job.name: expected_status(scene, mode, job) for job in submitted
    }
    s = pool.stats.snapshot()
    assert s.in_flight == 0
    assert s.submitted == s.finished == len(submitted)
    by_status = Counter(job.status for job in submitted)
    assert (s.succeeded, s.failed, s.timed_out, s.cancelled) == (
        by_status[JobStatus.SUCCEEDED],
        by_status[JobStatus.FAILED],
        by_status[JobStatus.TIMED_OUT],
        by_status[JobStatus.CANCELLED],
    )
    assert s.attempts == sum(len(job.attempts) for job in submitted)
    cut_short = len(scene.running) if mode in ("grace", "terminate") else 0
    assert s.abandoned_threads_total == cut_short
    for job in submitted:
        check_future(job)
        check_attempts(scene, mode, job)
    for job in never_submitted:
        assert not job.future.done() and not job.attempts

    # What did not run to the end was handed back, each job once: cancelled jobs by the
    # pool or the dispatcher that cancelled them, never-submitted ones by the dispatcher.
    returned = [*pool.unfinished_jobs(), *dispatcher.leftover_jobs()]
    assert len({job.id for job in returned}) == len(returned), returned
    assert {job.name for job in returned} == {
        job.name for job in jobs if job.status in (JobStatus.CANCELLED, JobStatus.CREATED)
    }
    assert {job.name for job in never_submitted} <= {j.name for j in dispatcher.leftover_jobs()}

    # Items the dispatcher never pulled are still in the caller's generator.
    source = scene.source
    if source is not None:
        pulled = len(source.yielded)
        if mode == "dispatcher_close":
            assert pulled == GENERATED
        else:  # dropped at the stop: at most the item it was pulling then
            assert pulled <= scene.yielded_at_stop + 1
        assert sum(1 for _ in source.iterator) == GENERATED - pulled


# -- the matrix ----------------------------------------------------------------------------


def matrix() -> list[Any]:
    """Every (phase, mode) pair."""
    return [pytest.param(phase, mode, id=f"{phase}-{mode}") for phase in PHASES for mode in MODES]


@pytest.fixture
def logs() -> Iterator[LogList]:
    """Every chronos event of the test (pools bind their logger when they are made)."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def scenes() -> Iterator[list[Scene]]:
    """Scenes made by the test; at teardown they are released and their pools terminated,
    so that a failed test leaves no thread behind either."""
    made: list[Scene] = []
    yield made
    for scene in made:
        scene.release()
        scene.unblock()
        scene.pool.terminate()
        for producer in scene.producers:
            producer.join(BOUND)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("phase", "mode"), matrix())
def test_shutdown_in_every_phase_loses_no_job(
    phase: str,
    mode: Mode,
    logs: LogList,
    scenes: list[Scene],
    clock: FakeClock,
    gate: Gate,
) -> None:
    """Stopping ``mode``-wise a pool in ``phase`` takes a bounded time, leaves every job in
    exactly one terminal state (the one docs/shutdown.md promises), counted once in the
    stats and resolved once in its Future, and hands every job that did not run to the end
    back to the caller."""
    scene = PHASES[phase](Books(), logs, clock, gate)
    scenes.append(scene)
    scene.yielded_at_stop = len(scene.source.yielded) if scene.source else 0

    overrun = MODES[mode](scene)

    assert overrun < BOUND, f"{mode} took {overrun:.2f} s longer than it should"
    for producer in scene.producers:  # a submit blocked on the full queue returned
        producer.join(BOUND)
        assert not producer.is_alive()
    scene.unblock()  # a dispatcher inside a blocked generator's next() can only leave it so
    assert scene.dispatcher.join(BOUND)
    # The threads of attempts cut short are left behind, hung in the gate until released.
    # (Counted by the stats, not by pool.threads(): under load a worker the pool started
    # during its shutdown may still be exiting, see test_shutdown_joins_every_worker_it_started.)
    cut_short = len(scene.running) if mode in ("grace", "terminate") else 0
    assert scene.pool.stats.snapshot().abandoned_threads == cut_short
    scene.release()
    wait_until(lambda: not scene.pool.threads())
    check_books(scene, mode)


@pytest.mark.timeout(15)
def test_shutdown_joins_every_worker_it_started(gate: Gate) -> None:
    """When terminate() returns, the only threads of the pool still alive are the ones it
    abandoned in hung attempts: every worker it started, even during the shutdown, was
    joined.  The interleaving the matrix above hits now and then on a loaded machine is
    forced here: the user thread blocked in ``submit`` on the full queue, woken when
    shutdown cancels its job, gets to start a worker only once shutdown has listed the
    workers to join; that worker's initializer takes a while."""
    shutting_down = threading.Event()

    def initializer() -> None:
        if shutting_down.is_set():
            gate.wait()  # a slow initializer (opening a connection, say)

    pool = WorkerPool(1, queue_size=1, initializer=initializer, thread_name_prefix="late")
    hung = pool.submit(gate.wait)
    assert gate.entered(1)
    pool.submit(abs, -1)  # the queue is full
    shutting_down.set()

    core = core_of(pool)
    spawn = core.threads.ensure_worker
    may_spawn = threading.Event()

    def spawn_when_allowed() -> None:
        if threading.current_thread().name == "producer":
            assert may_spawn.wait(BOUND)
        spawn()

    producer = threading.Thread(target=pool.submit, args=(abs, -2), name="producer")
    core.threads.ensure_worker = spawn_when_allowed  # type: ignore[method-assign]
    producer.start()
    wait_until(lambda: pool.statistics().backend.waiting_producers == 1)  # blocked: full queue

    stop_timer = core.timer.stop

    def workers_listed_then_stop_timer(timeout: float | None = None) -> bool:
        # _stop_threads() joined the workers it listed and now stops the timer: let the
        # producer, woken since its job was cancelled, go on.
        may_spawn.set()
        producer.join(BOUND)
        return stop_timer(timeout)

    core.timer.stop = workers_listed_then_stop_timer  # type: ignore[method-assign]
    try:
        pool.terminate()
        assert hung.cancelled()
        assert pool.stats.snapshot().abandoned_threads == 1
        assert [t.name for t in pool.threads()] == ["late_0"]  # the hung attempt's thread
    finally:
        may_spawn.set()
        gate.open()
        producer.join(BOUND)
    wait_until(lambda: not pool.threads())
