"""What only the SQLite backend has: its file, its settings, its errors, and real processes
sharing one file (claiming together, killed with SIGKILL, forked)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chronos.backends import _sqlite_schema
from chronos.backends.durable import Finish, FinishKind, FinishResult, JobRecord, JobState
from chronos.backends.sqlite import SQLiteBackend
from chronos.spec import JobSpec
from tests.durable.conftest import StoreClock
from tests.durable.crash_child import BATCH

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("crash_child.py")
#: Upper bound (real seconds) for any one wait on a child: far above what a healthy run needs.
CHILD_TIMEOUT = 30.0


class Worker:
    """crash_child.py in a child process, read line by line with a deadline."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._pending = b""

    def line(self, timeout: float = CHILD_TIMEOUT) -> str:
        """The next line of stdout; fail (and kill the child) on EOF or timeout."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.fail(f"no line from the child within {timeout} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.fail("the child closed its stdout")
                self._pending += chunk
        raw, self._pending = self._pending.split(b"\n", 1)
        return raw.decode()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> list[str]:
        """SIGKILL, wherever it is; the lines it printed that were not read yet."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=CHILD_TIMEOUT)
        rest, self._pending = self._pending + out, b""
        return rest.decode().splitlines()

    def exit_code(self) -> int:
        _, err = self.proc.communicate(timeout=CHILD_TIMEOUT)
        assert "Traceback" not in err.decode(), err.decode()
        return self.proc.returncode

    def fail(self, message: str) -> None:
        self.kill()
        pytest.fail(message)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def backend(path: Path, store_clock: StoreClock) -> Iterator[SQLiteBackend]:
    with SQLiteBackend(path, clock=store_clock) as backend:
        yield backend


def all_jobs(backend: SQLiteBackend) -> list[JobRecord]:
    jobs: list[JobRecord] = []
    while page := backend.list_jobs("default", limit=500, after_id=jobs[-1].id if jobs else None):
        jobs.extend(page)
    return jobs


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        (answer,) = conn.execute("PRAGMA integrity_check").fetchone()
    return str(answer)


def test_the_file_is_in_wal_mode_with_the_synchronous_asked_for(path: Path) -> None:
    with SQLiteBackend(path) as normal:
        assert normal._connections.get().execute("PRAGMA synchronous").fetchone() == (1,)
    with SQLiteBackend(path, synchronous="full") as full:
        assert full._connections.get().execute("PRAGMA synchronous").fetchone() == (2,)
        assert full.statistics().kind == "sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(ValueError, match='synchronous must be "NORMAL" or "FULL"'):
        SQLiteBackend(path, synchronous="OFF")


def test_default_max_attempts(path: Path) -> None:
    with SQLiteBackend(path, default_max_attempts=5) as backend:
        (job_id,) = backend.enqueue([JobSpec("t")])
        record = backend.get(job_id)
        assert record is not None and record.max_attempts == 5
    with pytest.raises(ValueError, match="default_max_attempts must be >= 1"):
        SQLiteBackend(path, default_max_attempts=0)


@pytest.mark.parametrize("name", [":memory:", ""])
def test_an_in_memory_database_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"needs a file.*memory://"):
        SQLiteBackend(name)


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SQLiteBackend(tmp_path / "missing" / "queue.db")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        SQLiteBackend(tmp_path)


@pytest.mark.parametrize("fstype", ["nfs4", "cifs", "fuse.sshfs"])
def test_a_network_filesystem_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str
) -> None:
    share = tmp_path / "a share"
    share.mkdir()
    mounts = tmp_path / "mounts"
    escaped = str(share).replace(" ", "\\040")
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/export {escaped} {fstype} rw 0 0\n")
    monkeypatch.setattr(_sqlite_schema, "MOUNTS", mounts)
    with pytest.raises(ValueError, match=f"network filesystem \\({fstype}\\).*local disk"):
        SQLiteBackend(share / "queue.db")
    SQLiteBackend(tmp_path / "local.db").close()  # beside the share: fine


@contextmanager
def read_only(target: Path) -> Iterator[Path]:
    """``target`` (a file or a directory) made read-only: by its mode, and for root (whom
    modes do not stop) by the immutable attribute as well."""
    mode = target.stat().st_mode
    target.chmod(0o555 if target.is_dir() else 0o444)
    immutable = os.geteuid() == 0
    try:
        if immutable:
            chattr = shutil.which("chattr")
            done = (
                chattr
                and not subprocess.run([chattr, "+i", target], capture_output=True).returncode
            )
            if not done:
                immutable = False
                pytest.skip("running as root, and chattr +i is not available here")
        yield target
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", target], check=True)
        target.chmod(mode)


def test_a_read_only_file_is_refused(path: Path) -> None:
    SQLiteBackend(path).close()
    with read_only(path), pytest.raises(PermissionError, match=r"queue file .* is read-only"):
        SQLiteBackend(path)


def test_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "queues"
    directory.mkdir()
    with read_only(directory), pytest.raises(PermissionError, match=r"directory .* read-only"):
        SQLiteBackend(directory / "queue.db")


def test_an_old_sqlite_is_refused(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    with pytest.raises(RuntimeError, match=r"SQLite >= 3\.35\.0 \(for RETURNING\)"):
        SQLiteBackend(path)


def test_a_file_of_another_schema_version_is_refused(path: Path) -> None:
    SQLiteBackend(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE chronos_meta SET value = '99' WHERE key = 'version'")
    with pytest.raises(RuntimeError, match="schema version 99"):
        SQLiteBackend(path)


def test_the_schema_is_made_once_when_two_open_it_together(path: Path) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait(5)
        try:
            with SQLiteBackend(path) as backend:
                backend.enqueue([JobSpec("t")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    with SQLiteBackend(path) as backend:
        assert backend.statistics().counts[JobState.READY] == 4
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("SELECT value FROM chronos_meta").fetchall() == [("1",)]


def test_a_writer_that_keeps_the_lock_gives_a_timeout(path: Path) -> None:
    with SQLiteBackend(path, busy_timeout=0.05) as backend:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(TimeoutError, match="locked"):
                backend.enqueue([JobSpec("t")])
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert backend.enqueue([JobSpec("t")])


def test_each_thread_has_its_own_connection(backend: SQLiteBackend) -> None:
    mine = backend._connections.get()
    theirs: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: theirs.append(backend._connections.get()))
    thread.start()
    thread.join(5)
    assert theirs[0] is not mine and backend._connections.get() is mine
    thread = threading.Thread(target=backend._connections.get)  # a new thread opens one...
    thread.start()
    thread.join(5)
    with pytest.raises(sqlite3.ProgrammingError):  # ...closing the dead thread's
        theirs[0].execute("SELECT 1")


def test_a_connection_never_crosses_a_fork(
    backend: SQLiteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = backend._connections.get()
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as in a forked child
    after = backend._connections.get()
    assert after is not before
    assert before.execute("SELECT 1").fetchone() == (1,)  # left alone: never closed
    assert backend.enqueue([JobSpec("t")])


def test_a_forked_child_uses_its_own_connection(path: Path) -> None:
    worker = Worker("fork", str(path))
    assert worker.line() == "ok"
    assert worker.exit_code() == 0


def test_wait_for_work_wakes_when_a_scheduled_job_comes_due(
    backend: SQLiteBackend, store_clock: StoreClock
) -> None:
    backend.enqueue([JobSpec("t", not_before=store_clock() + 60)])
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(backend.wait_for_work("default", 20)))
    thread.start()
    store_clock.advance(60)
    thread.join(10)
    assert answer == [True]


def test_close_wakes_a_waiter(backend: SQLiteBackend) -> None:
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(backend.wait_for_work("default", 20)))
    thread.start()
    backend.close()
    thread.join(10)
    assert answer == [False]


@pytest.mark.slow
def test_four_processes_share_one_file_without_a_double_claim(path: Path) -> None:
    with SQLiteBackend(path) as backend:
        ids = backend.enqueue([JobSpec("t", args=(i,)) for i in range(2000)])
        workers = [Worker("work", str(path), f"worker-{n}") for n in range(4)]
        for worker in workers:
            assert worker.line() == "ready"
        for worker in workers:
            worker.send("go")
        summaries = [json.loads(worker.line()) for worker in workers]
        assert [worker.exit_code() for worker in workers] == [0, 0, 0, 0]
        claimed = [job_id for s in summaries for job_id in s["claimed"]]
        assert sorted(claimed) == sorted(ids)  # each job claimed once, by one of them
        assert sum(s["answers"].get("applied", 0) for s in summaries) == 2000
        stats = backend.statistics()
        assert (stats.applied, stats.duplicates, stats.fenced) == (2000, 0, 0)
        assert stats.counts[JobState.SUCCEEDED] == 2000
        jobs = all_jobs(backend)
        assert {(j.attempt, j.token) for j in jobs} == {(1, 1)}
        assert {j.result for j in jobs} <= {f"worker-{n}" for n in range(4)}
    assert integrity(path) == "ok"


@pytest.mark.slow
def test_sigkill_mid_transaction_loses_nothing(path: Path) -> None:
    SQLiteBackend(path).close()
    printed: dict[int, int] = {}
    for child in range(8):
        worker = Worker("churn", str(path), str(child))
        until = 8 + 3 * child  # kill at a different point of the loop each time
        while (line := worker.line()) != f"batch {until}":
            assert line.startswith("batch ")
        rest = worker.kill()
        assert all(line.startswith("batch ") for line in rest)
        printed[child] = until + 1 + len(rest)  # the batches it said it committed
    assert integrity(path) == "ok"

    later = time.time() + 3600  # every lease long expired, every retry due
    with SQLiteBackend(path, clock=lambda: later) as backend:
        jobs = all_jobs(backend)
        batches = Counter((j.spec.kwargs["child"], j.spec.kwargs["batch"]) for j in jobs)
        assert set(batches.values()) == {BATCH}  # every batch whole: no half transaction
        for child, count in printed.items():
            made = sorted(b for c, b in batches if c == child)
            assert made == list(range(len(made)))
            assert len(made) in (count, count + 1)  # +1: killed between commit and print
        assert sum(backend.statistics().counts.values()) == len(jobs)  # counts conserved
        for _ in range(100):  # drain: nothing is stuck
            backend.recover("default")
            claims = backend.claim("default", 100, 60, "drain")
            if not claims:
                break
            done = [Finish(c.id, c.token, FinishKind.COMPLETE) for c in claims]
            assert set(backend.finish(done)) == {FinishResult.APPLIED}
        counts = backend.statistics().counts
        assert counts[JobState.READY] == counts[JobState.RUNNING] == 0
        assert counts[JobState.SCHEDULED] == 0
        assert sum(counts.values()) == len(jobs)
    assert integrity(path) == "ok"


@pytest.mark.slow
def test_a_killed_claimer_s_job_runs_again_after_its_lease(path: Path) -> None:
    with SQLiteBackend(path) as backend:
        (job_id,) = backend.enqueue([JobSpec("t")])
        worker = Worker("hold", str(path), "0.3")
        claimed, old_id, old_token = worker.line().split()
        assert (claimed, old_id, old_token) == ("claimed", job_id, "1")
        worker.kill()
        deadline = time.monotonic() + 10
        pause = threading.Event()
        while backend.recover("default").requeued == 0:
            assert time.monotonic() < deadline, "the lease never expired"
            pause.wait(0.02)
        (again,) = backend.claim("default", 1, 30, "survivor")
        assert (again.id, again.attempt, again.token) == (job_id, 2, 2)
        zombie = Finish(job_id, 1, FinishKind.COMPLETE, result="zombie")
        fresh = Finish(again.id, again.token, FinishKind.COMPLETE, result="fresh")
        assert backend.finish([zombie, fresh, fresh]) == ["fenced", "applied", "duplicate"]
        record = backend.get(job_id)
        assert record is not None and (record.state, record.result) == (JobState.SUCCEEDED, "fresh")
        assert backend.statistics().applied == 1
