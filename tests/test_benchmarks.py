"""The benchmark harness works.  Results are a benchmark, not a timed test: nothing here
checks a number against a target; the suite only runs ``python -m benchmarks --quick``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from benchmarks import overruns, timeouts
from benchmarks.__main__ import parse_args
from benchmarks.harness import (
    Row,
    Settings,
    alternate,
    compare_row,
    format_table,
    paired_ratio,
    percentile,
)

ROOT = Path(__file__).resolve().parent.parent
#: Real seconds the quick run may take on a loaded 2-core machine (it takes ~30 s idle).
QUICK_RUN_TIMEOUT = 240


@pytest.mark.slow
@pytest.mark.timeout(QUICK_RUN_TIMEOUT + 60)
def test_quick_run_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    header = done.stdout.splitlines()[2]
    assert header.split() == [
        "case",
        "metric",
        "chronos",
        "baseline",
        "vs",
        "ratio",
        "target",
        "result",
    ]
    document = json.loads(out.read_text())
    assert document["meta"]["mode"] == "quick"
    rows = document["rows"]
    assert {row["case"] for row in rows} == {str(n) for n in range(1, 12)}
    assert {row["result"] for row in rows} <= {"PASS", "FAIL", "-"}
    for row in rows:  # every row of the JSON is a line of the printed table
        assert row["metric"] in done.stdout


def test_cases_and_runs_are_parsed() -> None:
    args = parse_args(["--cases", "7,1,3", "--runs", "2", "--quick"])
    assert args.cases == [1, 3, 7]
    assert args.runs == 2
    assert args.quick
    assert parse_args([]).cases == list(range(1, 12))


@pytest.mark.parametrize("argv", [["--cases", "0"], ["--cases", "1,x"], ["--runs", "0"]])
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="2"):
        parse_args(argv)
    assert "usage: python -m benchmarks" in capsys.readouterr().err


def test_settings() -> None:
    assert Settings.make(quick=False, runs=None) == Settings(
        quick=False, runs=5, long_runs=3, longest_runs=1
    )
    assert Settings.make(quick=True, runs=None) == Settings(
        quick=True, runs=2, long_runs=1, longest_runs=1
    )
    assert Settings.make(quick=True, runs=4) == Settings(
        quick=True, runs=4, long_runs=4, longest_runs=4
    )


def test_alternate_warms_up_then_swaps_the_order_every_run() -> None:
    calls: list[str] = []

    def variant(label: str) -> dict[str, float]:
        calls.append(label)
        return {"value": float(len(calls))}

    results = alternate(
        {"a": lambda: variant("a"), "b": lambda: variant("b")},
        runs=3,
        warmup={"a": lambda: variant("wa"), "b": lambda: variant("wb")},
    )
    assert calls == ["wa", "wb", "a", "b", "b", "a", "a", "b"]
    assert results == {"a": {"value": [3.0, 6.0, 7.0]}, "b": {"value": [4.0, 5.0, 8.0]}}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError, match="percentile of no values"):
        percentile([], 50)


def test_paired_ratio_is_the_median_of_run_by_run_ratios() -> None:
    assert paired_ratio([1.0, 4.0, 9.0], [2.0, 2.0, 3.0]) == 2.0


def test_table_shows_median_range_ratio_and_verdict() -> None:
    rows = [
        compare_row(
            "1",
            "jobs/s",
            [900.0, 1000.0, 1100.0],
            [1000.0, 1000.0, 1000.0],
            "TPE",
            target=">= 0.95x",
            passed=True,
        ),
        Row("9", "ms", "ERROR", "-", "", None, "boom", False),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == [
        "case",
        "metric",
        "chronos",
        "baseline",
        "vs",
        "ratio",
        "target",
        "result",
    ]
    assert lines[2].split() == [
        "1",
        "jobs/s",
        "1000",
        "[900-1100]",
        "1000",
        "[1000-1000]",
        "TPE",
        "1.00x",
        ">=",
        "0.95x",
        "PASS",
    ]
    assert lines[3].split()[-1] == "FAIL"


#: Case 10 at a size the suite can afford: 30 overrunning jobs on 10 workers, a burst of 20.
TINY = timeouts.Sizes(jobs=30, workers=10, longest=0.05, burst=20, burst_timeout=0.3, warmup_jobs=5)


def test_timeout_detection_case_runs_at_a_tiny_size() -> None:
    rows = timeouts.measure(TINY, runs=1)
    metrics = [row.metric for row in rows]
    assert all(row.case == "10" for row in rows)
    assert len(metrics) == len(set(metrics)) == 11
    assert metrics[0] == "30 jobs, own timeout 10 ms-50 ms, 10 workers: lateness p50 ms"
    assert metrics[-1] == "20 attempts due at once, 20 workers: timeouts/s"
    by_target = {row.target: row for row in rows if row.target}
    assert set(by_target) == {"<= 5 ms", ">= 10,000/s"}  # a verdict, whatever it is
    assert by_target["<= 5 ms"].metric.endswith("lateness p99 ms")
    assert by_target[">= 10,000/s"].metric.startswith("20 attempts due at once")
    for row in rows:
        if row.data.get("chronos") and row.data.get("baseline"):
            assert all(math.isfinite(x) for x in row.data["chronos"] + row.data["baseline"])
    # A cooperative job raises JobTimeoutError itself if it beats the timer: none can finish
    # without being marked timed out (unlike a non-cooperative one the timer misses).
    cooperative = [row for row in rows if row.metric.endswith("cooperative job: lateness p99 ms")]
    assert cooperative[0].data["unnoticed"] == [0.0]
    assert "(ideal " in metrics[3]


def test_timeouts_are_seeded_and_in_range() -> None:
    first = timeouts.timeouts(100, 0.01, 1.0)
    assert first == timeouts.timeouts(100, 0.01, 1.0)
    assert first != timeouts.timeouts(100, 0.01, 1.0, seed=timeouts.SEED + 1)
    assert all(0.01 <= t <= 1.0 for t in first)


def test_ideal_rate_is_jobs_over_the_makespan_with_no_overhead() -> None:
    assert timeouts.ideal_rate([1.0, 1.0, 1.0, 1.0], workers=2) == 2.0
    # [3] on one worker; [1, 1, 1] one after another on the other: done at 3 s.
    assert timeouts.ideal_rate([3.0, 1.0, 1.0, 1.0], workers=2) == 4 / 3
    assert timeouts.ideal_rate([0.5], workers=500) == 2.0


def test_held_clock_gives_one_reading_while_held() -> None:
    clock = overruns.HeldClock()
    held = clock.hold()
    assert clock.now() == held
    assert clock.now() == held
    clock.release()
    assert clock.now() >= held
    assert clock.wait_until(threading.Event(), clock.now()) is False
    assert clock.wait_until(_set_event(), None) is True


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event
