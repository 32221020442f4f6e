"""Case 11: durable queues on SQLite (:class:`chronos.Queue`, :class:`chronos.worker.Worker`)
against Huey's SQLite backend (``huey.SqliteHuey``), measured in the same run.

Every measurement runs its workers in child processes (``python -m benchmarks.durable
--child chronos|huey``), each on a fresh store file in a temporary directory on the local
disk, and is interleaved with Huey's (run 1: chronos then Huey, run 2: Huey then chronos,
...).  A child prints ``ready`` once its worker threads run, and is stopped with SIGINT
(both drain on it) once the run is measured.

- *chronos worker*: ``Worker(queue, workers=4, lease=...)``, started, then ``run()``: what
  ``python -m chronos worker MODULE:queue --workers 4`` runs.
- *Huey worker*: ``huey.consumer.Consumer(huey, workers=4, worker_type="thread")`` with its
  defaults (idle polling from 0.1 s, backing off x1.15 up to 10 s), run as ``huey_consumer``
  runs it.  Its storage is Huey's ``SqliteStorage`` in WAL mode (its default) with
  ``synchronous=NORMAL`` like chronos's: Huey's own default leaves SQLite's ``FULL``,
  which makes every commit wait for an fsync, and would compare durability settings, not
  queues.

The four measurements (see :func:`case11`):

1. *End to end*: a worker process idles; this process enqueues N no-op jobs (chronos: in
   batches of 1,000 through ``queue.enqueue_specs([task.spec(), ...])``; Huey has no batch
   enqueue, so one ``task()`` call, one transaction, per job) and waits until every job is
   done.  Jobs/s = N / (the last job's end - the first enqueue).  The end, chronos: the
   largest ``finished_at`` in the store, the time its SUCCEEDED was written; Huey, which
   keeps no such time: the largest ``time.time()`` the jobs returned as results, written by
   Huey right after (a few microseconds in Huey's favour).  ``time.time()`` is the store's
   clock, and the host's, in every process.
2. *Enqueue*: N jobs in batches of 1,000, with no worker: ``task.spec()`` plus
   ``enqueue_specs`` (the user's path), and ``enqueue_specs`` alone on prebuilt specs.
   Huey: N ``task()`` calls.
3. *Pickup*: a worker process idles on an empty queue; this process waits a random gap
   (50-250 ms, seeded: the same gaps for both), reads ``time.time()`` and enqueues one job
   that returns ``time.time()`` as it starts; latency = the job's reading - this one's;
   p50 and p99 (nearest rank: of 50 trials, the largest).
4. *kill -9*: two worker processes (lease 1.5 s for chronos; Huey has no lease) share M jobs
   that sleep 10 ms and then append their number to a side-effect file (one ``O_APPEND``
   write).  Once a third of the jobs are done, one worker gets SIGKILL; measured: the time
   from the kill until the other worker has finished every job (Huey: every job it still
   has: those the killed consumer had taken are gone), the jobs lost (never done), the jobs
   whose side effect happened twice, and (chronos) the jobs run again after their lease
   expired (attempt 2).

Huey is not a chronos dependency: without it the Huey side is skipped ("pip install huey to
compare") and only chronos's absolute targets are judged.

On its own: ``python -m benchmarks.durable [--quick] [--runs N] [--huey-synchronous
NORMAL|FULL|default]`` runs this case; ``python -m benchmarks.durable --profile DIR
[--jobs N]`` runs one chronos end-to-end run with the worker process traced (CPU per thread,
its claim and finish calls, its waits for SQLite's write lock; :class:`StoreTrace`) and
sampled by py-spy (``--gil``), and prints where its time goes.

Thread-safety: single-threaded; the harness calls :func:`case11` from the main thread.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from benchmarks.harness import (
    Metrics,
    Row,
    Settings,
    Stat,
    alternate,
    compare_row,
    format_table,
    paired_ratio,
    percentile,
    text_row,
)
from chronos.backends.durable import DurableBackend, JobState
from chronos.backends.sqlite import SQLiteBackend
from chronos.tasks import Queue, Task
from chronos.worker import Worker, current_claim

__all__ = ["QUICK", "Sizes", "StoreTrace", "case11", "huey_available", "measure", "profile"]

CASE = "11"
ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
BATCH = 1_000
#: The kill -9 workload: each job sleeps this long; the workers' lease.
WORK_SECONDS = 0.010
KILL_LEASE = 1.5
#: The end-to-end and pickup workers' lease (the Worker's default).
LEASE = 30.0
#: Pickup trials wait a random gap in this range (seconds) before enqueueing.
GAP = (0.05, 0.25)
SEED = 11
HUEY_NAME = "bench"
HUEY_MISSING = "pip install huey to compare"
HUEY_LABEL = "Huey SqliteHuey 1x4"
#: Huey's ``synchronous`` here (chronos's): see :class:`HueyApp`.
HUEY_SYNCHRONOUS = "NORMAL"
#: Seconds a child gets to print ``ready``, and to exit once asked.
START_TIMEOUT = STOP_TIMEOUT = 30.0
#: Seconds a run may take to finish its jobs before it is declared stuck.
RUN_TIMEOUT = 300.0
#: Seconds after the kill by which every job must be done (else the rest count as lost).
KILL_TIMEOUT = 60.0
#: Seconds Huey's side of the kill -9 run waits, its queue empty, for results to settle.
SETTLE = 0.5
POLL = 0.05
#: ``--profile``: a wait for the write lock at least this long is SQLite's busy handler
#: sleeping (its first sleep is 1 ms), not a hand-over.
SLOW_BEGIN = 0.001

# Targets of the issue.
E2E_RATE, E2E_RATIO = 5_000.0, 3.0
ENQUEUE_RATE = 50_000.0
PICKUP_P99_MS = 50.0


@dataclass(frozen=True)
class Sizes:
    """How many jobs each measurement uses."""

    jobs: int = 20_000  # end to end, per run and side
    warmup_jobs: int = 2_000  # end to end, the warm-up run
    enqueue_jobs: int = 20_000
    trials: int = 50  # pickups per run
    kill_jobs: int = 600


QUICK = Sizes(jobs=1_000, warmup_jobs=0, enqueue_jobs=5_000, trials=10, kill_jobs=150)


def huey_available() -> bool:
    try:
        importlib.import_module("huey")
    except ImportError:
        return False
    return True


# -- the tasks, as both sides register them ---------------------------------------------------


def _append(out: str, line: str) -> None:
    """One ``O_APPEND`` write: lines from several processes never interleave."""
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _noop() -> None:
    return None


def _stamp() -> float:
    return time.time()


def _work(i: int, out: str) -> float:
    time.sleep(WORK_SECONDS)
    claim = current_claim()  # None under Huey
    attempt = 0 if claim is None else claim.attempt
    _append(out, f"{i} {attempt} {os.getpid()}\n")
    return time.time()


class ChronosApp:
    """A chronos queue on ``path`` with the benchmark's three tasks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queue = Queue(f"sqlite:///{path}")
        self.noop: Task[[], None] = self.queue.task(name="bench.noop")(_noop)
        self.stamp: Task[[], float] = self.queue.task(name="bench.stamp")(_stamp)
        self.work: Task[[int, str], float] = self.queue.task(name="bench.work")(_work)

    def count(self, state: JobState) -> int:
        return self.queue.backend.statistics(self.queue.name).counts[state]

    def read(self, sql: str) -> Any:
        """One value, read straight from the store file (after the timed span)."""
        with _connect(self.path) as conn:
            return conn.execute(sql).fetchone()[0]

    def close(self) -> None:
        self.queue.close()


class HueyApp:
    """A ``huey.SqliteHuey`` on ``path`` with the same tasks.

    ``synchronous``: ``"NORMAL"`` (chronos's setting, the default here), ``"FULL"``, or
    ``"default"`` (Huey's own: it leaves SQLite's default, FULL on this Python).
    """

    def __init__(self, path: Path, synchronous: str = HUEY_SYNCHRONOUS) -> None:
        huey = importlib.import_module("huey")
        storage = importlib.import_module("huey.storage").SqliteStorage
        options: dict[str, Any] = {}
        if synchronous != "default":

            def connect(self: Any) -> Any:
                conn = storage._create_connection(self)
                conn.execute(f"pragma synchronous={synchronous}")
                return conn

            name = f"SqliteStorage{synchronous.title()}"
            options["storage_class"] = type(name, (storage,), {"_create_connection": connect})
        self.path = path
        self.huey: Any = huey.SqliteHuey(HUEY_NAME, filename=str(path), **options)
        self.noop: Any = self.huey.task(name="bench.noop")(_stamp)  # its result: the end
        self.stamp: Any = self.huey.task(name="bench.stamp")(_stamp)
        self.work: Any = self.huey.task(name="bench.work")(_work)

    def results(self) -> int:
        """How many results Huey has stored (one per finished job)."""
        return int(self.huey.storage.result_store_size())

    def waiting(self) -> int:
        return int(self.huey.storage.queue_size())

    def result_times(self) -> list[float]:
        """Every stored result (a ``time.time()`` reading), read after the timed span."""
        with _connect(self.path) as conn:
            rows = conn.execute("SELECT value FROM kv WHERE queue = ?", (HUEY_NAME,)).fetchall()
        return [float(self.huey.serializer.deserialize(bytes(value))) for (value,) in rows]

    def close(self) -> None:
        self.huey.storage.close()


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=10.0)
    try:
        yield conn
    finally:
        conn.close()


# -- worker processes ---------------------------------------------------------------------------


def _child(impl: str, db: str, lease: float, synchronous: str, trace: str | None) -> int:
    """A worker process: start the workers, print ``ready``, run until SIGINT."""
    if impl == "chronos":
        app = ChronosApp(Path(db))
        tracer = None if trace is None else StoreTrace(app.queue.backend)
        worker = Worker(app.queue, workers=WORKERS, lease=lease, grace=STOP_TIMEOUT)
        worker.start()
        print("ready", flush=True)
        worker.run()  # SIGINT or SIGTERM: drain
        if tracer is not None and trace is not None:
            Path(trace).write_text(json.dumps(tracer.summary()))
        app.close()
        return 0
    consumer_module = importlib.import_module("huey.consumer")
    huey_app = HueyApp(Path(db), synchronous)
    consumer = consumer_module.Consumer(huey_app.huey, workers=WORKERS, worker_type="thread")
    consumer.start()  # as Consumer.run() does, with "ready" in between
    print("ready", flush=True)
    health_check = time.monotonic()
    while True:  # SIGINT: a graceful stop
        try:
            health_check = consumer.loop(health_check)
        except consumer_module.ConsumerStopped:
            break
    return 0


class WorkerProcess:
    """A child worker process; :meth:`stop` (SIGINT, then SIGKILL) is idempotent."""

    def __init__(
        self,
        impl: str,
        db: Path,
        log: Path,
        *,
        lease: float = LEASE,
        synchronous: str = HUEY_SYNCHRONOUS,
        trace: Path | None = None,
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "benchmarks.durable",
            "--child",
            impl,
            "--db",
            str(db),
            "--lease",
            repr(lease),
            "--huey-synchronous",
            synchronous,
        ]
        if trace is not None:
            command += ["--trace", str(trace)]
        self.log = log
        with log.open("w") as err:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> None:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], START_TIMEOUT)
        line = stdout.readline().strip() if ready else ""
        if line != "ready":
            self.stop()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker process did not start: {line!r}\n{tail}")

    def kill(self) -> float:
        """SIGKILL; the ``time.time()`` just before it."""
        killed = time.time()
        self.process.kill()
        self.process.wait()
        return killed

    def stop(self) -> None:
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _workers(
    stack: ExitStack, impl: str, db: Path, count: int = 1, **options: Any
) -> list[WorkerProcess]:
    """``count`` worker processes, started together, each ready (stopped with ``stack``)."""
    started = []
    for n in range(count):
        worker = WorkerProcess(impl, db, db.with_name(f"worker-{n}.log"), **options)
        stack.callback(worker.stop)
        started.append(worker)
    for worker in started:
        worker.wait_ready()
    return started


def _poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Look every :data:`POLL` seconds (a store query: not a busy loop on 2 cores)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL)


@contextmanager
def _store() -> Iterator[Path]:
    """A fresh store file's path in a new temporary directory (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="chronos-bench-") as directory:
        yield Path(directory) / "jobs.db"


# -- 1. end to end ------------------------------------------------------------------------------


def _e2e_chronos(jobs: int, trace: Path | None = None, spy: Path | None = None) -> Metrics:
    """See the module docstring; ``trace`` and ``spy`` (for ``--profile``): where the
    worker writes its :class:`StoreTrace`, and where py-spy writes its samples."""
    with _store() as db, ExitStack() as stack:
        app = ChronosApp(db)
        stack.callback(app.close)
        (worker,) = _workers(stack, "chronos", db, trace=trace)
        sampler = None if spy is None else _py_spy(worker.pid, spy)
        started = time.time()
        for first in range(0, jobs, BATCH):
            app.queue.enqueue_specs([app.noop.spec() for _ in range(min(BATCH, jobs - first))])
        enqueued = time.time()
        _poll(lambda: app.count(JobState.SUCCEEDED) >= jobs, RUN_TIMEOUT, "chronos jobs")
        last = float(app.read("SELECT max(finished_at) FROM chronos_jobs"))
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            sampler.wait(STOP_TIMEOUT)
    return {"jobs_per_s": jobs / (last - started), "enqueue_s": enqueued - started}


def _e2e_huey(jobs: int, synchronous: str) -> Metrics:
    with _store() as db, ExitStack() as stack:
        app = HueyApp(db, synchronous)
        stack.callback(app.close)
        _workers(stack, "huey", db, synchronous=synchronous)
        started = time.time()
        for _ in range(jobs):
            app.noop()
        enqueued = time.time()
        _poll(lambda: app.results() >= jobs, RUN_TIMEOUT, "Huey jobs")
        last = max(app.result_times())
    return {"jobs_per_s": jobs / (last - started), "enqueue_s": enqueued - started}


# -- 2. enqueue ---------------------------------------------------------------------------------


def _enqueue_chronos(jobs: int) -> Metrics:
    sizes = [min(BATCH, jobs - first) for first in range(0, jobs, BATCH)]
    with _store() as db:
        app = ChronosApp(db)
        try:
            started = time.perf_counter()
            for size in sizes:
                app.queue.enqueue_specs([app.noop.spec() for _ in range(size)])
            with_specs = time.perf_counter() - started
        finally:
            app.close()
    with _store() as db:
        app = ChronosApp(db)
        try:
            batches = [[app.noop.spec() for _ in range(size)] for size in sizes]
            started = time.perf_counter()
            for batch in batches:
                app.queue.enqueue_specs(batch)
            store_only = time.perf_counter() - started
        finally:
            app.close()
    return {"jobs_per_s": jobs / with_specs, "store_only_per_s": jobs / store_only}


def _enqueue_huey(jobs: int, synchronous: str) -> Metrics:
    with _store() as db:
        app = HueyApp(db, synchronous)
        try:
            started = time.perf_counter()
            for _ in range(jobs):
                app.noop()
            elapsed = time.perf_counter() - started
        finally:
            app.close()
    rate = jobs / elapsed
    return {"jobs_per_s": rate, "store_only_per_s": rate}


# -- 3. idle to first pickup --------------------------------------------------------------------


def _gaps(trials: int) -> list[float]:
    rng = random.Random(SEED)
    return [rng.uniform(*GAP) for _ in range(trials)]


def _latency_metrics(samples_ms: list[float]) -> Metrics:
    return {"p50_ms": percentile(samples_ms, 50), "p99_ms": percentile(samples_ms, 99)}


def _pickup_chronos(trials: int) -> Metrics:
    samples = []
    with _store() as db, ExitStack() as stack:
        app = ChronosApp(db)
        stack.callback(app.close)
        _workers(stack, "chronos", db)
        for gap in _gaps(trials):
            time.sleep(gap)
            sent = time.time()
            handle = app.stamp.enqueue()
            samples.append((float(handle.result(timeout=30.0)) - sent) * 1e3)
    return _latency_metrics(samples)


def _pickup_huey(trials: int, synchronous: str) -> Metrics:
    samples = []
    with _store() as db, ExitStack() as stack:
        app = HueyApp(db, synchronous)
        stack.callback(app.close)
        _workers(stack, "huey", db, synchronous=synchronous)
        for gap in _gaps(trials):
            time.sleep(gap)
            sent = time.time()
            result = app.stamp()
            samples.append((float(result.get(blocking=True, timeout=30.0)) - sent) * 1e3)
    return _latency_metrics(samples)


# -- 4. kill -9 ---------------------------------------------------------------------------------


def _effects(out: Path) -> Counter[int]:
    """How many times each job's side effect happened."""
    if not out.exists():
        return Counter()
    return Counter(int(line.split()[0]) for line in out.read_text().splitlines() if line)


def _kill_chronos(jobs: int) -> Metrics:
    with _store() as db, ExitStack() as stack:
        out = db.with_name("effects.txt")
        app = ChronosApp(db)
        stack.callback(app.close)
        doomed, _ = _workers(stack, "chronos", db, count=2, lease=KILL_LEASE)
        for first in range(0, jobs, BATCH):
            specs = [app.work.spec((i, str(out))) for i in range(first, min(first + BATCH, jobs))]
            app.queue.enqueue_specs(specs)
        _poll(lambda: app.count(JobState.SUCCEEDED) >= jobs // 3, RUN_TIMEOUT, "a third")
        killed = doomed.kill()
        with contextlib.suppress(TimeoutError):  # what is not done by then counts as lost
            _poll(lambda: app.count(JobState.SUCCEEDED) >= jobs, KILL_TIMEOUT, "every job")
        done = app.count(JobState.SUCCEEDED)
        last = float(app.read("SELECT max(finished_at) FROM chronos_jobs"))
        reruns = int(app.read("SELECT count(*) FROM chronos_jobs WHERE attempt > 1"))
        effects = _effects(out)
    return {
        "recovery_s": last - killed,
        "lost": float(jobs - done),
        "twice": float(sum(1 for n in effects.values() if n > 1)),
        "reruns": float(reruns),
        "no_effect": float(jobs - len(effects)),
    }


def _kill_huey(jobs: int, synchronous: str) -> Metrics:
    with _store() as db, ExitStack() as stack:
        out = db.with_name("effects.txt")
        app = HueyApp(db, synchronous)
        stack.callback(app.close)
        doomed, _ = _workers(stack, "huey", db, count=2, synchronous=synchronous)
        for i in range(jobs):
            app.work(i, str(out))
        _poll(lambda: app.results() >= jobs // 3, RUN_TIMEOUT, "a third")
        killed = doomed.kill()
        seen = [-1]

        def settled() -> bool:  # nothing waits, and no new result since the last look
            now = app.results()
            quiet = now == seen[0] and not app.waiting()
            seen[0] = now
            return quiet

        # What the killed consumer had taken is gone: wait until the rest is done.
        _poll(
            lambda: app.results() >= jobs or (settled() and _pause(SETTLE) and settled()),
            KILL_TIMEOUT,
            "Huey's queue to drain",
        )
        times = app.result_times()
        effects = _effects(out)
    return {
        "recovery_s": max(times) - killed,
        "lost": float(jobs - len(times)),
        "twice": float(sum(1 for n in effects.values() if n > 1)),
        "no_effect": float(jobs - len(effects)),
    }


def _pause(seconds: float) -> bool:
    time.sleep(seconds)
    return True


# -- the case -----------------------------------------------------------------------------------


def _row(
    metric: str,
    results: dict[str, dict[str, list[float]]],
    key: str,
    *,
    target: str = "",
    passed: bool | None = None,
    count: bool = False,
) -> Row:
    """A row of chronos against Huey (``count``: a number of jobs, no ratio)."""
    ours = results["chronos"][key]
    theirs = results.get("huey", {}).get(key)
    if theirs is None:
        baseline = HUEY_MISSING if "huey" not in results else "-"
        return text_row(
            CASE,
            metric,
            Stat.of(ours).text(),
            baseline,
            target=target,
            passed=passed,
            data={"chronos": ours},
        )
    row = compare_row(CASE, metric, ours, theirs, HUEY_LABEL, target=target, passed=passed)
    if count:
        row.ratio = None
    return row


def _measure(
    chronos: Callable[[], Metrics],
    huey: Callable[[], Metrics] | None,
    runs: int,
    warmup: dict[str, Callable[[], Metrics]] | None,
) -> dict[str, dict[str, list[float]]]:
    """``alternate`` over chronos and Huey (None: chronos alone)."""
    variants = {"chronos": chronos} if huey is None else {"chronos": chronos, "huey": huey}
    if warmup:
        warmup = {label: fn for label, fn in warmup.items() if label in variants}
    return alternate(variants, runs, warmup=warmup)


def measure(
    sizes: Sizes,
    runs: int,
    long_runs: int,
    *,
    with_huey: bool,
    synchronous: str = HUEY_SYNCHRONOUS,
) -> list[Row]:
    """Every row of case 11 at ``sizes``: ``runs`` runs of the in-process measurement
    (enqueue), ``long_runs`` of those with worker processes; Huey's side if ``with_huey``,
    with its ``synchronous`` setting (see :class:`HueyApp`)."""

    def huey(fn: Callable[..., Metrics], size: int) -> Callable[[], Metrics] | None:
        return partial(fn, size, synchronous) if with_huey else None

    rows: list[Row] = []
    warmup: dict[str, Callable[[], Metrics]] = {}
    if sizes.warmup_jobs:
        warmup = {
            "chronos": partial(_e2e_chronos, sizes.warmup_jobs),
            "huey": partial(_e2e_huey, sizes.warmup_jobs, synchronous),
        }
    e2e = _measure(
        partial(_e2e_chronos, sizes.jobs), huey(_e2e_huey, sizes.jobs), long_runs, warmup
    )
    rates = e2e["chronos"]["jobs_per_s"]
    passed = Stat.of(rates).median >= E2E_RATE
    target = f">= {E2E_RATE:,.0f}/s, >= {E2E_RATIO:.2f}x"
    if with_huey:
        passed = passed and paired_ratio(rates, e2e["huey"]["jobs_per_s"]) >= E2E_RATIO
    else:
        target = f">= {E2E_RATE:,.0f}/s (vs Huey: skipped)"
    what = f"{sizes.jobs:,} no-op jobs end to end"
    rows.append(
        _row(
            f"{what}, 1 worker process x {WORKERS} threads: jobs/s",
            e2e,
            "jobs_per_s",
            target=target,
            passed=passed,
        )
    )
    rows.append(
        _row(f"same: enqueueing them ({BATCH:,} a batch; Huey: 1 a call), s", e2e, "enqueue_s")
    )

    enqueue = _measure(
        partial(_enqueue_chronos, sizes.enqueue_jobs),
        huey(_enqueue_huey, sizes.enqueue_jobs),
        runs,
        None if sizes.warmup_jobs else {},
    )
    ok = Stat.of(enqueue["chronos"]["jobs_per_s"]).median >= ENQUEUE_RATE
    rows.append(
        _row(
            f"{sizes.enqueue_jobs:,} enqueues, spec() + enqueue_specs ({BATCH:,} a batch), jobs/s",
            enqueue,
            "jobs_per_s",
            target=f">= {ENQUEUE_RATE:,.0f}/s",
            passed=ok,
        )
    )
    rows.append(
        _row("same, specs prebuilt: enqueue_specs alone, jobs/s", enqueue, "store_only_per_s")
    )

    pickup = _measure(
        partial(_pickup_chronos, sizes.trials), huey(_pickup_huey, sizes.trials), long_runs, {}
    )
    what = f"idle worker, enqueue -> job starts ({sizes.trials} trials)"
    rows.append(_row(f"{what}: p50 ms", pickup, "p50_ms"))
    ok = Stat.of(pickup["chronos"]["p99_ms"]).median <= PICKUP_P99_MS  # of 50: the largest
    rows.append(
        _row(f"{what}: p99 ms", pickup, "p99_ms", target=f"<= {PICKUP_P99_MS:g} ms", passed=ok)
    )

    kill = _measure(
        partial(_kill_chronos, sizes.kill_jobs), huey(_kill_huey, sizes.kill_jobs), long_runs, {}
    )
    what = (
        f"kill -9 1 of 2 workers (lease {KILL_LEASE:g} s) 1/3 through {sizes.kill_jobs} x "
        f"{WORK_SECONDS * 1e3:g} ms jobs"
    )
    rows.append(_row(f"{what}: kill -> all done, s", kill, "recovery_s"))
    ours = kill["chronos"]
    ok = max(ours["lost"]) == 0 and max(ours["no_effect"]) == 0
    rows.append(_row("same: jobs lost", kill, "lost", target="0 every run", passed=ok, count=True))
    rows.append(_row("same: jobs whose side effect ran twice", kill, "twice", count=True))
    rows.append(
        _row("same: jobs run again after the lease (attempt 2)", kill, "reruns", count=True)
    )
    return rows


def case11(settings: Settings) -> list[Row]:
    """Durable queues on SQLite: end to end, enqueue, pickup latency, kill -9."""
    with_huey = huey_available()
    if not with_huey:
        print(
            f"case {CASE}: huey is not installed, measuring chronos only ({HUEY_MISSING})",
            file=sys.stderr,
            flush=True,
        )
    sizes = QUICK if settings.quick else Sizes()
    return measure(sizes, settings.runs, settings.long_runs, with_huey=with_huey)


# -- where the worker's time goes (--profile) -----------------------------------------------------


class _TimedConnection:
    """A connection that times how long ``BEGIN IMMEDIATE`` waits for the write lock."""

    def __init__(self, conn: sqlite3.Connection, trace: StoreTrace) -> None:
        self._conn, self._trace = conn, trace

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *params: Any) -> sqlite3.Cursor:
        if sql != "BEGIN IMMEDIATE":
            return self._conn.execute(sql, *params)
        started = time.perf_counter()
        try:
            return self._conn.execute(sql)
        finally:
            self._trace.add("begin", 0, time.perf_counter() - started, 0.0)

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        return self._conn.executemany(sql, params)


class StoreTrace:
    """In a worker process: counts and times the backend's ``claim`` and ``finish`` calls
    and its waits for SQLite's write lock, and samples the CPU time of each thread.

    Benchmark tooling: it wraps the backend's methods and its per-thread connections.
    """

    def __init__(self, backend: DurableBackend) -> None:
        if not isinstance(backend, SQLiteBackend):
            raise TypeError("the store trace is for the SQLite backend")
        self._lock = threading.Lock()  # guards _calls and _cpu
        self._calls: dict[str, list[float]] = {}  # name -> [calls, items, wall, cpu, slow]
        self._cpu: dict[int, tuple[str, float]] = {}  # native id -> (thread, CPU seconds)
        for name in ("claim", "finish"):
            setattr(backend, name, self._timed(name, getattr(backend, name)))
        connections = backend._connections
        get = connections.get
        setattr(connections, "get", lambda: _TimedConnection(get(), self))  # noqa: B010 (for mypy)
        threading.Thread(target=self._sample, name="store-trace", daemon=True).start()

    def add(self, name: str, items: int, wall: float, cpu: float) -> None:
        with self._lock:
            entry = self._calls.setdefault(name, [0.0, 0.0, 0.0, 0.0, 0.0])
            for i, value in enumerate((1, items, wall, cpu, wall >= SLOW_BEGIN)):
                entry[i] += value

    def _timed(self, name: str, method: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        def timed(*args: Any, **kwargs: Any) -> list[Any]:
            wall, cpu = time.perf_counter(), time.thread_time()
            result = method(*args, **kwargs)
            self.add(name, len(result), time.perf_counter() - wall, time.thread_time() - cpu)
            return result

        return timed

    def _sample(self) -> None:
        """Every 0.1 s: the CPU time of every thread so far (from /proc, Linux only)."""
        ticks = os.sysconf("SC_CLK_TCK")
        while True:
            for thread in threading.enumerate():
                try:
                    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
                except OSError:
                    continue
                user, system = fields.rsplit(")", 1)[1].split()[11:13]
                with self._lock:
                    self._cpu[thread.native_id or 0] = (
                        thread.name,
                        (int(user) + int(system)) / ticks,
                    )
            time.sleep(0.1)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            threads: dict[str, float] = {}
            for name, seconds in self._cpu.values():
                group = name.rstrip("0123456789").rstrip("-_")  # a pool's threads together
                threads[group] = threads.get(group, 0.0) + seconds
            return {"calls": dict(self._calls), "threads": dict(threads)}


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling process ``pid`` into ``out`` (raw stacks), or None without py-spy."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        print("py-spy not found: pip install py-spy for the per-function profile", file=sys.stderr)
        return None
    # --gil: only the thread holding the GIL is sampled, so the shares are of the CPU time
    # spent in Python code (the worker process is bound by its GIL).
    options = ["record", "--gil", "--rate", "200", "--format", "raw", "--nonblocking", "--pid"]
    command = [found, *options, str(pid), "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _top_functions(raw: Path, limit: int = 20) -> list[tuple[float, float, str]]:
    """py-spy's functions with the most samples: (inclusive %, own %, function)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [frame.rsplit(":", 1)[0] + ")" for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    top = [frame for frame, _ in inclusive.most_common(limit)]
    return [(100.0 * inclusive[f] / total, 100.0 * own[f] / total, f) for f in top]


def profile(jobs: int, directory: Path) -> str:
    """One end-to-end chronos run with the worker traced (and sampled by py-spy, if
    installed): where the worker process's time goes, as text."""
    directory.mkdir(parents=True, exist_ok=True)
    trace, spy = directory / "store-trace.json", directory / "worker-py-spy.txt"
    metrics = _e2e_chronos(jobs, trace=trace, spy=spy)
    summary = json.loads(trace.read_text())
    lines = [f"{jobs:,} no-op jobs end to end: {metrics['jobs_per_s']:,.0f} jobs/s"]
    lines.append("worker process, CPU by thread (us per job):")
    for name, seconds in sorted(summary["threads"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {seconds / jobs * 1e6:7.1f}  {name}")
    lines.append("store calls:        calls  jobs/call  wall us/call  CPU us/call  CPU us/job")
    for name in ("claim", "finish"):
        calls, items, wall, cpu, _ = summary["calls"].get(name, [0, 0, 0, 0, 0])
        if calls:
            lines.append(
                f"  {name:16} {calls:7.0f} {items / calls:10.1f} "
                f"{wall / calls * 1e6:13.0f} {cpu / calls * 1e6:12.0f} "
                f"{cpu / max(items, 1) * 1e6:11.1f}"
            )
    calls, _, wall, _, slow = summary["calls"].get("begin", [0, 0, 0, 0, 0])
    lines.append(
        f"BEGIN IMMEDIATE: {calls:,.0f} write transactions, {slow:,.0f} waited >= "
        f"{SLOW_BEGIN * 1e3:g} ms for the write lock, {wall:.2f} s of waiting in all"
    )
    if spy.exists():
        lines.append(f"py-spy --gil ({spy}): share of the samples, inclusive and own")
        lines.extend(
            f"  {incl:5.1f}% {own:5.1f}%  {frame}" for incl, own, frame in _top_functions(spy)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.durable``: case 11 alone (``--quick``, ``--runs N``,
    ``--huey-synchronous``), or ``--profile DIR``; ``--child`` runs a worker process."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.durable")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--runs", type=int, help="measured runs of each side")
    parser.add_argument(
        "--huey-synchronous",
        choices=("NORMAL", "FULL", "default"),
        default=HUEY_SYNCHRONOUS,
        help="Huey's SQLite synchronous setting (default: chronos's, NORMAL)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="trace and sample one chronos end-to-end run into DIR",
    )
    parser.add_argument("--jobs", type=int, default=Sizes().jobs, help="jobs for --profile")
    parser.add_argument("--child", choices=("chronos", "huey"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--lease", type=float, default=LEASE, help=argparse.SUPPRESS)
    parser.add_argument("--trace", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return _child(args.child, args.db, args.lease, args.huey_synchronous, args.trace)
    if args.profile is not None:
        print(profile(args.jobs, args.profile))
        return 0
    settings = Settings.make(quick=args.quick, runs=args.runs)
    with_huey = huey_available()
    rows = measure(
        QUICK if args.quick else Sizes(),
        settings.runs,
        settings.long_runs,
        with_huey=with_huey,
        synchronous=args.huey_synchronous,
    )
    print(f"Huey: synchronous={args.huey_synchronous}" if with_huey else HUEY_MISSING)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    # Run as benchmarks.durable, not __main__: Huey names a task after its function's module.
    from benchmarks.durable import main as _main

    sys.exit(_main())
