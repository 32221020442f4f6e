"""A zombie worker: SIGSTOP past its lease while another finishes the job, then SIGCONT.

DURABLE.md section 5: the old finish is FENCED, the job is applied exactly once (by the
worker that took it over), and the zombie's heartbeat reports the loss.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chronos.backends.durable import Finish, FinishKind, FinishResult, JobState
from chronos.tasks import Queue
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("worker_child.py")
LEASE = 0.6  # seconds: short, so that the pause outlives it


def pause_outside_a_transaction(child: subprocess.Popen[str], db: Path) -> None:
    """SIGSTOP ``child`` at a moment it holds no write lock on ``db``.

    A process paused *inside* a SQLite write transaction blocks every writer of the file
    until it resumes (SQLite's lock is the file's; no lease can fence it): a documented
    limit of the SQLite backend, not what this test is about.  So: pause, look whether the
    file can be written, and if not, let it go on a moment and try again.
    """
    stat = Path(f"/proc/{child.pid}/stat")
    for _ in range(50):
        child.send_signal(signal.SIGSTOP)
        if stat.exists():  # Linux: wait until it is really stopped ("T")
            wait_until(lambda: stat.read_text().rpartition(")")[2].split()[0] == "T")
        probe = sqlite3.connect(db, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # it holds the write lock: not now
            child.send_signal(signal.SIGCONT)
            time.sleep(0.01)  # let it finish its transaction; then pause it again
        finally:
            probe.close()
    raise AssertionError("the child always held the write lock")


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP (POSIX)")
@pytest.mark.timeout(60)
def test_a_paused_worker_past_its_lease_is_fenced(tmp_path: Path) -> None:
    db, out = tmp_path / "jobs.db", tmp_path / "out.txt"
    with Queue(f"sqlite:///{db}") as queue:

        @queue.task(name="slow")
        def slow(seconds: float) -> float:  # run by the child; never here
            raise AssertionError("not run in this process")

        handle = slow.enqueue(2.0)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(out), "5", str(LEASE)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: handle.status() is JobState.RUNNING, timeout=30)
            zombie = handle.record()
            pause_outside_a_transaction(child, db)  # the zombie: its heartbeats stop too
            backend = queue.backend

            def taken_over() -> bool:
                backend.recover(queue.name)
                return handle.status() is JobState.READY

            wait_until(taken_over, timeout=10)  # its lease expired, and was recovered
            [claim] = backend.claim(queue.name, 1, 30.0, "the-other-worker")
            assert (claim.id, claim.attempt) == (handle.id, 2)
            assert claim.token > zombie.token
            done = Finish(claim.id, claim.token, FinishKind.COMPLETE, result="taken over")
            assert backend.finish([done]) == [FinishResult.APPLIED]
            child.send_signal(signal.SIGCONT)  # it wakes, finishes its attempt: fenced
            stats = backend.statistics

            wait_until(lambda: stats(queue.name).fenced == 1, timeout=20)
            assert stats(queue.name).applied == 1
            assert handle.result(timeout=1) == "taken over"
            reply = backend.heartbeat([(handle.id, zombie.token)], LEASE)
            assert reply.lost == (handle.id,)  # what the zombie's own beat hears
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGCONT)
                child.send_signal(signal.SIGTERM)
                try:
                    child.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.communicate(timeout=10)
        assert child.returncode in (0, 130)
