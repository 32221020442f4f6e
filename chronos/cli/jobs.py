"""``chronos jobs list|show|cancel|retry|purge``: inspect and act on a durable queue.

The queue is named by ``--queue URL`` (or the ``CHRONOS_QUEUE`` environment variable) and
``--name`` (default ``default``).  No task code is imported: the store is read and changed
directly.  Exit status: 0 done, 1 an id was not found (the others were acted on), 2 bad
arguments or a store that cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from chronos.backends.durable import DurableBackend, JobRecord, JobState
from chronos.backends.urls import open_backend

__all__ = ["add_jobs_command"]

_STATES = [state.value for state in JobState]


def add_jobs_command(commands: Any) -> None:
    """Add the ``jobs`` command to the ``chronos`` parser's subcommands."""
    jobs = commands.add_parser(
        "jobs",
        help="inspect and act on a durable queue (list, show, cancel, retry, purge)",
        description="Inspect and act on the jobs of a durable queue, without its task code.",
    )
    jobs.add_argument(
        "--queue",
        default=os.environ.get("CHRONOS_QUEUE"),
        metavar="URL",
        help="the queue's URL, e.g. sqlite:///jobs.db (default: $CHRONOS_QUEUE)",
    )
    jobs.add_argument("--name", default="default", help="the queue's name (default: %(default)s)")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list jobs, newest last")
    listing.add_argument("--state", choices=_STATES, help="only jobs in this state")
    listing.add_argument("--limit", type=int, default=50, help="at most this many")
    listing.add_argument("--after", metavar="ID", help="start after this id (the next page)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="everything the store knows about jobs")
    show.add_argument("ids", nargs="+", metavar="ID")
    cancel = actions.add_parser("cancel", help="cancel jobs (running ones at their next look)")
    cancel.add_argument("ids", nargs="+", metavar="ID")
    retry = actions.add_parser("retry", help="requeue dead or cancelled jobs")
    retry.add_argument("ids", nargs="+", metavar="ID")
    purge = actions.add_parser("purge", help="delete finished jobs older than a given age")
    purge.add_argument(
        "--older-than", type=float, required=True, metavar="SECONDS", help="age in seconds"
    )
    stats = actions.add_parser("stats", help="counts per state and the store's counters")
    stats.add_argument("--json", action="store_true", help="as JSON")
    jobs.set_defaults(handler=run_jobs_command, parser=jobs)


def run_jobs_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if not args.queue:
        args.parser.error("--queue URL is required (or set CHRONOS_QUEUE)")
    try:
        backend = open_backend(args.queue)
    except (TypeError, ValueError, OSError) as exc:
        print(f"chronos jobs: {exc}", file=sys.stderr)
        return 2
    try:
        return _act(backend, args, out)
    finally:
        backend.close()


def _act(backend: DurableBackend, args: argparse.Namespace, out: TextIO) -> int:
    action = args.action
    if action == "list":
        state = None if args.state is None else JobState(args.state)
        records = backend.list_jobs(args.name, state, args.limit, args.after)
        for record in records:
            if args.json:
                print(json.dumps(_as_dict(record)), file=out)
            else:
                print(_line(record), file=out)
        return 0
    if action == "stats":
        s = backend.statistics(args.name)
        data = {
            "queue": s.queue,
            "kind": s.kind,
            "counts": {state.value: count for state, count in s.counts.items()},
            "applied": s.applied,
            "duplicates": s.duplicates,
            "fenced": s.fenced,
            "recovered": s.recovered,
            "deduplicated": s.deduplicated,
        }
        if args.json:
            print(json.dumps(data), file=out)
        else:
            for key, value in data.items():
                print(f"{key:<13} {value}", file=out)
        return 0
    if action == "purge":
        print(f"purged {backend.purge(args.older_than)} job(s)", file=out)
        return 0
    return _by_id(backend, action, args.ids, out)


def _by_id(backend: DurableBackend, action: str, ids: Sequence[str], out: TextIO) -> int:
    missing = [job_id for job_id in ids if backend.get(job_id) is None]
    for job_id in missing:
        print(f"chronos jobs: no job {job_id}", file=sys.stderr)
    present = [job_id for job_id in ids if job_id not in missing]
    if action == "show":
        for job_id in present:
            record = backend.get(job_id)
            if record is not None:
                print(json.dumps(_as_dict(record), indent=2), file=out)
    elif action == "cancel" and present:
        for job_id, state in zip(present, backend.cancel(present), strict=True):
            said = "cancel requested (it runs)" if state is JobState.RUNNING else str(state)
            print(f"{job_id} {said}", file=out)
    elif action == "retry" and present:
        print(f"requeued {backend.requeue(present)} of {len(present)} job(s)", file=out)
    return 1 if missing else 0


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _as_dict(record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "queue": record.queue,
        "state": record.state.value,
        "task": record.spec.task,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
        "token": record.token,
        "spec": record.spec.to_dict(),
        "result": record.result,
        "error": record.error,
        "enqueued_at": _when(record.enqueued_at),
        "run_at": _when(record.run_at),
        "lease_until": _when(record.lease_until),
        "finished_at": _when(record.finished_at),
        "cancel_requested": record.cancel_requested,
        "owner": record.owner,
    }


def _line(record: JobRecord) -> str:
    return (
        f"{record.id}  {record.state.value:<9}  {record.spec.task:<30}  "
        f"attempt {record.attempt}/{record.max_attempts}  enqueued {_when(record.enqueued_at)}"
    )
