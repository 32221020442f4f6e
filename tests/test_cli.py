"""The command line, its console output, and the final report.

In-process: the parser, ``main``'s exit statuses, the structlog configuration, the console
that keeps log lines and the progress line apart, and :mod:`chronos.cli.report`.  Out of
process: ``python -m chronos`` and the ``chronos`` script, and the demo on a pseudo-terminal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

import chronos
from chronos import Job, JobTimeoutError, NonRetryableError, RetryPolicy, WorkerPool
from chronos.cli.app import build_parser, configure_logging, main
from chronos.cli.progress import Console, LineLogger, ProgressTicker, render_progress
from chronos.cli.report import DispatchMeter, JobSummary, RunReport, summarize
from chronos.job import Attempt, AttemptOutcome
from chronos.stats import LatencySummary, StatsSnapshot
from chronos.testing import FakeClock
from tests.conftest import Gate

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0
FAST = [
    "demo", "--jobs", "6", "--workers", "3", "--interval", "0.01", "--min-work", "0.01",
    "--max-work", "0.03", "--timeout", "1", "--backoff", "0.01",
]  # fmt: skip
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def eventually(predicate: Callable[[], bool]) -> bool:
    """Poll ``predicate`` every 5 ms for at most WAIT seconds."""
    tick = threading.Event()
    for _ in range(int(WAIT / 0.005)):
        if predicate():
            return True
        tick.wait(0.005)
    return False


# -- the parser and main() ------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"chronos {chronos.__version__}\n"


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = "--jobs --workers --interval --rate --timeout --failure-rate --min-work --max-work"
    for flag in [*flags.split(), "--max-attempts", "--seed", "--json"]:
        assert flag in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "run the bundled demo" in capsys.readouterr().out


def help_entries(text: str) -> dict[str, str]:
    """The options of a --help text: each flag and its help, on one line."""
    entries: dict[str, str] = {}
    flag = ""
    for line in text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = ""
        if flag:
            entries[flag] = " ".join([entries[flag], line.strip()]).strip()
    return entries


def test_help_shows_each_default_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    entries = help_entries(capsys.readouterr().out)
    assert len(entries) >= 15
    for text in entries.values():
        assert text.count("default") <= 1, text
        assert "(default: None)" not in text and "(default: False)" not in text, text
    assert entries["--jobs"].endswith("how many jobs (default: 15)")
    assert "(default: 0.3, unless --rate is given)" in entries["--interval"]
    assert "(default: 1.0)" in entries["--timeout"]
    assert "(default: a random one" in entries["--seed"]
    assert "default" not in entries["--json"] + entries["--rate"] + entries["--no-progress"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["nope"], "invalid choice: 'nope'"),
        (["demo", "--jobs", "0"], "argument --jobs: must be >= 1, got '0'"),
        (["demo", "--jobs", "x"], "argument --jobs: not a whole number: 'x'"),
        (["demo", "--workers", "1.5"], "argument --workers: not a whole number: '1.5'"),
        (["demo", "--interval", "0"], "argument --interval: must be > 0, got '0'"),
        (["demo", "--rate", "-2"], "argument --rate: must be > 0, got '-2'"),
        (["demo", "--interval", "1", "--rate", "2"], "not allowed with argument --interval"),
        (["demo", "--timeout", "nan"], "argument --timeout: must be finite, got 'nan'"),
        (["demo", "--failure-rate", "1.5"], "must be between 0 and 1, got '1.5'"),
        (["demo", "--min-work", "-1"], "argument --min-work: must be >= 0, got '-1'"),
        (["demo", "--min-work", "2", "--max-work", "1"], "--min-work (2.0) is above --max-work"),
        (["demo", "--seed", "-1"], "argument --seed: must be >= 0, got '-1'"),
        (["demo", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: chronos")
    assert message in err


def test_defaults_match_the_scenario() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.jobs, args.workers, args.interval, args.rate) == (15, 4, None, None)
    assert (args.timeout, args.failure_rate, args.min_work, args.max_work) == (1.0, 0.2, 0.1, 1.0)
    assert (args.max_attempts, args.seed, args.json) == (3, None, False)


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert not structlog.is_configured()  # importing chronos configured nothing
    status = main([*FAST, "--seed", "11"])
    out, err = capsys.readouterr()
    assert "FINAL REPORT" in out and "chronos demo --seed 11" in out
    assert status == (0 if "every job succeeded" in out else 1)
    assert " demo.started " in err and " demo.finished " in err
    assert " job.dispatched " in err  # debug events are shown by default


def test_demo_with_rate_and_no_seed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a if a != "--interval" else "--rate" for a in FAST]
    argv[argv.index("--rate") + 1] = "200"
    status = main([*argv, "--failure-rate", "0", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert status == 0 == report["exit_status"]
    assert report["target_rate"] == 200.0 and isinstance(report["seed"], int)


# -- structlog configuration ----------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_level_filter_and_meter() -> None:
    stream = io.StringIO()
    meter = DispatchMeter(FakeClock())
    configure_logging(Console(stream), json_lines=True, level=logging.INFO, meter=meter)
    log = structlog.get_logger("test")
    log.debug("job.dispatched", job_id=1)
    log.info("hello", n=1)
    log.warning("careful")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("hello", "info"),
        ("careful", "warning"),
    ]
    assert lines[0]["n"] == 1 and lines[0]["timestamp"].endswith("Z")
    assert meter.count == 1  # the meter saw the debug event the filter dropped


def test_level_filter_knows_every_method() -> None:
    stream = io.StringIO()
    configure_logging(Console(stream), json_lines=True, level=logging.ERROR)
    log = structlog.get_logger("test")
    log.warning("dropped")
    log.error("error")
    log.critical("critical")
    log.exception("exception")
    levels = [json.loads(line)["level"] for line in stream.getvalue().splitlines()]
    assert levels == ["error", "critical", "error"]


def test_console_lines_plain_when_piped_coloured_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    piped, terminal = io.StringIO(), FakeTerminal()
    for stream in (piped, terminal):
        configure_logging(Console(stream, live=False))
        structlog.get_logger().info("job.succeeded", job_id=3)
    assert "job.succeeded" in piped.getvalue() and "\x1b" not in piped.getvalue()
    assert "job_id=3" in piped.getvalue()
    assert ANSI.search(terminal.getvalue())
    monkeypatch.setenv("NO_COLOR", "1")
    configure_logging(Console(terminal := FakeTerminal()))
    structlog.get_logger().info("x")
    assert "\x1b[3" not in terminal.getvalue()


def test_pool_events_go_through_the_cli_logging() -> None:
    stream = io.StringIO()
    configure_logging(Console(stream), json_lines=True)
    with WorkerPool(1) as pool:
        pool.submit(int, "7").result(WAIT)
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events[:2] == ["job.started", "job.succeeded"]


# -- the console: log lines and the progress line ---------------------------------------------


def visible_rows(raw: str) -> tuple[list[str], str]:
    """What a terminal shows: each finished row, and the unfinished last one."""
    rows = raw.replace("\r\n", "\n").split("\n")
    shown = [row.rsplit("\r\x1b[2K", 1)[-1] for row in rows]
    return shown[:-1], shown[-1]


def test_log_lines_never_garble_the_progress_line() -> None:
    terminal = FakeTerminal()
    console = Console(terminal)
    assert console.live

    def log(n: int) -> None:
        for i in range(200):
            console.write_line(f"line {n}-{i}")

    def progress() -> None:
        for i in range(200):
            console.set_status(f"progress {i}")

    threads = [threading.Thread(target=log, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=progress))
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    rows, last = visible_rows(terminal.getvalue())
    assert sorted(rows) == sorted(f"line {n}-{i}" for n in range(3) for i in range(200))
    assert last == "progress 199"
    console.clear_status()
    assert visible_rows(terminal.getvalue())[1] == ""


def test_no_progress_line_when_piped() -> None:
    stream = io.StringIO()
    console = Console(stream)
    assert not console.live
    console.set_status("progress")
    console.write_line("a log line")
    with ProgressTicker(console, lambda: "progress"):
        pass
    assert stream.getvalue() == "a log line\n"


def test_progress_ticker_draws_then_erases() -> None:
    terminal = FakeTerminal()
    console = Console(terminal)
    drawn = threading.Event()

    def render() -> str:
        drawn.set()
        return "3/5 done"

    with ProgressTicker(console, render, every=0.01):
        assert drawn.wait(WAIT)
    assert "\r\x1b[2K3/5 done" in terminal.getvalue()
    assert visible_rows(terminal.getvalue())[1] == ""


def test_line_logger_has_every_level_method() -> None:
    stream = io.StringIO()
    logger = LineLogger(Console(stream))
    for name in ("msg", "debug", "info", "warning", "error", "critical", "exception"):
        getattr(logger, name)(name)
    assert stream.getvalue().split() == [
        "msg",
        "debug",
        "info",
        "warning",
        "error",
        "critical",
        "exception",
    ]


def test_render_progress() -> None:
    with WorkerPool(1) as pool:
        pool.submit(int, "1").result(WAIT)
    text = render_progress(pool.stats.snapshot(), total=4, elapsed=2.0, dispatched=3)
    assert text.startswith("[#####---------------] 1/4 done | 1 ok | 0 failed | 0 timed out")
    assert "0 retrying | 1.5 dispatches/s | 2.0s" in text


# -- the report -------------------------------------------------------------------------------


def fail() -> None:
    raise NonRetryableError("no luck")


def flaky() -> None:
    raise ValueError("try later")


def test_report_lists_what_did_not_succeed(gate: Gate) -> None:
    slow_retry = RetryPolicy(max_attempts=2, backoff=60.0, max_backoff=60.0, jitter=False)
    pool = WorkerPool(1, retry=RetryPolicy(max_attempts=1))
    ok = pool.submit(int, "5")
    failed = pool.submit(fail)
    retrying = pool.submit_job(Job(flaky, name="flaky", retry=slow_retry))
    assert ok.result(WAIT) == 5 and failed.exception(WAIT) is not None
    assert eventually(lambda: pool.stats.snapshot().waiting_to_retry == 1)
    blocker = pool.submit(gate.wait)
    assert gate.entered(1)
    queued = pool.submit(int, "6")
    never = Job(int, ("7",), name="never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.open()
    assert blocker.result(WAIT) is None
    pool.shutdown()
    report = summarize(pool, [ok, failed, retrying, blocker, queued, never], wall_time=1.25)
    assert (report.jobs, report.not_submitted, report.exit_status) == (6, 1, 1)
    s = report.stats
    assert (s.submitted, s.succeeded, s.failed, s.cancelled) == (5, 2, 1, 2)
    details = {j.name: j.detail for j in report.unsuccessful}
    assert details == {
        "fail": "failed after 1 attempt",
        "flaky": "cancelled while waiting to retry after 1 attempt",
        "int": "cancelled before it ran",
        "never": "never submitted",
    }
    text = report.format()
    assert "5 submitted: 2 succeeded, 1 failed, 0 timed out, 2 cancelled" in text
    assert "1 never submitted" in text and "wall time   1.25 s" in text
    assert "failed after 1 attempt: NonRetryableError('no luck')" in text
    assert "n/a (no dispatcher)" in text
    assert json.loads(json.dumps(report.as_dict()))["unsuccessful"][0]["name"] == "fail"
    assert "... and 2 more" in report.format(max_listed=2)


def snapshot(**counts: Any) -> StatsSnapshot:
    """A StatsSnapshot of a pool that ran nothing, with ``counts`` changed."""
    with WorkerPool(1) as pool:
        pass
    return dataclasses.replace(pool.stats.snapshot(), **counts)


def report_of(stats: StatsSnapshot, **fields: Any) -> str:
    return RunReport(
        stats=stats, wall_time=1.0, jobs=0, not_submitted=0, unsuccessful=(), **fields
    ).format()


def test_report_counts_are_pluralised() -> None:
    one = snapshot(
        submitted=1, succeeded=1, attempts=2, retries=1, attempt_timeouts=1,
        run_time=LatencySummary.of(1, [0.5], 0.5), queue_wait=LatencySummary.of(1, [0.0], 0.0),
    )  # fmt: skip
    text = report_of(one, dispatched=1)
    assert "attempts    2 (1 retry)\n" in text
    assert "timeouts    1 attempt timed out\n" in text
    assert "dispatch    1 dispatch\n" in text
    assert "(1 sample)" in text and "samples" not in text
    many = report_of(snapshot(attempts=5, retries=2, attempt_timeouts=0), dispatched=0)
    assert "(2 retries)" in many and "0 attempts timed out" in many and "0 dispatches" in many
    assert "(0 retries)" in report_of(snapshot(attempts=1, retries=0))


@pytest.mark.parametrize(
    ("achieved", "limit", "shown"),
    [
        (20 / 5.995, 1 / 0.3, "3.33/s achieved (limit 3.33/s)"),  # 3.336: not "3.34"
        (1 / 0.3, 1 / 0.3, "3.33/s achieved (limit 3.33/s)"),
        (199.999, 200.0, "199.99/s achieved (limit 200.00/s)"),
        (2.0, 2.0, "2.00/s achieved (limit 2.00/s)"),
        (0.0499999, 0.05, "0.0499/s achieved (limit 0.0500/s)"),
        (1.5, None, "1.50/s achieved\n"),
    ],
)
def test_report_never_rounds_the_achieved_rate_above_the_limit(
    achieved: float, limit: float | None, shown: str
) -> None:
    text = report_of(snapshot(), dispatched=21, dispatch_rate=achieved, target_rate=limit)
    assert f"dispatch    21 dispatches, {shown}" in text


def test_report_counts_as_abandoned_only_threads_still_running() -> None:
    none_left = report_of(snapshot(abandoned_threads=0, abandoned_threads_total=3))
    assert (
        "threads     0 abandoned: still running an attempt that timed out or was cancelled\n"
        in none_left
    )
    assert "3 left mid-attempt by a timeout or shutdown, 3 of them since returned" in none_left
    one_left = report_of(snapshot(abandoned_threads=1, abandoned_threads_total=3))
    assert "threads     1 abandoned: still running" in one_left
    assert "3 left mid-attempt by a timeout or shutdown, 2 of them since returned" in one_left
    never = report_of(snapshot())
    assert "threads     0 abandoned: still running" in never and "left mid-attempt" not in never


def timed_out_job(number: int, error: BaseException) -> Job[int]:
    job = Job(int, name=f"job-{number}")
    job.attempts.append(
        Attempt(number, "w", started=10.0, deadline=11.0, ended=11.0,
                outcome=AttemptOutcome.TIMED_OUT, error=error)
    )  # fmt: skip
    return job


def test_report_words_every_timeout_alike(gate: Gate) -> None:
    """The pool's timer and a job stepping out at its deadline raise different messages."""
    engine = timed_out_job(1, JobTimeoutError("job #1 (job-1) attempt 1 exceeded its 1s timeout"))
    cooperative = timed_out_job(1, JobTimeoutError("job #2 attempt 1 timed out"))
    demo = timed_out_job(1, JobTimeoutError("Payload-3: attempt 1 passed its deadline"))
    errors = {JobSummary.of(job).error for job in (engine, cooperative, demo)}
    assert errors == {"JobTimeoutError('attempt 1 exceeded its 1 s timeout')"}
    # The same in a real run; a job's own TimeoutError is a failure, worded as raised.
    with WorkerPool(2, timeout=0.05, retry=RetryPolicy(max_attempts=1)) as pool:
        hung = pool.submit(gate.wait)
        assert isinstance(hung.exception(WAIT), JobTimeoutError)
        gate.open()
        own = pool.submit(raise_timeout)
        assert isinstance(own.exception(WAIT), TimeoutError)
    text = summarize(pool, [hung, own], wall_time=1.0).format()
    assert (
        "timed out after 1 attempt: JobTimeoutError('attempt 1 exceeded its 0.05 s timeout')"
        in text
    )
    assert "failed after 1 attempt: TimeoutError('socket read timed out')" in text


def raise_timeout() -> None:
    raise TimeoutError("socket read timed out")


def test_report_exit_status() -> None:
    with WorkerPool(1) as pool:
        pool.submit(int, "1").result(WAIT)
    report = summarize(pool, wall_time=0.5)
    assert report.all_succeeded and report.exit_status == 0
    assert "every job succeeded" in report.format()
    interrupted = summarize(pool, wall_time=0.5, forced=True)
    assert interrupted.interrupted and interrupted.exit_status == 130
    assert "yes, twice" in interrupted.format()
    assert isinstance(interrupted, RunReport)


def test_dispatch_meter() -> None:
    clock = FakeClock()
    meter = DispatchMeter(clock)
    event = {"event": "job.dispatched"}
    assert meter(None, "debug", event) is event
    assert meter.rate is None
    for _ in range(2):
        clock.advance(0.5)
        meter(None, "debug", {"event": "job.dispatched"})
    meter(None, "info", {"event": "job.succeeded"})
    assert meter.count == 3 and meter.rate == 2.0


# -- out of process ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_python_dash_m_and_console_script() -> None:
    commands = [[sys.executable, "-m", "chronos", "--version"]]
    script = shutil.which("chronos", path=str(Path(sys.executable).parent))
    if script is not None:
        commands.append([script, "--version"])
    for command in commands:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=WAIT, cwd=ROOT, env=child_env()
        )
        assert (proc.returncode, proc.stdout) == (0, f"chronos {chronos.__version__}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "chronos", "demo", "--jobs", "0"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=ROOT,
        env=child_env(),
    )
    assert proc.returncode == 2 and "argument --jobs: must be >= 1" in proc.stderr


def test_demo_on_a_terminal_draws_progress_between_log_lines() -> None:
    """With stderr on a pseudo-terminal: colours, a progress line, and no garbled row."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chronos", *FAST, "--seed", "2"],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=child_env(),
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        reader.join(WAIT)
        os.close(master)
    assert proc.returncode in (0, 1)
    assert b"FINAL REPORT" in out
    raw = b"".join(chunks).decode()
    assert "done |" in raw and ANSI.search(raw)
    rows, last = visible_rows(raw)
    assert last == ""  # the progress line was erased before the end
    for row in rows:
        assert re.match(r"\d\d:\d\d:\d\d\.\d+ \[", ANSI.sub("", row)), row
