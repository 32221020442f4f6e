"""``python -m benchmarks``: run the cases, print the table, optionally save JSON.

Usage::

    python -m benchmarks                    # every case, full size (several minutes)
    python -m benchmarks --quick            # a short smoke run (well under a minute)
    python -m benchmarks --cases 1,3,7 --runs 3 --json results.json

Exit status: 0 when every selected case ran, whatever the PASS/FAIL verdicts (a missed
target is a result, not an error); 1 when a case raised (its traceback goes to stderr and
an ERROR row to the table); 2 for bad arguments.  A case that hangs longer than its budget
dumps every thread's stack (faulthandler) and exits.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import durable, latency, memory, rate, shutdown, throughput, timeouts
from benchmarks.harness import Row, Settings, format_table, machine_info, text_row

Case = Callable[[Settings], list[Row]]

CASES: dict[int, tuple[str, Case]] = {
    1: ("no-op submit()+result() throughput", throughput.case1),
    2: ("no-op map() throughput", throughput.case2),
    3: ("throughput with timeout + retry policy", throughput.case3),
    4: ("throughput through a Dispatcher", throughput.case4),
    5: ("sleeping jobs: efficiency at 4 and 32 workers", throughput.case5),
    6: ("Dispatcher rate accuracy", rate.case6),
    7: ("timeout detection delay", latency.case7),
    8: ("memory per queued job; RSS under an endless stream", memory.case8),
    9: ("shutdown latency", shutdown.case9),
    10: ("timeout detection at scale: 10,000 own timeouts, 500 workers", timeouts.case10),
    11: (
        "durable queues on SQLite against Huey: end to end, enqueue, pickup, kill -9",
        durable.case11,
    ),
}

#: Seconds one case may take before faulthandler dumps the stacks and exits.
FULL_BUDGET = 900
QUICK_BUDGET = 120


def _case_list(text: str) -> list[int]:
    try:
        numbers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,3,7, got {text!r}") from None
    unknown = [n for n in numbers if n not in CASES]
    if not numbers or unknown:
        raise argparse.ArgumentTypeError(f"cases are 1 to {len(CASES)}, got {text!r}")
    return numbers


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="chronos against the standard library: throughput, latency, memory.",
        epilog="Cases: " + "; ".join(f"{n}. {title}" for n, (title, _) in CASES.items()) + ".",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save results as JSON")
    parser.add_argument(
        "--cases",
        type=_case_list,
        default=list(CASES),
        metavar="1,3,7",
        help="comma-separated case numbers (default: all)",
    )
    parser.add_argument(
        "--runs", type=_positive, metavar="N", help="measured runs of each case (after warm-up)"
    )
    return parser.parse_args(argv)


def run_case(number: int, settings: Settings) -> tuple[list[Row], bool]:
    """Run one case; on an exception, an ERROR row (and the traceback on stderr)."""
    title, case = CASES[number]
    print(f"case {number}: {title} ...", file=sys.stderr, flush=True)
    faulthandler.dump_traceback_later(QUICK_BUDGET if settings.quick else FULL_BUDGET, exit=True)
    started = time.perf_counter()
    try:
        rows = case(settings)
    except Exception as exc:
        traceback.print_exc()
        return [text_row(str(number), title, "ERROR", target=repr(exc), passed=False)], False
    finally:
        faulthandler.cancel_dump_traceback_later()
    elapsed = time.perf_counter() - started
    print(f"case {number}: done in {elapsed:.1f} s", file=sys.stderr, flush=True)
    return rows, True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.make(quick=args.quick, runs=args.runs)
    meta = machine_info(settings)
    started = time.perf_counter()
    rows: list[Row] = []
    ok = True
    for number in args.cases:
        case_rows, case_ok = run_case(number, settings)
        rows.extend(case_rows)
        ok = ok and case_ok
    meta["seconds"] = round(time.perf_counter() - started, 1)
    print(
        f"chronos {meta['chronos']} ({meta['chronos_commit']}), "
        f"Python {meta['python']} on {meta['platform']}, "
        f"{meta['cpus']} CPUs, {meta['date']}, {meta['mode']} mode "
        f"(runs={settings.runs}, long runs={settings.long_runs}, "
        f"longest runs={settings.longest_runs}), {meta['seconds']} s; "
        f"load average at start {meta['load_average_at_start']}"
    )
    print("values: median [min-max] over runs; ratio: median of per-run chronos/baseline")
    print(format_table(rows))
    if args.json is not None:
        document = {"meta": meta, "rows": [row.as_dict() for row in rows]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results saved to {args.json}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
