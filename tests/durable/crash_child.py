"""A worker process on a SQLite queue file, for tests/durable/test_sqlite.py.

    python crash_child.py work PATH OWNER    "ready"; waits for "go" on stdin; claims and
                                             completes until the queue is empty; prints a
                                             JSON summary (ids claimed, answers)
    python crash_child.py churn PATH CHILD   enqueues batches of BATCH jobs, claims,
                                             finishes (every kind), cancels and recovers,
                                             for ever; "batch N" after each enqueue commits
    python crash_child.py hold PATH LEASE    claims one job, prints "claimed ID TOKEN",
                                             then hangs (to be killed)
    python crash_child.py fork PATH          forks; parent and child both use the backend;
                                             "ok" when both did, on their own connections

Synchronise on the lines it prints; never on time.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable

from chronos.backends.durable import Finish, FinishKind
from chronos.backends.sqlite import SQLiteBackend
from chronos.retry import RetryPolicy
from chronos.spec import JobSpec

#: Jobs per enqueue in "churn" mode (a batch is one transaction: all or nothing).
BATCH = 4


def say(line: str) -> None:
    print(line, flush=True)


def work(path: str, owner: str) -> None:
    backend = SQLiteBackend(path)
    say("ready")
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected go")
    claimed: list[str] = []
    answers: dict[str, int] = {}
    while batch := backend.claim("default", 16, 60.0, owner):
        claimed.extend(c.id for c in batch)
        finishes = [Finish(c.id, c.token, FinishKind.COMPLETE, result=owner) for c in batch]
        for answer in backend.finish(finishes):
            answers[answer] = answers.get(answer, 0) + 1
    backend.close()
    say(json.dumps({"claimed": claimed, "answers": answers}))


def churn(path: str, child: str) -> None:
    backend = SQLiteBackend(path)
    kinds = list(FinishKind)
    retry = RetryPolicy(max_attempts=2)
    batch = 0
    while True:
        specs = [
            JobSpec("churn", kwargs={"child": int(child), "batch": batch}, retry=retry)
            for _ in range(BATCH)
        ]
        backend.enqueue(specs)
        say(f"batch {batch}")
        claims = backend.claim("default", 6, 0.2, f"churn-{child}")
        finishes = [
            Finish(c.id, c.token, kinds[(batch + i) % len(kinds)], result=i, delay=0.01)
            for i, c in enumerate(claims)
        ]
        backend.finish(finishes[1:])  # the first stays running, for recover to find
        if batch % 5 == 0:
            backend.cancel([c.id for c in claims[:1]])
        backend.recover("default")
        batch += 1


def hold(path: str, lease: str) -> None:
    backend = SQLiteBackend(path)
    (claimed,) = backend.claim("default", 1, float(lease), "doomed")
    say(f"claimed {claimed.id} {claimed.token}")
    threading.Event().wait()  # until killed


def fork(path: str) -> None:
    backend = SQLiteBackend(path)
    backend.enqueue([JobSpec("before-fork")])
    parent_conn = backend._connections.get()
    pid = os.fork()
    if pid == 0:  # the child: its own connection, the parent's left alone
        ok = False
        try:
            ok = backend._connections.get() is not parent_conn
            backend.enqueue([JobSpec("in-child")])
            claims = backend.claim("default", 10, 30.0, "child")
            done = [Finish(c.id, c.token, FinishKind.COMPLETE) for c in claims]
            ok = ok and len(claims) == 2 and set(backend.finish(done)) == {"applied"}
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    assert backend._connections.get() is parent_conn
    backend.enqueue([JobSpec("after-fork")])
    (claimed,) = backend.claim("default", 10, 30.0, "parent")
    assert claimed.spec.task == "after-fork"
    assert backend.finish([Finish(claimed.id, claimed.token, FinishKind.COMPLETE)]) == ["applied"]
    (check,) = parent_conn.execute("PRAGMA integrity_check").fetchone()
    assert check == "ok", check
    backend.close()
    say("ok")


if __name__ == "__main__":
    modes: dict[str, Callable[..., None]] = {
        "work": work,
        "churn": churn,
        "hold": hold,
        "fork": fork,
    }
    modes[sys.argv[1]](*sys.argv[2:])
