"""Timing, alternation, summaries and the results table shared by every case.

A case measures chronos and a standard-library baseline *alternately in the same process*
(run 1: chronos then baseline, run 2: baseline then chronos, ...), after a warm-up, so that a
burst of load from other processes on a shared machine hits both sides alike.  Each run
returns a few named metrics; a case turns their samples into :class:`Row` objects, one line
of the table each: the median with the min-max range for both sides, the ratio
chronos/baseline, the target and PASS/FAIL.

The ratio is the median of the *paired* per-run ratios (run i of chronos against run i of
the baseline, measured back to back), which cancels slow drifts in machine load better than
a ratio of two medians.

Thread-safety: single-threaded; cases call it from the main thread.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chronos

__all__ = [
    "Metrics",
    "NullLogger",
    "Row",
    "Settings",
    "Stat",
    "alternate",
    "compare_row",
    "format_table",
    "machine_info",
    "num",
    "paired_ratio",
    "percentile",
    "quiet_logger",
    "text_row",
    "wait_until",
]

#: What one run of a variant returns: named measurements of that run.
Metrics = dict[str, float]
Variant = Callable[[], Metrics]


@dataclass(frozen=True)
class Settings:
    """How big and how long: the full benchmark, or the ``--quick`` smoke run.

    ``runs`` applies to the short cases; ``long_runs`` to those whose every run is slow by
    design (rate windows, 100,000 jobs under tracemalloc, child processes);
    ``longest_runs`` to those whose one run takes about ten seconds a side (case 10's
    10,000 timeouts), measured once unless asked.  ``--runs N`` sets all three.
    """

    quick: bool = False
    runs: int = 5
    long_runs: int = 3
    longest_runs: int = 1

    @classmethod
    def make(cls, *, quick: bool, runs: int | None) -> Settings:
        if runs is not None:
            return cls(quick=quick, runs=runs, long_runs=runs, longest_runs=runs)
        return cls(quick=True, runs=2, long_runs=1) if quick else cls()

    def pick(self, full: float, quick: float) -> float:
        """``full`` in a full run, ``quick`` in a quick one."""
        return quick if self.quick else full

    def count(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True)
class Stat:
    """Samples of one metric: the median and the min-max range."""

    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Iterable[float]) -> Stat:
        values = tuple(samples)
        if not values:
            raise ValueError("a Stat needs at least one sample")
        return cls(values)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def text(self) -> str:
        """``median [min-max]``, or just the value for a single sample."""
        if len(self.samples) == 1:
            return num(self.median)
        return f"{num(self.median)} [{num(self.min)}-{num(self.max)}]"


def num(value: float) -> str:
    """A number in a few significant digits: ``21.3k``, ``612``, ``4.27``, ``0.0123``."""
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value / 1000:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.2g}" if magnitude < 0.01 else f"{value:.3f}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


def paired_ratio(chronos_samples: Sequence[float], baseline_samples: Sequence[float]) -> float:
    """The median of run-by-run ratios chronos/baseline (runs paired in order)."""
    pairs = [a / b for a, b in zip(chronos_samples, baseline_samples, strict=True) if b != 0]
    return statistics.median(pairs) if pairs else float("nan")


def alternate(
    variants: Mapping[str, Variant],
    runs: int,
    warmup: Mapping[str, Variant] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Run every variant ``runs`` times, alternating their order, after a warm-up.

    Args:
        variants: label -> a callable doing one measured run and returning its metrics.
        runs: measured runs of each variant.
        warmup: callables run once each before the measured runs (default: the variants
            themselves, their result discarded); pass ``{}`` for no warm-up.

    Returns:
        label -> metric name -> one sample per run, in run order.
    """
    for fn in (variants if warmup is None else warmup).values():
        fn()
    labels = list(variants)
    results: dict[str, dict[str, list[float]]] = {label: {} for label in labels}
    for run in range(runs):
        order = labels if run % 2 == 0 else labels[::-1]
        for label in order:
            gc.collect()
            for metric, value in variants[label]().items():
                results[label].setdefault(metric, []).append(value)
    return results


@dataclass
class Row:
    """One line of the results table.

    ``passed`` is None for a row without a target (reported for information).
    """

    case: str
    metric: str
    chronos: str
    baseline: str
    baseline_name: str
    ratio: float | None
    target: str
    passed: bool | None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "-"
        return "PASS" if self.passed else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "metric": self.metric,
            "chronos": self.chronos,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "target": self.target,
            "result": self.verdict,
            "data": self.data,
        }


def compare_row(
    case: str,
    metric: str,
    chronos_samples: Sequence[float],
    baseline_samples: Sequence[float],
    baseline_name: str,
    *,
    target: str = "",
    passed: bool | None = None,
    ratio: float | None = None,
) -> Row:
    """A row comparing two sample series (ratio: paired, unless given)."""
    ours = Stat.of(chronos_samples)
    theirs = Stat.of(baseline_samples)
    if ratio is None:
        ratio = paired_ratio(chronos_samples, baseline_samples)
    return Row(
        case=case,
        metric=metric,
        chronos=ours.text(),
        baseline=theirs.text(),
        baseline_name=baseline_name,
        ratio=ratio,
        target=target,
        passed=passed,
        data={"chronos": list(chronos_samples), "baseline": list(baseline_samples)},
    )


def text_row(
    case: str,
    metric: str,
    chronos_text: str,
    baseline_text: str = "-",
    *,
    baseline_name: str = "",
    ratio: float | None = None,
    target: str = "",
    passed: bool | None = None,
    data: dict[str, Any] | None = None,
) -> Row:
    """A row whose values are already text (single measurements, first -> last, ...)."""
    return Row(
        case,
        metric,
        chronos_text,
        baseline_text,
        baseline_name,
        ratio,
        target,
        passed,
        dict(data or {}),
    )


_HEADERS = ("case", "metric", "chronos", "baseline", "vs", "ratio", "target", "result")


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table (medians with [min-max] ranges)."""
    cells = [
        (
            r.case,
            r.metric,
            r.chronos,
            r.baseline,
            r.baseline_name,
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target or "-",
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_HEADERS)]
    numeric = {2, 3, 5}

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(_HEADERS), line(["-" * w for w in widths])]
    out.extend(line(c) for c in cells)
    return "\n".join(out)


def machine_info(settings: Settings) -> dict[str, Any]:
    """Where and when the results were taken."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "chronos": chronos.__version__,
        "chronos_commit": _commit(),
        "load_average_at_start": [round(x, 2) for x in load],
        "mode": "quick" if settings.quick else "full",
        "runs": settings.runs,
        "long_runs": settings.long_runs,
        "longest_runs": settings.longest_runs,
        "argv": sys.argv[1:],
    }


class NullLogger:
    """A logger that drops every event (``is_enabled_for`` is always False).

    For cases whose jobs fail or time out on purpose, so the table is not buried under
    warnings; the pool still builds each event's fields, as it would with a real logger.
    """

    def is_enabled_for(self, level: int) -> bool:
        return False

    def _drop(self, event: str, **fields: Any) -> None:
        return None

    debug = info = warning = error = critical = exception = _drop


def _commit() -> str:
    """The git commit of the working tree (``+dirty`` if it has changes), or "unknown"."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "chronos")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if commit and dirty else commit or "unknown"


def quiet_logger() -> NullLogger:
    """A fresh :class:`NullLogger` (pass it as ``WorkerPool(logger=...)``)."""
    return NullLogger()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every millisecond until it holds.

    Raises:
        TimeoutError: it did not hold within ``timeout`` seconds (naming ``what``).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.001)
