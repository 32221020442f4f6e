"""A Python script in a child process, read line by line with deadlines (for signal and exit
tests): synchronise on the lines it prints, never on sleeps."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Upper bound (s) for any one wait on a child: far above what a healthy run needs.
CHILD_TIMEOUT = 20.0


class Child:
    """A Python script running in a child process, read line by line with a deadline."""

    def __init__(self, script: Path, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._pending = b""  # stdout read but not yet split into lines

    def expect(self, wanted: str, timeout: float = CHILD_TIMEOUT) -> None:
        """Read stdout until the line ``wanted``; fail (and kill the child) on EOF or timeout."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._pending:
                    raw, self._pending = self._pending.split(b"\n", 1)
                    if raw.decode() == wanted:
                        return
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self._fail(f"no {wanted!r} line from the child within {timeout} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._fail(f"the child closed its stdout before printing {wanted!r}")
                self._pending += chunk

    def finish(self, timeout: float = CHILD_TIMEOUT) -> tuple[int, str, str]:
        """Wait for the exit: (returncode, the rest of stdout, stderr); kill it on timeout."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._fail(f"the child did not exit within {timeout} s")
        return self.proc.returncode, (self._pending + out).decode(), err.decode()

    def kill(self) -> tuple[str, str]:
        """Kill the child if it runs; its remaining stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        out, err = self.proc.communicate(timeout=CHILD_TIMEOUT)
        return (self._pending + out).decode(), err.decode()

    def _fail(self, message: str) -> NoReturn:
        out, err = self.kill()
        pytest.fail(f"{message}\n--- stdout ---\n{out}\n--- stderr ---\n{err}")


Spawn = Callable[..., Child]

#: Source of ``settle(exclude, timeout)`` for child scripts (which import threading and time):
#: join every other thread but those named in ``exclude``, bounded; the names still alive.
SETTLE_SOURCE = '''\
def settle(exclude, timeout):
    """Join every other thread but ``exclude`` (bounded); the names of those still alive."""
    deadline = time.monotonic() + timeout
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and thread.name not in exclude:
            thread.join(max(0.0, deadline - time.monotonic()))
    return sorted(t.name for t in threading.enumerate() if t is not main and t.is_alive())
'''


def assert_clean_stderr(stderr: str) -> None:
    """No traceback, no ignored exception, no fatal error, no chronos internal error."""
    for marker in ("Traceback", "Exception ignored", "Fatal Python error", "internal_error"):
        assert marker not in stderr, stderr
