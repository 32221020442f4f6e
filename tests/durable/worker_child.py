"""A worker process on a SQLite queue file, for tests/durable/test_worker.py.

    python worker_child.py PATH OUT GRACE [LEASE]

Registers the tasks ``record`` (appends ``pid id token attempt`` to the file OUT, returns
its argument), ``slow`` (waits its argument's seconds, then records) and ``hang`` (blocks
for up to a minute), configures structlog to print the
Worker's events as JSON lines on stdout, then runs ``Worker(...).run()`` until SIGTERM
(the first drains with GRACE seconds, a second stops at once) and exits with the status
it returned.
Synchronise on the lines it prints (``worker.started`` comes once the signal handlers are
in place, ``worker.stopping`` once a drain began); never on time.
"""

from __future__ import annotations

import os
import sys
import threading

import structlog
from structlog.typing import EventDict

from chronos.tasks import Queue
from chronos.worker import Worker, current_claim


def only_worker_events(logger: object, method: str, event: EventDict) -> EventDict:
    """Keep the Worker's events (the pool's per-job lines would fill the pipe)."""
    if not str(event.get("event", "")).startswith("worker."):
        raise structlog.DropEvent
    return event


def main(path: str, out: str, grace: str, lease: str = "30") -> int:
    structlog.configure(
        processors=[
            only_worker_events,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )
    queue = Queue(f"sqlite:///{path}")
    lock = threading.Lock()

    @queue.task(name="record")
    def record(i: int) -> int:
        claim = current_claim()
        assert claim is not None
        with lock, open(out, "a", encoding="utf-8") as file:
            file.write(f"{os.getpid()} {claim.id} {claim.token} {claim.attempt}\n")
        return i

    @queue.task(name="slow")
    def slow(seconds: float) -> float:
        threading.Event().wait(seconds)
        return record(0) + seconds

    @queue.task(name="hang")
    def hang() -> None:
        threading.Event().wait(60)

    status = Worker(queue, workers=4, lease=float(lease), grace=float(grace)).run()
    queue.close()
    return status


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
