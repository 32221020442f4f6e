"""The ``chronos`` command line: ``chronos demo``, ``chronos --version``, ``chronos --help``.

The demo is written the way any program using chronos would be: it configures structlog
(chronos itself never does), builds a :class:`chronos.WorkerPool`, a
:class:`chronos.Dispatcher` and a :class:`chronos.GracefulShutdown`, hands the jobs of
:mod:`chronos.cli.demo` to the dispatcher, and prints :func:`chronos.cli.report.summarize`'s
report.

Output: log lines and the progress line go to stderr (the progress line only when stderr is
a terminal), the final report to stdout.  Exit status: 0 when every job succeeded, 1 when
some failed or timed out, 130 after Ctrl+C, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from chronos import SYSTEM_CLOCK, Dispatcher, GracefulShutdown, WorkerPool, __version__
from chronos.cli.demo import DemoConfig, make_jobs
from chronos.cli.jobs import add_jobs_command
from chronos.cli.progress import Console, LineLogger, ProgressTicker, render_progress
from chronos.cli.report import DispatchMeter, RunReport, summarize
from chronos.cli.worker_command import add_worker_command

__all__ = ["build_parser", "configure_logging", "main"]

#: The choices of --log-level.
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: The level of each structlog logging method (the filter's view of an event).
_METHOD_LEVELS = {
    **_LEVELS,
    "warn": logging.WARNING,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_DEFAULT_INTERVAL = DemoConfig().interval


# -- argument types: each raises ArgumentTypeError, which argparse turns into exit 2 -------------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _probability(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chronos`` command."""
    parser = argparse.ArgumentParser(
        prog="chronos",
        description="Run jobs concurrently: rate-limited dispatch, per-job timeouts, "
        "retries with backoff, live stats, graceful shutdown.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = DemoConfig()
    demo = commands.add_parser(
        "demo",
        help=f"run the bundled demo: {d.jobs} simulated jobs with timeouts and retries",
        description=f"Dispatch {d.jobs} simulated jobs, one every {d.interval:g} s, to "
        f"{d.workers} worker threads.  Each attempt works {d.min_work:g}-{d.max_work:g} s, "
        f"fails with probability {d.failure_rate:g} and times out after {d.timeout:g} s; "
        f"a failed or timed-out attempt is retried with backoff, {d.max_attempts} attempts "
        "in all.  Every step is logged, a progress line is drawn on a terminal, and a final "
        "report is printed.  Every number is a flag below.  Ctrl+C shuts down gracefully, a "
        "second Ctrl+C at once.",
    )
    demo.add_argument(
        "--jobs",
        type=_count(1),
        default=d.jobs,
        metavar="N",
        help="how many jobs (default: %(default)s)",
    )
    demo.add_argument(
        "--workers",
        type=_count(1),
        default=d.workers,
        metavar="N",
        help="worker threads (default: %(default)s)",
    )
    pace = demo.add_mutually_exclusive_group()
    pace.add_argument(
        "--interval",
        type=_positive,
        metavar="SECONDS",
        help=f"seconds between two dispatches (default: {_DEFAULT_INTERVAL:g}, unless --rate "
        "is given)",
    )
    pace.add_argument(
        "--rate",
        type=_positive,
        metavar="PER_SECOND",
        help="dispatches a second, instead of --interval",
    )
    demo.add_argument(
        "--timeout",
        type=_positive,
        default=d.timeout,
        metavar="SECONDS",
        help="how long each attempt may run (default: %(default)s)",
    )
    demo.add_argument(
        "--failure-rate",
        type=_probability,
        default=d.failure_rate,
        metavar="P",
        help="chance that an attempt fails (default: %(default)s)",
    )
    demo.add_argument(
        "--min-work",
        type=_non_negative,
        default=d.min_work,
        metavar="SECONDS",
        help="shortest work of an attempt (default: %(default)s)",
    )
    demo.add_argument(
        "--max-work",
        type=_non_negative,
        default=d.max_work,
        metavar="SECONDS",
        help="longest work of an attempt (default: %(default)s)",
    )
    demo.add_argument(
        "--max-attempts",
        type=_count(1),
        default=d.max_attempts,
        metavar="N",
        help="attempts per job, the first one included (default: %(default)s)",
    )
    demo.add_argument(
        "--backoff",
        type=_non_negative,
        default=d.backoff,
        metavar="SECONDS",
        help="base of the exponential backoff (full jitter) before a retry (default: %(default)s)",
    )
    demo.add_argument(
        "--grace",
        type=_non_negative,
        default=d.grace,
        metavar="SECONDS",
        help="how long running jobs may finish after Ctrl+C (default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=_count(0),
        default=None,
        metavar="N",
        help="random seed of every draw: the same seed, the same outcomes (default: a "
        "random one, printed at the end)",
    )
    demo.add_argument(
        "--json", action="store_true", help="log JSON lines; print the report as JSON"
    )
    demo.add_argument(
        "--log-level",
        choices=list(_LEVELS),
        default="debug",
        help="lowest level shown (default: %(default)s)",
    )
    demo.add_argument(
        "--no-progress", action="store_true", help="no live progress line, even on a terminal"
    )
    demo.set_defaults(handler=_run_demo, parser=demo)
    add_jobs_command(commands)
    add_worker_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:  # a Ctrl+C outside the graceful shutdown's reach
        return 130
    except BrokenPipeError:  # stdout's reader went away (`chronos demo | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    return status


# -- logging ----------------------------------------------------------------------------------


def _wants_colors(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if isatty is not None else False


def _drop_below(level: int) -> Processor:
    def drop(
        logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if _METHOD_LEVELS.get(method_name, logging.INFO) < level:
            raise structlog.DropEvent
        return event_dict

    return drop


def configure_logging(
    console: Console,
    *,
    json_lines: bool = False,
    level: int = logging.DEBUG,
    meter: DispatchMeter | None = None,
) -> None:
    """Configure structlog for the command line: lines through ``console``.

    Human-readable lines (coloured on a terminal) by default, one JSON object a line with
    ``json_lines``.  Every event reaches ``meter``; those below ``level`` are then dropped.
    """
    processors: list[Processor] = [] if meter is None else [meter]
    processors += [_drop_below(level), structlog.processors.add_log_level]
    if json_lines:
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.dev.ConsoleRenderer(colors=_wants_colors(console.stream)),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=lambda *args: LineLogger(console),
        cache_logger_on_first_use=False,
    )


# -- the demo ---------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> DemoConfig:
    if args.min_work > args.max_work:
        args.parser.error(f"--min-work ({args.min_work}) is above --max-work ({args.max_work})")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    interval = _DEFAULT_INTERVAL if args.interval is None and args.rate is None else args.interval
    return DemoConfig(
        jobs=args.jobs,
        workers=args.workers,
        interval=interval,
        rate=args.rate,
        timeout=args.timeout,
        failure_rate=args.failure_rate,
        min_work=args.min_work,
        max_work=args.max_work,
        max_attempts=args.max_attempts,
        backoff=args.backoff,
        grace=args.grace,
        seed=seed,
    )


def _run_demo(args: argparse.Namespace) -> int:
    config = _config(args)
    random.seed(config.seed)  # tenacity's backoff jitter draws from the global random
    console = Console(sys.stderr, live=False if args.json or args.no_progress else None)
    meter = DispatchMeter()
    configure_logging(console, json_lines=args.json, level=_LEVELS[args.log_level], meter=meter)
    log = structlog.get_logger("chronos.demo")
    log.info(
        "demo.started",
        jobs=config.jobs,
        workers=config.workers,
        interval=config.interval,
        rate=config.rate,
        timeout=config.timeout,
        failure_rate=config.failure_rate,
        work=(config.min_work, config.max_work),
        max_attempts=config.max_attempts,
        seed=config.seed,
    )
    report = _run(config, console, meter, log)
    log.info("demo.finished", exit_status=report.exit_status, seed=config.seed)
    if args.json:
        print(json.dumps({"seed": config.seed, **report.as_dict()}), flush=True)
    else:
        print(report.format())
        print(f"replay this run with: chronos demo --seed {config.seed}", flush=True)
    return report.exit_status


def _run(config: DemoConfig, console: Console, meter: DispatchMeter, log: Any) -> RunReport:
    clock = SYSTEM_CLOCK
    jobs = make_jobs(config)
    pool = WorkerPool(
        config.workers,
        thread_name_prefix="demo",
        timeout=config.timeout,
        retry=config.retry_policy(),
    )
    dispatcher = Dispatcher(pool, interval=config.interval, rate=config.rate, name="dispatcher")
    started = clock.now()

    def progress() -> str:
        elapsed = clock.now() - started
        return render_progress(pool.stats.snapshot(), len(jobs), elapsed, dispatcher.dispatched)

    with (
        pool,
        ProgressTicker(console, progress),
        GracefulShutdown(pool, dispatcher, grace=config.grace) as stop,
    ):
        dispatcher.start()
        for job in jobs:
            dispatcher.submit(job)
        dispatcher.close()
        dispatcher.join()  # returns when every job is done, or at once after Ctrl+C
        if stop.interrupted:
            log.warning(
                "demo.interrupted",
                grace=config.grace,
                running=pool.stats.snapshot().running,
                hint="press Ctrl+C again to stop at once",
            )
        else:
            pool.shutdown()
        # After a signal, leaving this block waits for the pool's graceful shutdown.
    return summarize(
        pool,
        jobs,
        wall_time=clock.now() - started,
        dispatcher=dispatcher,
        meter=meter,
        interrupted=stop.interrupted,
        forced=stop.forced.is_set(),
    )
