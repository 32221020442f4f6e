"""The bundled demo: simulated jobs with timeouts and retries, run for real.

Fifteen jobs with payloads are dispatched one every 300 ms to four worker threads; each
job works a random 100-1000 ms and fails one time in five; each attempt may run for one
second, and a failed or timed-out attempt is retried with exponential backoff and full
jitter, three attempts in all.  :class:`DemoConfig` holds those numbers (the command line
sets every one of them, see :mod:`chronos.cli.app`); this module only makes the jobs.

Outcomes are reproducible.  What an attempt does (how long it works, whether it fails) is
drawn from a :class:`random.Random` seeded with the run's seed, the job's number and the
attempt's number, so it does not depend on which thread runs it or when:
:func:`expected_outcome` tells the end of every job before the run.  Only the backoff
delays come from the global :mod:`random` (tenacity's jitter), which the command line
seeds too.  An attempt whose work ends within a few milliseconds of its timeout may land
either side of it: that is the one place where threads decide.

The job is cooperative: it waits on :meth:`chronos.JobContext.wait` instead of
``time.sleep``, so a timeout or a shutdown stops it at once and no thread is left behind.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from chronos import Job, JobStatus, JobTimeoutError, RetryPolicy, current_job

__all__ = [
    "AttemptPlan",
    "DemoConfig",
    "SimulatedFailure",
    "expected_outcome",
    "make_jobs",
    "plan_attempt",
    "process",
]


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The parameters of one demo run; the defaults are the scenario ``chronos demo`` runs.

    Args:
        jobs: how many jobs.
        workers: worker threads.
        interval: seconds between two dispatches, or
        rate: dispatches per second (give one of the two; None for both: no rate limit).
        timeout: seconds each attempt may run.
        failure_rate: probability that an attempt fails, in [0, 1].
        min_work: shortest work of an attempt, in seconds.
        max_work: longest work of an attempt, in seconds.
        max_attempts: attempts per job, first one included.
        backoff: base of the exponential backoff between attempts, in seconds.
        max_backoff: the longest backoff.
        grace: seconds running jobs may go on after Ctrl+C.
        seed: the seed of every random draw.

    Raises:
        ValueError: for a value out of range, naming it.
    """

    jobs: int = 15
    workers: int = 4
    interval: float | None = 0.3
    rate: float | None = None
    timeout: float = 1.0
    failure_rate: float = 0.2
    min_work: float = 0.1
    max_work: float = 1.0
    max_attempts: int = 3
    backoff: float = 0.2
    max_backoff: float = 5.0
    grace: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.jobs < 0:
            raise ValueError(f"jobs must be >= 0, got {self.jobs}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.interval is not None and self.rate is not None:
            raise ValueError("give interval or rate, not both")
        for name in ("interval", "rate", "timeout"):
            value = getattr(self, name)
            if value is not None and not (0 < value < math.inf):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be between 0 and 1, got {self.failure_rate!r}")
        if not 0.0 <= self.min_work <= self.max_work:
            raise ValueError(
                f"need 0 <= min_work <= max_work, got {self.min_work!r} and {self.max_work!r}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.grace < 0:
            raise ValueError(f"grace must be >= 0, got {self.grace!r}")

    def retry_policy(self) -> RetryPolicy:
        """Exponential backoff with full jitter, ``max_attempts`` attempts in all."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            max_backoff=max(self.backoff, self.max_backoff),
        )


class SimulatedFailure(Exception):  # noqa: N818 - it is what the demo's jobs raise, by design
    """The failure a demo attempt raises when its draw says so."""


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """What one attempt of a demo job does: work ``work`` seconds, then fail or not."""

    work: float
    fails: bool


def plan_attempt(config: DemoConfig, number: int, attempt: int) -> AttemptPlan:
    """The draw of attempt ``attempt`` of job ``number``: the same for the same seed."""
    rng = random.Random(f"chronos-demo/{config.seed}/{number}/{attempt}")
    work = rng.uniform(config.min_work, config.max_work)
    return AttemptPlan(work=work, fails=rng.random() < config.failure_rate)


def expected_outcome(config: DemoConfig, number: int) -> tuple[JobStatus, int]:
    """The terminal state and attempt count of job ``number`` in a run not interrupted.

    An attempt that works ``timeout`` seconds or more times out; one that works less and
    draws a failure fails; a job stops at its first success or after ``max_attempts``.
    """
    status = JobStatus.FAILED
    for attempt in range(1, config.max_attempts + 1):
        plan = plan_attempt(config, number, attempt)
        if plan.work >= config.timeout:
            status = JobStatus.TIMED_OUT
        elif plan.fails:
            status = JobStatus.FAILED
        else:
            return JobStatus.SUCCEEDED, attempt
    return status, config.max_attempts


def process(payload: str, number: int, config: DemoConfig) -> str:
    """The demo's job: work a while on ``payload``, then succeed or fail as drawn.

    Must run inside a chronos pool (it reads :func:`chronos.current_job`).

    Raises:
        SimulatedFailure: the attempt drew a failure.
        JobTimeoutError, JobCancelledError: the attempt timed out or was cancelled (the
            pool has ended the attempt by then, so this is only the job stepping out).
    """
    ctx = current_job()
    plan = plan_attempt(config, number, ctx.attempt_number)
    if ctx.wait(plan.work):
        ctx.check()
        raise JobTimeoutError(f"{payload}: attempt {ctx.attempt_number} passed its deadline")
    if plan.fails:
        raise SimulatedFailure(f"simulated failure processing {payload}")
    return f"processed {payload}"


def make_jobs(config: DemoConfig) -> list[Job[str]]:
    """The run's jobs, ``job-1`` to ``job-N``, with payloads ``Payload-1`` to ``Payload-N``."""
    return [
        Job(process, (f"Payload-{n}", n, config), name=f"job-{n}")
        for n in range(1, config.jobs + 1)
    ]
