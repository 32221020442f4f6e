"""The bundled demo: its scenario in-process, and ``python -m chronos demo`` as a subprocess.

Subprocess tests use small timings, bound every wait, and synchronise with the child by
reading its log lines (never by sleeping).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import wait
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest

from chronos import JobStatus, WorkerPool, current_job
from chronos.cli.demo import (
    DemoConfig,
    SimulatedFailure,
    expected_outcome,
    make_jobs,
    plan_attempt,
    process,
)

ROOT = Path(__file__).resolve().parent.parent
#: Small timings: a 12-job run takes well under a second of work.
FAST = [
    "--jobs", "12", "--workers", "4", "--interval", "0.01", "--min-work", "0.01",
    "--max-work", "0.05", "--timeout", "1", "--failure-rate", "0.4", "--backoff", "0.01",
]  # fmt: skip
FAST_CONFIG = DemoConfig(
    jobs=12,
    workers=4,
    interval=0.01,
    min_work=0.01,
    max_work=0.05,
    timeout=1.0,
    failure_rate=0.4,
    backoff=0.01,
)
WAIT = 30.0  # the bound on every wait for a child; a normal run takes about a second


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chronos", "demo", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=ROOT,
        env=child_env(),
        check=False,
    )


# -- the report, parsed back ----------------------------------------------------------------


def parse_report(text: str) -> dict[str, Any]:
    """The numbers of the text report."""
    jobs = re.search(
        r"^jobs +(\d+) submitted: (\d+) succeeded, (\d+) failed, (\d+) timed out, "
        r"(\d+) cancelled$",
        text,
        re.MULTILINE,
    )
    attempts = re.search(r"^attempts +(\d+) \((\d+) retr(?:y|ies)\)$", text, re.MULTILINE)
    timeouts = re.search(r"^timeouts +(\d+) attempts? timed out$", text, re.MULTILINE)
    dispatch = re.search(r"^dispatch +(\d+) dispatch(?:es)?\b", text, re.MULTILINE)
    assert jobs and attempts and timeouts and dispatch, text
    submitted, succeeded, failed, timed_out, cancelled = map(int, jobs.groups())
    listed = re.findall(r"^  #\d+ +(job-\d+) +(.*)$", text, re.MULTILINE)
    return {
        "submitted": submitted,
        "succeeded": succeeded,
        "failed": failed,
        "timed_out": timed_out,
        "cancelled": cancelled,
        "attempts": int(attempts.group(1)),
        "retries": int(attempts.group(2)),
        "attempt_timeouts": int(timeouts.group(1)),
        "dispatched": int(dispatch.group(1)),
        "listed": dict(listed),
        "interrupted": re.search(r"^interrupted ", text, re.MULTILINE) is not None,
    }


def events(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if f" {name} " in line]


# -- the scenario, in-process ---------------------------------------------------------------


def test_defaults_are_the_demo_scenario() -> None:
    c = DemoConfig()
    assert (c.jobs, c.workers, c.interval, c.rate, c.timeout) == (15, 4, 0.3, None, 1.0)
    assert (c.failure_rate, c.min_work, c.max_work, c.max_attempts) == (0.2, 0.1, 1.0, 3)
    jobs = make_jobs(c)
    assert [j.name for j in jobs[:2]] == ["job-1", "job-2"]
    assert jobs[0].args[0] == "Payload-1" and len(jobs) == 15


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 0}, "workers must be >= 1"),
        ({"rate": 2.0}, "give interval or rate, not both"),
        ({"timeout": 0.0}, "timeout must be a finite number > 0"),
        ({"failure_rate": 1.5}, "failure_rate must be between 0 and 1"),
        ({"min_work": 2.0}, "need 0 <= min_work <= max_work"),
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"grace": -1.0}, "grace must be >= 0"),
    ],
)
def test_config_rejects_bad_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        replace(DemoConfig(), **changes)


def test_plans_depend_on_seed_job_and_attempt_only() -> None:
    config = DemoConfig(seed=42)
    assert plan_attempt(config, 3, 1) == plan_attempt(DemoConfig(seed=42, jobs=99), 3, 1)
    plans = {plan_attempt(config, n, a) for n in range(1, 6) for a in range(1, 4)}
    assert len(plans) == 15  # distinct draws
    assert plan_attempt(config, 3, 1) != plan_attempt(replace(config, seed=43), 3, 1)
    for plan in plans:
        assert config.min_work <= plan.work <= config.max_work


def test_expected_outcome_follows_the_draws() -> None:
    never = DemoConfig(failure_rate=0.0)
    always = DemoConfig(failure_rate=1.0, max_attempts=2)
    too_slow = DemoConfig(min_work=0.5, max_work=0.6, timeout=0.4)
    assert expected_outcome(never, 1) == (JobStatus.SUCCEEDED, 1)
    assert expected_outcome(always, 1) == (JobStatus.FAILED, 2)
    assert expected_outcome(too_slow, 1) == (JobStatus.TIMED_OUT, 3)


def test_process_needs_a_pool() -> None:
    with pytest.raises(RuntimeError, match="outside a job run by a chronos WorkerPool"):
        process("Payload-1", 1, DemoConfig())


def test_jobs_end_as_predicted_timeouts_included() -> None:
    """In a pool, every job ends as :func:`expected_outcome` says.

    Attempts whose work ends within 30 ms of the timeout may land either side of it, so
    jobs with such an attempt are left out of the comparison (and counted, to be sure the
    test still compares most jobs).
    """
    config = DemoConfig(
        jobs=24, min_work=0.01, max_work=0.3, timeout=0.15, failure_rate=0.3, backoff=0.01
    )
    jobs = make_jobs(config)
    with WorkerPool(8, timeout=config.timeout, retry=config.retry_policy()) as pool:
        futures = [pool.submit_job(job) for job in jobs]
        assert not wait(futures, timeout=WAIT).not_done
    clear = 0
    for n, job in enumerate(jobs, start=1):
        works = [plan_attempt(config, n, a).work for a in range(1, config.max_attempts + 1)]
        if any(abs(w - config.timeout) < 0.03 for w in works):
            continue
        clear += 1
        assert (job.status, len(job.attempts)) == expected_outcome(config, n), job
        if job.status is JobStatus.FAILED:
            assert isinstance(job.last_error, SimulatedFailure)
    assert clear >= 12
    s = pool.stats.snapshot()
    assert s.attempt_timeouts > 0 and s.timed_out + s.failed > 0


def test_threads_of_timed_out_demo_attempts_are_counted_back() -> None:
    """The demo's jobs step out right after a timeout; every abandoned thread comes back."""
    config = DemoConfig(jobs=8, min_work=1.0, max_work=1.0, timeout=0.02, max_attempts=1)
    for _ in range(10):
        with WorkerPool(4, timeout=config.timeout) as pool:
            futures = [pool.submit_job(job) for job in make_jobs(config)]
            assert not wait(futures, timeout=WAIT).not_done
        back = eventually(lambda: pool.stats.snapshot().abandoned_threads == 0, timeout=2.0)
        assert back, stacks(pool)


def stacks(pool: WorkerPool) -> str:
    """The stats and the stack of every live thread of ``pool``, to explain a failure."""
    frames = sys._current_frames()
    lines = [repr(pool.stats.snapshot())]
    for thread in pool.threads():
        frame = frames.get(thread.ident or 0)
        stack = "".join(traceback.format_stack(frame)[-5:]) if frame else "(gone)\n"
        lines.append(f"--- {thread.name}\n{stack}")
    return "\n".join(lines)


def test_a_job_steps_out_at_its_deadline() -> None:
    """A job longer than its timeout returns at the deadline, not after its work."""
    config = DemoConfig(jobs=1, min_work=30.0, max_work=30.0, timeout=0.05, max_attempts=1)
    (job,) = make_jobs(config)
    with WorkerPool(1, timeout=config.timeout) as pool:
        future = pool.submit_job(job)
        wait([future], timeout=WAIT)
    assert job.status is JobStatus.TIMED_OUT
    # The attempt's thread returns at its deadline, not after its 30 s of work.
    assert eventually(lambda: not pool.threads(), timeout=5.0)


def test_a_job_stops_when_cancelled() -> None:
    config = DemoConfig(jobs=1, min_work=30.0, max_work=30.0, timeout=60.0, max_attempts=1)
    (job,) = make_jobs(config)
    pool = WorkerPool(1)
    future = pool.submit_job(job)
    assert eventually(future.running)
    pool.terminate()
    assert future.cancelled() and job.status is JobStatus.CANCELLED
    assert eventually(lambda: not pool.threads(), timeout=5.0)  # not after 30 s of work


def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``predicate`` (every 5 ms, for at most ``timeout`` seconds)."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return True
        tick.wait(0.005)
    return False


def test_current_job_wait_is_what_the_demo_uses() -> None:
    """The demo's waiting primitive returns False when the work is done in time."""
    with WorkerPool(1, timeout=5.0) as pool:
        assert pool.submit(lambda: current_job().wait(0.01)).result(WAIT) is False


# -- the demo as a subprocess ---------------------------------------------------------------


def test_report_adds_up() -> None:
    proc = run_demo(*FAST, "--seed", "7")
    report = parse_report(proc.stdout)
    n = 12
    assert report["submitted"] == n
    ended = report["succeeded"] + report["failed"] + report["timed_out"]
    assert ended + report["cancelled"] == n and report["cancelled"] == 0
    assert report["attempts"] == n + report["retries"]
    assert report["dispatched"] == report["attempts"]  # retries go through the dispatcher
    assert len(report["listed"]) == report["failed"] + report["timed_out"]
    assert proc.returncode == (0 if report["succeeded"] == n else 1)
    assert "replay this run with: chronos demo --seed 7" in proc.stdout
    # The log agrees with the report.
    err = proc.stderr
    assert len(events(err, "job.succeeded")) == report["succeeded"]
    assert len(events(err, "job.started")) == report["attempts"]
    assert len(events(err, "job.retry_scheduled")) == report["retries"]
    assert len(events(err, "job.gave_up")) == report["failed"] + report["timed_out"]
    assert "\r" not in err and "\x1b" not in err  # piped: no progress line, no colours
    # Outcomes are the seed's (no attempt is near its timeout with these timings).
    config = replace(FAST_CONFIG, seed=7)
    expected = {f"job-{k}": expected_outcome(config, k) for k in range(1, n + 1)}
    assert report["retries"] == sum(a for _, a in expected.values()) - n
    failed = {name for name, (status, _) in expected.items() if status is not JobStatus.SUCCEEDED}
    assert set(report["listed"]) == failed
    for name, detail in report["listed"].items():
        status, attempts = expected[name]
        assert detail.startswith(f"{status.value} after {attempts} attempt")


def test_same_seed_same_run_and_json_output() -> None:
    first = run_demo(*FAST, "--seed", "3", "--json")
    second = run_demo(*FAST, "--seed", "3", "--json", "--log-level", "warning")
    reports = [json.loads(p.stdout) for p in (first, second)]
    for report, proc in zip(reports, (first, second), strict=True):
        assert report["seed"] == 3 and report["exit_status"] == proc.returncode
        stats = report["stats"]
        assert stats["submitted"] == stats["succeeded"] + stats["failed"] + stats["timed_out"]
    outcomes = [
        (
            r["stats"]["attempts"],
            [(j["name"], j["status"], j["attempts"]) for j in r["unsuccessful"]],
        )
        for r in reports
    ]
    assert outcomes[0] == outcomes[1]
    # One JSON object a line, with the event, its level and a timestamp.
    lines = [json.loads(line) for line in first.stderr.splitlines()]
    assert {"event", "level", "timestamp"} <= set(lines[0])
    assert lines[0]["event"] == "demo.started" and lines[0]["seed"] == 3
    assert {line["event"] for line in lines} >= {"job.dispatched", "job.started", "job.succeeded"}
    levels = {json.loads(line)["level"] for line in second.stderr.splitlines()}
    assert levels <= {"warning", "error"}


def test_every_job_succeeding_exits_0() -> None:
    proc = run_demo(*FAST, "--failure-rate", "0", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert parse_report(proc.stdout)["succeeded"] == 12
    assert "every job succeeded" in proc.stdout


def test_failures_exit_1() -> None:
    proc = run_demo(*FAST, "--failure-rate", "1", "--max-attempts", "2", "--seed", "1")
    assert proc.returncode == 1, proc.stderr
    report = parse_report(proc.stdout)
    assert report["failed"] == 12 and report["attempts"] == 24
    assert "SimulatedFailure('simulated failure processing Payload-1')" in proc.stdout


class Child:
    """The demo in a subprocess whose stderr is read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chronos", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=child_env(),
        )
        self.err: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._out: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, True)),
            threading.Thread(target=self._read, args=(self.proc.stdout, False)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], is_err: bool) -> None:
        for line in stream:
            if is_err:
                self._lines.put(line)
            else:
                self._out.append(line)

    def wait_for(self, event: str, count: int = 1) -> None:
        """Block (bounded) until ``count`` log lines of ``event`` have come."""
        seen = 0
        while seen < count:
            try:
                line = self._lines.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"no {event} line in {WAIT}s; stderr so far:\n{''.join(self.err)}")
            self.err.append(line)
            seen += f" {event} " in line

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=WAIT)
        for reader in self._readers:
            reader.join(WAIT)
        while not self._lines.empty():
            self.err.append(self._lines.get_nowait())
        return rc, "".join(self._out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for reader in self._readers:
            reader.join(WAIT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def child() -> Iterator[list[Child]]:
    children: list[Child] = []
    yield children
    for c in children:
        c.kill()


SLOW = [
    "--jobs", "12", "--workers", "2", "--interval", "0.01", "--timeout", "5",
    "--failure-rate", "0", "--seed", "5",
]  # fmt: skip


def test_ctrl_c_shuts_down_gracefully(child: list[Child]) -> None:
    # 12 jobs of 1 s on 2 workers: 6 s of work, so the signal lands mid-run even on a
    # loaded machine; the 2 running jobs finish within their grace, about 1 s.
    demo = Child(*SLOW, "--min-work", "1.0", "--max-work", "1.1", "--grace", "10")
    child.append(demo)
    demo.wait_for("job.started")
    demo.interrupt()
    rc, out, err = demo.finish()
    assert rc == 130, err
    report = parse_report(out)
    assert report["interrupted"]
    # Running jobs had the grace period and finished; waiting ones were cancelled, listed.
    assert report["succeeded"] >= 1 and report["cancelled"] >= 1
    assert report["succeeded"] + report["cancelled"] == 12
    assert report["attempts"] == report["succeeded"]
    assert len(report["listed"]) == report["cancelled"]
    assert all(d.startswith("cancelled before it ran") for d in report["listed"].values())
    assert " demo.interrupted " in err
    assert len(events(err, "job.cancelled")) == report["cancelled"]


def test_second_ctrl_c_stops_at_once(child: list[Child]) -> None:
    demo = Child(*SLOW, "--min-work", "20", "--max-work", "20", "--grace", "20")
    child.append(demo)
    demo.wait_for("job.started", count=2)
    demo.interrupt()
    demo.wait_for("demo.interrupted")
    demo.interrupt()
    rc, out, err = demo.finish()
    assert rc == 130, err
    report = parse_report(out)
    assert report["cancelled"] == 12 and report["succeeded"] == 0
    running = [d for d in report["listed"].values() if d == "cancelled while running attempt 1"]
    assert len(running) == 2
    assert "yes, twice: running jobs were cancelled at once" in out
    wall = re.search(r"^wall time +([\d.]+) s$", out, re.MULTILINE)
    assert wall and float(wall.group(1)) < 20  # nobody waited for the 20 s of work
