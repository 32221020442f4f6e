"""`chronos worker MODULE[:ATTR]`: finding the queue, and a real run stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chronos.backends.durable import JobState
from chronos.cli.worker_command import find_queue
from chronos.tasks import Queue
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = """
import chronos

queue = chronos.Queue("sqlite:///{db}")


@queue.task(name="add")
def add(a: int, b: int) -> int:
    return a + b
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module ``cmdapp`` in tmp_path (on sys.path) with a queue and a task."""
    (tmp_path / "cmdapp.py").write_text(APP.format(db=tmp_path / "jobs.db"), encoding="utf-8")
    (tmp_path / "two_queues.py").write_text(
        "import chronos\n"
        f"a = chronos.Queue('sqlite:///{tmp_path}/a.db')\n"
        f"b = chronos.Queue('sqlite:///{tmp_path}/b.db')\n"
        "c = 3\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("cmdapp", "two_queues"):
        module = sys.modules.pop(name, None)
        for value in vars(module).values() if module else ():
            if isinstance(value, Queue):
                value.close()


def test_find_queue_takes_the_one_queue_or_the_named_one(app: Path) -> None:
    queue = find_queue("cmdapp")
    assert queue.registry.names() == ["add"]
    assert find_queue("cmdapp:queue") is queue
    assert find_queue("two_queues:b").url.endswith("b.db")


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ("two_queues", ValueError, "has 2 chronos.Queues: name one"),
        ("two_queues:c", ValueError, "is int, not a chronos.Queue"),
        ("two_queues:nope", ValueError, "is nothing, not a chronos.Queue"),
        ("no_such_module_here", ImportError, "no_such_module_here"),
        (":queue", ValueError, "give a module"),
    ],
)
def test_find_queue_refuses_clearly(
    app: Path, target: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        find_queue(target)


def test_a_worker_runs_the_queue_and_drains_on_sigterm(app: Path) -> None:
    queue = find_queue("cmdapp")
    task = queue.registry.get("add")
    assert task is not None
    handles = queue.enqueue_specs([task.spec((i, i)) for i in range(30)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(app), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-m", "chronos", "worker", "cmdapp", "--workers", "3", "--lease", "5"],
        cwd=app,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        counts = queue.backend.statistics
        wait_until(lambda: counts("default").counts[JobState.SUCCEEDED] == 30, timeout=60)
        assert [h.result(timeout=1) for h in handles] == [2 * i for i in range(30)]
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert child.returncode == 130, err
    assert "1 task(s) of queue 'default'" in err
    assert queue.backend.statistics("default").applied == 30


def test_a_module_that_cannot_be_imported_exits_2(app: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "chronos", "worker", "missing_module_xyz"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "chronos worker: No module named 'missing_module_xyz'" in done.stderr
    assert textwrap.dedent(done.stdout) == ""
