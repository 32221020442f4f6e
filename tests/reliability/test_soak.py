"""Soak: the chaos mix, round after round with fresh seeds, for as long as asked.

``pytest -m soak --soak-seconds 600`` runs it (outside CI: without ``-m soak`` it is skipped,
see ``tests/conftest.py``).  Rounds alternate between the chaos mix of test_chaos (with a pool
configuration drawn from the round's seed) and 8 submitters racing a shutdown as in
test_races, half of them with a thread switch every microsecond.  A failing round names its
seed; ``CHRONOS_SOAK_SEED=<seed> pytest -m soak --soak-seconds 0`` replays it first.
"""

from __future__ import annotations

import contextlib
import faulthandler
import itertools
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.chaos import (
    DEFAULT_WEIGHTS,
    SHUTDOWNS,
    Action,
    Chaos,
    ChaosConfig,
    check,
    race_shutdown,
    random_policy,
    switch_interval,
)

#: Real seconds one round may take before every thread's stack is dumped.
ROUND_LIMIT = 60.0
REPO = Path(__file__).resolve().parents[2]


def chaos_config(seed: int) -> ChaosConfig:
    """A pool and a mix drawn from ``seed``: sizes, timeouts, policies, caps, queue bounds."""
    rng = random.Random(seed)
    return ChaosConfig(
        seed=seed,
        jobs=rng.choice([1000, 2000, 4000]),
        max_workers=rng.choice([16, 24, 32]),
        timeout=rng.choice([None, 0.03, 0.05]),
        retry=rng.choice([None, random_policy(rng)]),
        max_abandoned=rng.choice([None, 0, 4]),
        queue_size=rng.choice([10_000, 64, 8]),
        interrupt=rng.random() < 0.3,
        dispatcher_share=rng.choice([0.0, 0.3, 1.0]),
        dispatch_rate=rng.choice([None, 20_000.0]),
        weights={**DEFAULT_WEIGHTS, Action.SPIN_HANG: rng.choice([0.0, 1.0])},
    )


def chaos_round(seed: int) -> str:
    config = chaos_config(seed)
    with Chaos(config) as chaos:
        chaos.run()
        check(chaos)
    return "chaos"


def race_round(seed: int) -> str:
    rng = random.Random(seed)
    variant = rng.choice(sorted(SHUTDOWNS))
    calls, cancels = SHUTDOWNS[variant]
    tiny = rng.random() < 0.5
    config = ChaosConfig(
        seed=seed,
        jobs=0,
        queue_size=rng.choice([16, 10_000]),
        dispatcher_share=rng.choice([0.0, 0.3, 1.0]),
    )
    with switch_interval(1e-6) if tiny else contextlib.nullcontext(), Chaos(config) as chaos:
        report = race_shutdown(chaos, calls, per_thread=rng.choice([30, 60, 120]))
        chaos.shutdown(lambda pool: pool.shutdown())
        chaos.wait_for_threads()
        check(chaos, shutdown_cancels=cancels)
    assert not report.problems, report.problems[:10]
    return f"race({variant})"


@pytest.mark.soak
def test_soak_the_chaos_mix(pytestconfig: pytest.Config) -> None:
    """Round after round of chaos and shutdown races until ``--soak-seconds`` have passed (at
    least one of each); every round's books must balance, as in test_chaos and test_races."""
    seconds: float = pytestconfig.getoption("--soak-seconds")
    first = os.environ.get("CHRONOS_SOAK_SEED")
    base = int(first) if first else random.SystemRandom().randrange(10**9)
    end = time.monotonic() + seconds
    rounds: Counter[str] = Counter()
    try:
        for seed in itertools.count(base):
            faulthandler.dump_traceback_later(ROUND_LIMIT, file=2)  # a hung round shows where
            run = chaos_round if seed % 2 == 0 else race_round
            try:
                rounds[run(seed)] += 1
            except AssertionError as exc:
                raise AssertionError(
                    f"soak round seed={seed} failed after {sum(rounds.values())} rounds; replay "
                    f"it: CHRONOS_SOAK_SEED={seed} pytest -m soak --soak-seconds 0\n{exc}"
                ) from exc
            if time.monotonic() >= end and seed > base:
                break
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(f"soak: {sum(rounds.values())} rounds from seed {base} in {seconds:g}s: {dict(rounds)}")


@pytest.mark.timeout(60)
def test_soak_mode_is_opt_in_and_runs_for_the_seconds_asked() -> None:
    """Without ``-m soak`` the soak test is skipped, so CI stays bounded; with ``-m soak
    --soak-seconds`` it runs rounds for that long and passes."""
    command = [sys.executable, "-m", "pytest", f"{__file__}::test_soak_the_chaos_mix"]
    command += ["-q", "-s", "-rs", "-p", "no:cacheprovider"]
    env = {**os.environ, "CHRONOS_SOAK_SEED": "1000"}
    plain = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    soak = subprocess.Popen(
        [*command, "-m", "soak", "--soak-seconds", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    plain_out, _ = plain.communicate(timeout=50)
    soak_out, _ = soak.communicate(timeout=50)
    assert plain.returncode == 0 and "1 skipped" in plain_out, plain_out
    assert "run it with `pytest -m soak" in plain_out, plain_out
    assert soak.returncode == 0 and "1 passed" in soak_out, soak_out
    assert "soak: 2 rounds from seed 1000" in soak_out, soak_out
