"""``chronos worker MODULE[:ATTR]``: run the jobs of a durable queue until told to stop.

``MODULE`` is imported (the working directory is on the path, as ``python -m`` has it),
which registers its tasks; ``ATTR`` names its :class:`chronos.Queue` (default: the one
Queue among the module's globals).  The worker claims, runs and finishes jobs until the
first SIGTERM or Ctrl+C, which drains (no more claims; unstarted claims released; running
jobs get ``--grace`` seconds; heartbeats go on); a second one stops at once.  Exit status:
0 stopped cleanly, 130 after a signal (as ``chronos demo``), 2 for bad arguments (a module
that cannot be imported, no queue found).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from chronos.tasks import Queue

__all__ = ["add_worker_command", "find_queue"]


def add_worker_command(commands: Any) -> None:
    """Add the ``worker`` command to the ``chronos`` parser's subcommands."""
    worker = commands.add_parser(
        "worker",
        help="run the jobs of a durable queue (MODULE[:ATTR] defines it and its tasks)",
        description="Import MODULE (which registers the tasks of its chronos.Queue) and run "
        "that queue's jobs until SIGTERM or Ctrl+C (a second one stops at once).",
    )
    worker.add_argument("target", metavar="MODULE[:ATTR]", help="e.g. myapp.tasks:queue")
    worker.add_argument("--workers", type=int, default=8, help="threads (default: %(default)s)")
    worker.add_argument("--rate", type=float, help="jobs started per second at most")
    worker.add_argument(
        "--lease", type=float, default=30.0, help="seconds per lease (default: %(default)s)"
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds running jobs get when stopping (default: %(default)s)",
    )
    worker.add_argument(
        "--result-ttl",
        type=float,
        default=7 * 24 * 3600.0,
        metavar="SECONDS",
        help="purge finished jobs older than this (default: a week)",
    )
    worker.set_defaults(handler=run_worker_command, parser=worker)


def find_queue(target: str) -> Queue:
    """The Queue that ``MODULE[:ATTR]`` names (importing MODULE).

    Raises:
        ValueError: the module has no such attribute, it is not a Queue, or ATTR is left
            out and the module has no Queue or several.
        ImportError: the module cannot be imported (as Python raises it).
    """
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise ValueError(f"give a module: MODULE[:ATTR], got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Queue):
            kind = "nothing" if found is None else type(found).__name__
            raise ValueError(f"{module_name}:{attribute} is {kind}, not a chronos.Queue")
        return found
    queues = {id(v): v for v in vars(module).values() if isinstance(v, Queue)}
    if len(queues) != 1:
        what = "no chronos.Queue" if not queues else f"{len(queues)} chronos.Queues"
        raise ValueError(f"{module_name} has {what}: name one as {module_name}:ATTR")
    return next(iter(queues.values()))


def run_worker_command(args: argparse.Namespace) -> int:
    from chronos.worker import Worker  # the worker's threads and signals: only when asked

    try:
        queue = find_queue(args.target)
        worker = Worker(
            queue,
            workers=args.workers,
            rate=args.rate,
            lease=args.lease,
            grace=args.grace,
            result_ttl=args.result_ttl,
        )
    except (ImportError, ValueError, TypeError) as exc:
        print(f"chronos worker: {exc}", file=sys.stderr)
        return 2
    print(
        f"chronos worker: {len(queue.registry)} task(s) of queue {queue.name!r} at "
        f"{queue.url}, {args.workers} workers; owner {worker.owner}",
        file=sys.stderr,
        flush=True,
    )
    return worker.run()
