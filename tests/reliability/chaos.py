"""The chaos mix: seeded jobs that misbehave in every way a job can, and the books to check them.

A :class:`Chaos` owns one :class:`WorkerPool` and makes jobs for it from a seed.  Each job
follows a *script*, one :class:`Action` per attempt: return (a small or a huge object), sleep
a little, raise an ``Exception`` or a ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``,
``GeneratorExit``, a custom one), hang past its timeout cooperatively (``current_job().wait()``)
or not (a sleep or a pure-Python spin that ignores its context and returns only once its
attempt was ended by someone else, or a wait that only the test ends), or submit further jobs
to the same pool, and maybe wait for them until its own deadline.  Each job gets a
random timeout and retry policy of its own (or the pool's), some get done-callbacks that
raise, and the caller cancels a few.  Everything a job decides comes from
``random.Random(f"{seed}/{key}")``, so a seed names the same mix whatever the threads do.

After a run, :func:`check` proves the promise of chronos, from the outside:

- every job submitted is in exactly one terminal state, and its Future agrees with it (the
  value or the very exception of its last attempt, or cancelled), resolved exactly once and
  only after the job became terminal;
- every attempt ran the job's body once, ended once, with an outcome its action allows; the
  number of attempts is what the job's retry policy says (written out here independently);
- the stats and the lifecycle events add up to what the jobs say;
- no thread is left: the pool's threads never exceeded ``max_workers +
  max_abandoned_threads`` (+ the timer), and every abandoned thread came back and exited.

Hangs are released when their attempt ends or at teardown (:attr:`Chaos.stop`), so no
thread outlives a test.
"""

from __future__ import annotations

import concurrent.futures as cf
import faulthandler
import gc
import itertools
import logging
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, NoReturn

import tenacity

from chronos import (
    AttemptOutcome,
    Dispatcher,
    Job,
    JobContext,
    JobStatus,
    JobTimeoutError,
    NonRetryableError,
    RetryPolicy,
    WorkerPool,
    current_job,
)
from chronos.job import Attempt

S = JobStatus
Outcome = AttemptOutcome

#: Bytes in a "huge" result.
HUGE_BYTES = 4 * 2**20
#: Deepest nesting of jobs that submit jobs (a top-level job is at depth 0).
MAX_DEPTH = 2
#: Messages of the RuntimeError that submit raises after shutdown (pool, Dispatcher).
REFUSED = "cannot schedule new futures after shutdown"
REFUSED_BY_DISPATCHER = "cannot submit to a closed Dispatcher"


class Action(StrEnum):
    """What a job's body does in one attempt."""

    RETURN = "return"
    HUGE = "huge"  # returns a HUGE_BYTES object
    SLOW = "slow"  # sleeps a few ms (well within any timeout), then returns
    RAISE = "raise"  # ChaosError: an Exception, retried by most policies
    FATAL = "fatal"  # a NonRetryableError
    SYSTEM_EXIT = "system_exit"
    KEYBOARD_INTERRUPT = "keyboard_interrupt"
    GENERATOR_EXIT = "generator_exit"
    CUSTOM_BASE = "custom_base"  # ChaosBaseError(BaseException)
    COOP_HANG = "coop_hang"  # JobContext.wait() + check() until the attempt times out
    HARD_HANG = "hard_hang"  # sleeps, ignoring its context, until its attempt was ended
    SPIN_HANG = "spin_hang"  # the same in a pure-Python loop (interruptible)
    HELD_HANG = "held_hang"  # blocks, ignoring its context, until the test releases it
    SUBMIT = "submit"  # submits 1-3 chaos jobs to the same pool, returns their Futures
    WAIT_CHILD = "wait_child"  # submits a chaos job and waits for it, until its own deadline


class ChaosError(Exception):
    """The ordinary, retryable failure of a chaos job."""


class ChaosFatalError(NonRetryableError):
    """A failure no policy retries."""


class ChaosBaseError(BaseException):
    """A custom BaseException (not an Exception): never retried."""


class ChildError(Exception):
    """A child job a WAIT_CHILD action waited for failed, was cancelled, or was too slow."""


class CallbackError(Exception):
    """Raised by a done-callback (concurrent.futures logs it and goes on)."""


BASE_ERRORS: dict[Action, Callable[[str], BaseException]] = {
    Action.SYSTEM_EXIT: SystemExit,
    Action.KEYBOARD_INTERRUPT: KeyboardInterrupt,
    Action.GENERATOR_EXIT: GeneratorExit,
    Action.CUSTOM_BASE: ChaosBaseError,
}
HANGS = frozenset({Action.COOP_HANG, Action.HARD_HANG, Action.SPIN_HANG, Action.HELD_HANG})
#: Actions that only end (or stop waiting) at a deadline: drawn only for jobs with a timeout.
NEED_A_DEADLINE = HANGS | {Action.WAIT_CHILD}
#: Actions that submit to the pool.
SUBMITS = frozenset({Action.SUBMIT, Action.WAIT_CHILD})
#: What an attempt may raise by itself, per action (anything else is a bug).
RAISES: dict[Action, type[BaseException] | tuple[type[BaseException], ...]] = {
    Action.RAISE: ChaosError,
    Action.FATAL: ChaosFatalError,
    Action.SYSTEM_EXIT: SystemExit,
    Action.KEYBOARD_INTERRUPT: KeyboardInterrupt,
    Action.GENERATOR_EXIT: GeneratorExit,
    Action.CUSTOM_BASE: ChaosBaseError,
    Action.SUBMIT: RuntimeError,  # the pool shut down while the job was submitting
    Action.WAIT_CHILD: (ChildError, RuntimeError),
}
RETURNS = frozenset({Action.RETURN, Action.HUGE, Action.SLOW, Action.SUBMIT, Action.WAIT_CHILD})

DEFAULT_WEIGHTS: Mapping[Action, float] = {
    Action.RETURN: 45,
    Action.HUGE: 0.3,
    Action.SLOW: 8,
    Action.RAISE: 18,
    Action.FATAL: 3,
    Action.SYSTEM_EXIT: 1,
    Action.KEYBOARD_INTERRUPT: 1,
    Action.GENERATOR_EXIT: 1,
    Action.CUSTOM_BASE: 1,
    Action.COOP_HANG: 2.5,
    Action.HARD_HANG: 2.5,
    Action.SPIN_HANG: 0,
    Action.HELD_HANG: 0,  # submitted on purpose only (each one holds a thread to the end)
    Action.SUBMIT: 3,
    Action.WAIT_CHILD: 1.5,
}


@dataclass(frozen=True)
class PolicyModel:
    """A retry policy, and the documented rule for when it retries, written out on its own.

    ``tenacity_style`` builds the same policy from tenacity strategies (``stop=``, ``wait=``,
    ``retry=``) instead of RetryPolicy's own arguments.
    """

    max_attempts: int
    backoff: float = 0.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    never_retry_on: tuple[type[BaseException], ...] = ()
    tenacity_style: bool = False

    def build(self) -> RetryPolicy:
        if not self.tenacity_style:
            return RetryPolicy(
                max_attempts=self.max_attempts,
                backoff=self.backoff,
                jitter=self.jitter,
                retry_on=self.retry_on,
                never_retry_on=self.never_retry_on,
            )
        retry: tenacity.retry_base = tenacity.retry_if_exception_type(self.retry_on)
        if self.never_retry_on:
            retry = retry & tenacity.retry_if_not_exception_type(self.never_retry_on)
        return RetryPolicy(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_fixed(self.backoff),
            retry=retry,
        )

    def retries(self, error: BaseException | None, attempt_number: int) -> bool:
        """Whether a job must run again after attempt ``attempt_number`` raised ``error``."""
        if not isinstance(error, Exception) or isinstance(error, NonRetryableError):
            return False  # BaseExceptions and NonRetryableError: never, whatever the policy
        return (
            attempt_number < self.max_attempts
            and isinstance(error, self.retry_on)
            and not isinstance(error, self.never_retry_on)
        )


def random_policy(rng: random.Random) -> PolicyModel:
    return PolicyModel(
        max_attempts=rng.randint(1, 4),
        backoff=rng.choice([0.0, 0.001, 0.004]),
        jitter=rng.random() < 0.5,
        retry_on=rng.choice([(Exception,), (Exception,), (ChaosError, JobTimeoutError)]),
        never_retry_on=rng.choice([(), (), (JobTimeoutError,), (RuntimeError,)]),
        tenacity_style=rng.random() < 0.3,
    )


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run: the pool's settings and the mix.

    ``timeout`` and ``retry`` are the pool's defaults; each job takes its own timeout (from
    ``timeouts``) with probability ``own_timeout_rate``, its own policy with
    ``own_policy_rate``.
    """

    seed: int
    jobs: int = 2000
    max_workers: int = 16
    timeout: float | None = 0.05
    retry: PolicyModel | None = None
    max_abandoned: int | None = None
    queue_size: int = 10_000
    interrupt: bool = False
    timeouts: tuple[float, float] = (0.02, 0.08)
    own_timeout_rate: float = 0.5
    own_policy_rate: float = 0.6
    weights: Mapping[Action, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    dispatcher_share: float = 0.0  # the caller hands this share of jobs to a Dispatcher
    dispatch_rate: float | None = None  # the Dispatcher's rate limit (None: none)
    cancel_rate: float = 0.01  # the caller cancels this share of jobs, at once or later
    callback_error_rate: float = 0.02  # this share of Futures get a done-callback that raises

    @property
    def abandoned_cap(self) -> int:
        return self.max_workers if self.max_abandoned is None else self.max_abandoned

    @property
    def thread_cap(self) -> int:
        """Workers, plus the abandoned threads that may be replaced."""
        return self.max_workers + self.abandoned_cap


@dataclass(frozen=True)
class Spec:
    """What one job does: its script, and the settings it overrides."""

    actions: tuple[Action, ...]  # one per attempt; the last repeats
    timeout: float | None  # its own
    policy: PolicyModel | None  # its own
    slow: float  # seconds a SLOW action sleeps
    linger: float  # seconds a hang goes on after its attempt ended
    late_raise: bool  # a hang raises (rather than returns) once it goes
    children: int  # jobs a SUBMIT action submits
    raising_callback: bool


@dataclass(eq=False)
class Call:
    """One run of a job's body."""

    attempt: int
    action: Action
    thread: threading.Thread
    returned: object = None
    raised: BaseException | None = None


class EventLog:
    """A logger for the pool that counts chronos's lifecycle events by name.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards counts and internal_errors
        self.counts: Counter[str] = Counter()
        self.internal_errors: list[dict[str, Any]] = []

    def is_enabled_for(self, level: int) -> bool:
        return True

    def _log(self, event: str, **fields: Any) -> None:
        with self._lock:
            self.counts[event] += 1
            if event == "chronos.internal_error":
                self.internal_errors.append(fields)

    debug = info = warning = error = critical = _log


class _CallbackErrors(logging.Handler):
    """Counts the "exception calling callback" records of concurrent.futures."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0  # guarded by the Handler's own lock (handle() holds it around emit)

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("exception calling callback"):
            self.count += 1


def fail_with_stacks(message: str) -> NoReturn:
    """Dump every thread's stack to stderr (a hang shows where it is) and fail."""
    faulthandler.dump_traceback(file=2, all_threads=True)
    raise AssertionError(message)


def join_all(threads: Sequence[threading.Thread], limit: float, what: str) -> None:
    """Join ``threads`` within ``limit`` real seconds in all, or dump stacks and fail."""
    end = time.monotonic() + limit
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        fail_with_stacks(f"{what}: still running after {limit}s (deadlock?): {alive}")


@contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    """Make the interpreter switch threads every ``seconds`` (races show up far more often)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class Tracked:
    """One chaos job and everything seen of it from the outside.

    Thread-safety: ``calls`` is appended by the job's attempts, ``resolved`` by its done
    callback, ``cancels`` by the caller; list appends are atomic, and :func:`check` reads
    them only once every thread is gone.
    """

    def __init__(self, chaos: Chaos, key: str, spec: Spec) -> None:
        config = chaos.config
        self.chaos = chaos
        self.key = key
        self.spec = spec
        self.timeout = spec.timeout if spec.timeout is not None else config.timeout
        self.policy = spec.policy if spec.policy is not None else config.retry
        self.job: Job[Any] = Job(
            self._body,
            name=key,
            timeout=spec.timeout,
            retry=None if spec.policy is None else spec.policy.build(),
        )
        self.calls: list[Call] = []
        self.resolved: list[JobStatus] = []
        self.cancels: list[bool] = []
        self.rejected: BaseException | None = None
        self.via_dispatcher = False

    def __repr__(self) -> str:
        return f"{self.key} {self.job!r} actions={[a.value for a in self.spec.actions]}"

    def action(self, attempt_number: int) -> Action:
        actions = self.spec.actions
        return actions[min(attempt_number, len(actions)) - 1]

    def call(self, attempt_number: int) -> Call | None:
        return next((c for c in self.calls if c.attempt == attempt_number), None)

    # -- the job's body -----------------------------------------------------------------------

    def _body(self) -> object:
        ctx = current_job()
        call = Call(ctx.attempt_number, self.action(ctx.attempt_number), threading.current_thread())
        self.calls.append(call)
        try:
            call.returned = self._act(call.action, ctx)
        except BaseException as exc:
            call.raised = exc
            raise
        return call.returned

    def _act(self, action: Action, ctx: JobContext) -> object:
        label = f"{self.key} attempt {ctx.attempt_number}"
        if action in BASE_ERRORS:
            raise BASE_ERRORS[action](label)
        if action is Action.RAISE:
            raise ChaosError(label)
        if action is Action.FATAL:
            raise ChaosFatalError(label)
        if action is Action.HUGE:
            return bytes(HUGE_BYTES)
        if action is Action.SLOW:
            time.sleep(self.spec.slow)
        elif action is Action.SUBMIT:
            return tuple(
                self.chaos.submit_child(f"{self.key}.{ctx.attempt_number}{c}")
                for c in "abc"[: self.spec.children]
            )
        elif action is Action.WAIT_CHILD:
            child = self.chaos.submit_child(f"{self.key}.{ctx.attempt_number}w")
            try:
                return child.result(timeout=ctx.remaining())
            except BaseException as exc:  # what the child raised (even SystemExit), or timeout
                raise ChildError(f"{label}: {exc!r}") from exc
        elif action is Action.COOP_HANG:
            stop = self.chaos.stop
            while not stop.is_set():
                ctx.wait()  # wakes at the deadline, or at once when cancelled
                ctx.check()  # raises JobTimeoutError / JobCancelledError
        elif action in (Action.HARD_HANG, Action.SPIN_HANG):
            self._hang(ctx.attempt, spin=action is Action.SPIN_HANG)
        elif action is Action.HELD_HANG:
            self.chaos.stop.wait()
        return (self.key, ctx.attempt_number)

    def _hang(self, attempt: Attempt, *, spin: bool) -> None:
        """Ignore the context; go on only once someone else ended this attempt."""
        stop = self.chaos.stop
        while attempt.ended is None and not stop.is_set():
            if spin:
                for _ in range(200):  # pure Python: an interrupt lands here
                    pass
                time.sleep(0)  # let other threads have the GIL (no 5 ms convoy per switch)
            else:
                time.sleep(0.001)
        time.sleep(self.spec.linger)
        if self.spec.late_raise:
            raise ChaosError(f"{self.key}: late")


class Chaos:
    """A pool, a seeded mix of chaos jobs for it, and the books of everything submitted.

    Use it as a context manager: leaving it releases every hang, stops the pool (cancelling
    what is left if the test failed half-way) and waits for the pool's threads to exit.

    Thread-safety: :meth:`submit` and :meth:`submit_child` may be called from any thread.
    """

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)  # the caller's choices (which jobs to cancel)
        self.events = EventLog()
        self.pool = WorkerPool(
            max_workers=config.max_workers,
            thread_name_prefix=f"chaos{config.seed}",
            timeout=config.timeout,
            retry=None if config.retry is None else config.retry.build(),
            queue_size=config.queue_size,
            max_abandoned_threads=config.max_abandoned,
            interrupt_on_timeout=config.interrupt,
            logger=self.events,
        )
        self.dispatcher: Dispatcher | None = None
        if config.dispatcher_share:
            rate = config.dispatch_rate
            burst = None if rate is None else 16
            self.dispatcher = Dispatcher(self.pool, rate=rate, burst=burst, name="chaos-dispatch")
        self.stop = threading.Event()  # releases every hang
        self._lock = threading.Lock()  # guards jobs
        self.jobs: list[Tracked] = []
        self.max_threads_seen = 0
        self._callback_errors = _CallbackErrors()
        self._futures_logger = logging.getLogger("concurrent.futures")
        self._propagate = self._futures_logger.propagate

    def __enter__(self) -> Chaos:
        if self.config.interrupt:
            # Collect earlier tests' pools now: a WeakSet callback run by the garbage collector
            # on a worker thread would swallow an interrupt meant for that thread ("Exception
            # ignored"), which pytest reports as an unraisable exception.
            gc.collect()
        self._futures_logger.addHandler(self._callback_errors)
        self._futures_logger.propagate = False  # counted here, not printed a thousand times
        if self.dispatcher is not None:
            self.dispatcher.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop.set()
            self.pool.shutdown(wait=True, cancel_futures=True, grace=0)  # no-op after a run
            if exc is None:
                self.wait_for_threads()
        finally:
            self._futures_logger.removeHandler(self._callback_errors)
            self._futures_logger.propagate = self._propagate

    @property
    def callback_errors(self) -> int:
        return self._callback_errors.count

    # -- making and submitting jobs -----------------------------------------------------------

    def spec(self, key: str) -> Spec:
        """The job called ``key``: the same for the same seed, whoever submits it when."""
        config = self.config
        rng = random.Random(f"{config.seed}/{key}")
        own_timeout = rng.random() < config.own_timeout_rate
        timeout = rng.uniform(*config.timeouts) if own_timeout else None
        own_policy = rng.random() < config.own_policy_rate
        policy = random_policy(rng) if own_policy else None
        effective_timeout = timeout if timeout is not None else config.timeout
        effective_policy = policy if policy is not None else config.retry
        weights = dict(config.weights)
        if effective_timeout is None:  # a hang needs a deadline to end
            for action in NEED_A_DEADLINE:
                weights[action] = 0
        # No submitting under interrupt_on_timeout: an interrupt that lands inside submit_job
        # (an attempt that lags past its deadline) may leave a job admitted but never queued,
        # a hazard docs/timeouts.md states ("injected exceptions are blunt").
        if key.count(".") >= MAX_DEPTH or config.interrupt:
            for action in SUBMITS:
                weights[action] = 0
        choices, chances = zip(*weights.items(), strict=True)
        attempts = 1 if effective_policy is None else effective_policy.max_attempts
        return Spec(
            actions=tuple(rng.choices(choices, chances, k=attempts)),
            timeout=timeout,
            policy=policy,
            slow=rng.uniform(0.001, 0.004),
            linger=rng.choice([0.0, 0.0, rng.uniform(0.0, 0.02)]),
            late_raise=rng.random() < 0.5,
            children=rng.randint(1, 3),
            raising_callback=rng.random() < config.callback_error_rate,
        )

    def submit(
        self, key: str, rng: random.Random | None = None, spec: Spec | None = None
    ) -> Tracked:
        """Submit the job ``key`` as a caller would; a refusal is recorded, not raised.

        ``rng`` (default: this Chaos's) decides whether the caller cancels it at once;
        ``spec`` replaces what the seed says the job does.
        """
        rng = rng or self.rng
        tracked = Tracked(self, key, spec or self.spec(key))
        tracked.via_dispatcher = rng.random() < self.config.dispatcher_share
        try:
            self._submit(tracked)
        except BaseException as exc:  # RuntimeError after shutdown; anything else is a bug
            tracked.rejected = exc
            return tracked
        if rng.random() < self.config.cancel_rate / 2:
            tracked.cancels.append(tracked.job.future.cancel())
        return tracked

    def submit_child(self, key: str) -> cf.Future[Any]:
        """Submit the job ``key`` from inside a job; raises as ``submit_job`` does."""
        tracked = Tracked(self, key, self.spec(key))
        try:
            self._submit(tracked)
        except BaseException as exc:
            tracked.rejected = exc
            raise
        return tracked.job.future

    def _submit(self, tracked: Tracked) -> None:
        with self._lock:  # on the books before the pool can see it: nothing goes unnoticed
            self.jobs.append(tracked)
        if tracked.via_dispatcher:
            assert self.dispatcher is not None
            future = self.dispatcher.submit(tracked.job)
        else:
            future = self.pool.submit_job(tracked.job)
        if tracked.spec.raising_callback:

            def raising(_: cf.Future[Any]) -> None:
                raise CallbackError(tracked.key)

            future.add_done_callback(raising)
        future.add_done_callback(lambda _: tracked.resolved.append(tracked.job.status))

    def snapshot_jobs(self) -> list[Tracked]:
        with self._lock:
            return list(self.jobs)

    # -- running ----------------------------------------------------------------------------------

    def run(self, jobs: int | None = None, limit: float = 30.0) -> None:
        """Submit ``jobs`` top-level jobs (default: the config's) from this thread, settle."""
        for index in range(self.config.jobs if jobs is None else jobs):
            self.submit(f"j{index}")
        self.settle(limit)

    def settle(self, limit: float = 30.0) -> None:
        """Wait until every submitted job is terminal (cancelling a few meanwhile), then shut
        the pool down (waiting) and wait for every thread to exit.  Fails, with every thread's
        stack dumped, after ``limit`` real seconds."""
        end = time.monotonic() + limit
        self.wait_for_jobs(limit)
        if self.dispatcher is not None:  # it exits once every job it dispatched is terminal
            self.dispatcher.close()
            join_all([self.dispatcher.thread], max(1.0, end - time.monotonic()), "dispatcher")
        self.shutdown(lambda pool: pool.shutdown(wait=True), limit=max(1.0, end - time.monotonic()))
        self.wait_for_threads()

    def wait_for_jobs(self, limit: float = 30.0) -> None:
        """Wait until every job submitted so far is terminal, cancelling a few meanwhile."""
        end = time.monotonic() + limit
        while True:
            pending = [t for t in self.snapshot_jobs() if not t.job.future.done()]
            pending = [t for t in pending if t.rejected is None and t.job.status is not S.CREATED]
            self._see_threads()
            if not pending:
                break
            if time.monotonic() > end:
                fail_with_stacks(f"seed={self.config.seed}: jobs never finished: {pending[:5]}")
            for tracked in pending:
                if self.rng.random() < self.config.cancel_rate / 20:
                    tracked.cancels.append(tracked.job.future.cancel())
            cf.wait([t.job.future for t in pending], timeout=0.02)

    def shutdown(self, call: Callable[[WorkerPool], None], limit: float = 20.0) -> None:
        """``call(pool)`` on a thread of its own, bounded by ``limit`` (stacks dumped on hang)."""
        thread = threading.Thread(target=call, args=(self.pool,), name="chaos-shutdown")
        thread.start()
        join_all([thread], limit, f"seed={self.config.seed}: shutdown")

    def threads(self) -> list[threading.Thread]:
        """The pool's live threads and the Dispatcher's."""
        threads = self.pool.threads()
        if self.dispatcher is not None and self.dispatcher.thread.is_alive():
            threads.append(self.dispatcher.thread)
        return threads

    def _see_threads(self) -> None:
        self.max_threads_seen = max(self.max_threads_seen, len(self.pool.worker_threads()))

    def wait_for_threads(self, limit: float = 10.0) -> None:
        """Release every hang and wait until every thread the pool (and its Dispatcher)
        started has exited."""
        self.stop.set()
        end = time.monotonic() + limit
        while threads := self.threads():
            if time.monotonic() > end:
                names = sorted(t.name for t in threads)
                fail_with_stacks(f"seed={self.config.seed}: threads never exited: {names}")
            time.sleep(0.005)


# -- the books -------------------------------------------------------------------------------


def by_timer(attempt: Attempt) -> bool:
    """The pool's timer (not the job's thread) ended this attempt at its deadline."""
    return attempt.outcome is Outcome.TIMED_OUT and attempt.ended_by == "timer"


def led_to_retry(status: JobStatus, attempts: Sequence[Attempt]) -> int:
    """How many attempts moved the job to RETRY_WAIT: all but the last, and the last too if
    it failed or timed out and the job did not end there (it was cancelled in its backoff)."""
    if not attempts:
        return 0
    last_retried = (
        attempts[-1].outcome in (Outcome.FAILED, Outcome.TIMED_OUT) and status is S.CANCELLED
    )
    return len(attempts) - 1 + last_retried


class _Books:
    """What :func:`check` found: problems (with the job they concern) and a tally."""

    def __init__(self, chaos: Chaos, shutdown_cancels: bool, callback_errors: int) -> None:
        self.chaos = chaos
        self.shutdown_cancels = shutdown_cancels
        self.callback_errors = callback_errors
        self.problems: list[str] = []
        self.tally: Counter[str] = Counter()
        self.unfinished = {job.id for job in chaos.pool.unfinished_jobs()}
        leftovers = [] if chaos.dispatcher is None else chaos.dispatcher.leftover_jobs()
        self.leftovers = {job.id for job in leftovers}

    def bad(self, tracked: Tracked | None, message: str) -> None:
        self.problems.append(f"{tracked!r}: {message}" if tracked is not None else message)

    def job(self, t: Tracked) -> None:
        job, future = t.job, t.job.future
        if t.rejected is not None:
            self.tally["rejected"] += 1
            self.tally["rejected_children"] += "." in t.key
            refusals = (REFUSED, REFUSED_BY_DISPATCHER) if t.via_dispatcher else (REFUSED,)
            if not (isinstance(t.rejected, RuntimeError) and str(t.rejected).startswith(refusals)):
                self.bad(t, f"submit raised {t.rejected!r}, not RuntimeError({refusals})")
            if job.status is not S.CREATED or future.done() or job.attempts:
                self.bad(t, "refused, yet admitted")
            return
        status = job.status
        self.tally[f"status.{status.value}"] += 1
        if not status.is_terminal or not future.done():
            self.bad(t, f"never finished: {status.value}, Future done={future.done()}")
            return
        if t.resolved != [status]:
            self.bad(t, f"done-callbacks saw {t.resolved} (want once, after the job ended)")
        self.future(t, status)
        self.cancellation(t, status)
        self.attempts(t, status)

    def future(self, t: Tracked, status: JobStatus) -> None:
        job, future = t.job, t.job.future
        if future.cancelled() != (status is S.CANCELLED):
            self.bad(t, f"Future cancelled={future.cancelled()} for a {status.value} job")
        if status is S.CANCELLED:
            return
        last = job.attempts[-1] if job.attempts else None
        if last is None:
            self.bad(t, f"{status.value} without an attempt")
            return
        error = future.exception(timeout=0)
        want = {
            S.SUCCEEDED: Outcome.SUCCEEDED,
            S.FAILED: Outcome.FAILED,
            S.TIMED_OUT: Outcome.TIMED_OUT,
        }[status]
        if last.outcome is not want:
            self.bad(t, f"{status.value} but its last attempt {last.outcome}")
        if status is S.SUCCEEDED:
            call = t.call(last.number)
            if error is not None or call is None or future.result(timeout=0) is not call.returned:
                self.bad(t, "its Future's result is not what its last attempt returned")
        elif error is None or error is not last.error:
            self.bad(t, f"its Future raises {error!r}, its last attempt {last.error!r}")

    def cancellation(self, t: Tracked, status: JobStatus) -> None:
        by_caller = any(t.cancels)
        by_shutdown = t.job.id in self.unfinished or t.job.id in self.leftovers
        if by_caller and status is not S.CANCELLED:
            self.bad(t, f"cancel() returned True, yet the job is {status.value}")
        if status is S.CANCELLED and not (by_caller or by_shutdown):
            self.bad(t, "cancelled, neither by the caller nor by shutdown")
        if by_shutdown and not self.shutdown_cancels:
            self.bad(t, "cancelled by a shutdown that cancels nothing")
        self.tally["cancelled_by_caller"] += by_caller
        self.tally["cancelled_by_shutdown"] += by_shutdown

    def attempts(self, t: Tracked, status: JobStatus) -> None:
        attempts = t.job.attempts
        interrupts = self.chaos.config.interrupt
        numbers = sorted(c.attempt for c in t.calls)
        expected = list(range(1, len(attempts) + 1))
        if [a.number for a in attempts] != expected:
            self.bad(t, f"attempt numbers {[a.number for a in attempts]}")
        # Every attempt ran the body exactly once.  (An interrupt may land before the body of
        # an attempt the timer already ended records its call.)
        if numbers != expected and not (interrupts and set(numbers) <= set(expected)):
            self.bad(t, f"the body ran for attempts {numbers}, the pool made {expected}")
        if not attempts and status is not S.CANCELLED:
            self.bad(t, f"{status.value} without running")
        if t.via_dispatcher:
            self.tally["via_dispatcher"] += 1
            self.tally["via_dispatcher.attempts"] += len(attempts)
            self.tally["via_dispatcher.cancelled"] += status is S.CANCELLED
        policy = t.policy
        for index, attempt in enumerate(attempts):
            self.attempt(t, attempt)
            last = index == len(attempts) - 1
            outcome = attempt.outcome
            if outcome in (Outcome.SUCCEEDED, Outcome.CANCELLED):
                if not last:
                    self.bad(t, f"attempt {attempt.number} {outcome} was not the last")
                continue
            retries = policy is not None and policy.retries(attempt.error, attempt.number)
            if not last and not retries:
                self.bad(t, f"attempt {attempt.number} ({attempt.error!r}) retried: {policy}")
            if last and retries != (status is S.CANCELLED):
                self.bad(t, f"{status.value} after {attempt.error!r}; policy {policy}")
        self.tally["attempts"] += len(attempts)
        self.tally["retries"] += led_to_retry(status, attempts)

    def attempt(self, t: Tracked, attempt: Attempt) -> None:
        """One attempt ended once, as its action allows; its error is what really happened."""
        outcome, error = attempt.outcome, attempt.error
        action = t.action(attempt.number)
        call = t.call(attempt.number)
        self.tally[f"attempt.{action.value}.{outcome}"] += 1
        if attempt.ended is None or outcome is None:
            self.bad(t, f"attempt {attempt.number} never ended")
            return
        deadline = None if t.timeout is None else attempt.started + t.timeout
        if attempt.deadline != deadline:
            self.bad(t, f"attempt {attempt.number}: deadline {attempt.deadline}, want {deadline}")
        where = f"attempt {attempt.number} ({action.value}) {outcome}"
        if outcome is Outcome.SUCCEEDED:
            if action not in RETURNS or error is not None:
                self.bad(t, f"{where} with error {error!r}")
        elif outcome is Outcome.FAILED:
            raised = None if call is None else call.raised
            allowed = RAISES.get(action, ())  # what this action may raise by itself
            if error is None or error is not raised or not isinstance(error, allowed):
                self.bad(t, f"{where} with {error!r}; the body raised {raised!r}")
        elif outcome is Outcome.TIMED_OUT:
            if not isinstance(error, JobTimeoutError) or attempt.deadline is None:
                self.bad(t, f"{where} with {error!r}, deadline {attempt.deadline}")
            elif attempt.ended < attempt.deadline:
                self.bad(t, f"{where} before its deadline")
            elif by_timer(attempt):
                self.tally["ended_by_pool"] += 1
                self.tally["lag_timeouts"] += action not in NEED_A_DEADLINE
            elif call is None or (
                error is not call.raised  # a cooperative job's own JobTimeoutError, or...
                and not ("exceeded its" in str(error) and error.__cause__ is call.raised)
            ):  # ...its thread came back past the deadline, returning or raising: timed out
                self.bad(t, f"{where}: {error!r} came from neither the timer nor the job")
        elif outcome is Outcome.CANCELLED:
            self.tally["ended_by_pool"] += 1
            if not self.shutdown_cancels or error is not None:
                self.bad(t, f"{where} by a shutdown that cancels nothing / error {error!r}")
        if action in HANGS and outcome not in (Outcome.TIMED_OUT, Outcome.CANCELLED):
            self.bad(t, f"{where}: a hang cannot end by itself")
        if action in HANGS - {Action.COOP_HANG} and not (
            by_timer(attempt) or outcome is Outcome.CANCELLED
        ):
            self.bad(t, f"{where}: only the pool can end a non-cooperative hang")

    def stats(self, admitted: list[Tracked]) -> None:
        chaos = self.chaos
        s = chaos.pool.stats.snapshot()
        jobs = [t.job for t in admitted]
        attempts = [a for job in jobs for a in job.attempts]
        statuses = Counter(job.status for job in jobs)
        outcomes = Counter(a.outcome for a in attempts)
        want = {
            "submitted": len(jobs),
            "in_flight": 0,
            "succeeded": statuses[S.SUCCEEDED],
            "failed": statuses[S.FAILED],
            "timed_out": statuses[S.TIMED_OUT],
            "cancelled": statuses[S.CANCELLED],
            "attempts": len(attempts),
            "retries": self.tally["retries"],
            "attempt_timeouts": outcomes[Outcome.TIMED_OUT],
            "abandoned_threads": 0,
        }
        got = {name: getattr(s, name) for name in want}
        got["queue_wait.count"], want["queue_wait.count"] = s.queue_wait.count, len(attempts)
        got["run_time.count"], want["run_time.count"] = s.run_time.count, len(attempts)
        if got != want:
            self.bad(None, f"stats {got}, the jobs say {want}")
        if s.abandoned_threads_total > self.tally["ended_by_pool"]:
            self.bad(
                None,
                f"{s.abandoned_threads_total} threads abandoned, more than the "
                f"{self.tally['ended_by_pool']} attempts the pool ended",
            )
        self.tally["abandoned_threads_total"] = s.abandoned_threads_total
        events = chaos.events.counts
        want_events = {
            "job.started": len(attempts),
            "job.succeeded": statuses[S.SUCCEEDED],
            "job.failed": outcomes[Outcome.FAILED],
            "job.timed_out": outcomes[Outcome.TIMED_OUT],
            "job.retry_scheduled": self.tally["retries"],
            "job.gave_up": statuses[S.FAILED] + statuses[S.TIMED_OUT],
            "job.cancelled": statuses[S.CANCELLED],
            "pool.thread_abandoned": s.abandoned_threads_total,
            "chronos.internal_error": 0,
        }
        # Every attempt the pool ended reports its late outcome once its thread returns; an
        # interrupt may land in the middle of that report.
        late = events["job.late_result"]
        if late != self.tally["ended_by_pool"] and not (
            chaos.config.interrupt and late <= self.tally["ended_by_pool"]
        ):
            self.bad(
                None,
                f"{late} late results, {self.tally['ended_by_pool']} attempts ended by the pool",
            )
        internal = chaos.events.internal_errors
        if internal:
            self.bad(None, f"internal errors: {internal[:3]}")
        got_events = {name: events[name] for name in want_events}
        if got_events != want_events:
            self.bad(None, f"events {got_events}, the jobs say {want_events}")
        raising = sum(t.spec.raising_callback for t in admitted) + self.callback_errors
        if chaos.callback_errors != raising:
            self.bad(None, f"{chaos.callback_errors} callback errors logged, {raising} raised")
        # done() is not enough: wait() and as_completed() count a cancelled Future as done
        # only once it was also notified (set_running_or_notify_cancel).
        _, not_done = cf.wait([t.job.future for t in admitted], timeout=0)
        if not_done:
            self.bad(None, f"{len(not_done)} Futures done(), yet not done for wait()")
        if chaos.dispatcher is not None:
            # Every attempt of a dispatched job passed the Dispatcher; so did a job cancelled
            # after it was dispatched, before it ran.
            dispatched = chaos.dispatcher.dispatched
            least = self.tally["via_dispatcher.attempts"]
            most = least + self.tally["via_dispatcher.cancelled"]
            if not least <= dispatched <= most or events["job.dispatched"] != dispatched:
                self.bad(
                    None,
                    f"{dispatched} dispatched ({events['job.dispatched']} events), "
                    f"{least} attempts of jobs handed to the Dispatcher (+ {most - least} "
                    "cancelled)",
                )
            if self.leftovers and not self.shutdown_cancels:
                self.bad(None, f"the Dispatcher left {len(self.leftovers)} jobs behind")
        unfinished = chaos.pool.unfinished_jobs()
        if len(unfinished) != len(self.unfinished):
            self.bad(None, "a job is listed twice by unfinished_jobs()")

    def threads(self) -> None:
        chaos = self.chaos
        if chaos.max_threads_seen > chaos.config.thread_cap:
            seen = f"{chaos.max_threads_seen} threads, cap {chaos.config.thread_cap}"
            self.bad(None, f"over max_workers + max_abandoned_threads: {seen}")
        if chaos.pool.threads():
            self.bad(None, f"threads left: {chaos.pool.threads()}")


def check(
    chaos: Chaos, *, shutdown_cancels: bool = False, callback_errors: int = 0
) -> Counter[str]:
    """Check the books of a finished run (see the module docstring); return a tally.

    Call it after :meth:`Chaos.settle` (or a shutdown and :meth:`Chaos.wait_for_threads`):
    every thread is gone, so nothing moves while it reads.

    Args:
        shutdown_cancels: the run's shutdown may cancel jobs (``cancel_futures`` or a grace).
        callback_errors: how many raising done-callbacks the caller added beyond the mix's
            own (each is logged once on the ``concurrent.futures`` logger).

    Raises:
        AssertionError: listing every problem found, with the seed.
    """
    books = _Books(chaos, shutdown_cancels, callback_errors)
    jobs = chaos.snapshot_jobs()
    for tracked in jobs:
        books.job(tracked)
    admitted = [t for t in jobs if t.rejected is None]
    books.stats(admitted)
    books.threads()
    for t in jobs:
        books.tally[f"depth{t.key.count('.')}"] += 1
    if books.problems:
        shown = "\n  ".join(books.problems[:25])
        raise AssertionError(
            f"seed={chaos.config.seed}: {len(books.problems)} problems "
            f"(tally {dict(books.tally)}):\n  {shown}"
        )
    return books.tally


# -- 8 threads submitting while others shut the pool down -------------------------------------

ShutdownCall = Callable[[WorkerPool], None]

#: Ways to shut a pool down while submitters race it, and whether they may cancel jobs.
SHUTDOWNS: dict[str, tuple[list[ShutdownCall], bool]] = {
    "shutdown": ([lambda pool: pool.shutdown()], False),
    "cancel_futures": ([lambda pool: pool.shutdown(cancel_futures=True)], True),
    "no_wait": ([lambda pool: pool.shutdown(wait=False)], False),
    "grace": ([lambda pool: pool.shutdown(grace=0.01)], True),
    "terminate": ([WorkerPool.terminate], True),
    "no_wait+terminate": ([lambda pool: pool.shutdown(wait=False), WorkerPool.terminate], True),
}


@dataclass
class RaceReport:
    """What the submitters of :func:`race_shutdown` saw."""

    accepted: int = 0
    refused: int = 0
    problems: list[str] = field(default_factory=list)


def race_shutdown(
    chaos: Chaos,
    shutdowns: Sequence[ShutdownCall],
    *,
    submitters: int = 8,
    per_thread: int = 60,
    limit: float = 20.0,
) -> RaceReport:
    """``submitters`` threads submit chaos jobs while each of ``shutdowns`` runs on a thread of
    its own, once a random number of jobs were accepted.  All start at one barrier.

    Every submit must either raise ``RuntimeError`` or return a Future (checked later by
    :func:`check`); once a thread was refused it stays refused; a submit that began after a
    shutdown call returned is refused.  Everything is bounded by ``limit`` real seconds, and a
    hang dumps every thread's stack.
    """
    seed = chaos.config.seed
    report = RaceReport()
    report_lock = threading.Lock()  # guards report
    start = threading.Barrier(submitters + len(shutdowns))
    trigger_at = chaos.rng.randrange(submitters * per_thread // 2)
    accepted = itertools.count(1)
    go = threading.Event()  # enough jobs were accepted: shut down now
    returned = threading.Event()  # a shutdown call returned: every later submit is refused

    def submitter(index: int) -> None:
        rng = random.Random(f"{seed}/submitter{index}")
        start.wait(5)
        refused = 0
        for number in range(per_thread):
            after_shutdown = returned.is_set()
            tracked = chaos.submit(f"t{index}-{number}", rng)
            with report_lock:
                if tracked.rejected is None:
                    report.accepted += 1
                    if refused or after_shutdown:
                        report.problems.append(f"{tracked!r} accepted after a refusal")
                else:
                    report.refused += 1
            if tracked.rejected is not None:
                refused += 1
                if refused >= 3:  # seen enough: refusals stay refusals
                    break
            elif next(accepted) >= trigger_at:
                go.set()
        go.set()

    def stopper(call: ShutdownCall) -> None:
        start.wait(5)
        go.wait(limit)
        call(chaos.pool)
        returned.set()

    threads = [
        threading.Thread(target=submitter, args=(i,), name=f"submitter{i}")
        for i in range(submitters)
    ] + [
        threading.Thread(target=stopper, args=(call,), name=f"shutdown{i}")
        for i, call in enumerate(shutdowns)
    ]
    for thread in threads:
        thread.start()
    end = time.monotonic() + limit
    starved_since = math.inf
    while any(thread.is_alive() for thread in threads):
        now = time.monotonic()
        starved = _starved(chaos.pool)
        starved_since = min(starved_since, now) if starved else math.inf
        if now - starved_since > 1.0:
            raise AssertionError(f"seed={seed}: a draining shutdown starved: {starved}")
        if now > end:
            join_all(threads, 0.0, f"seed={seed}: submitters racing shutdown")
        for thread in threads:
            thread.join(0.01)
    return report


def _starved(pool: WorkerPool) -> str:
    """Describe a shut-down pool that holds queued jobs but has no worker left ("" if not)."""
    queued = pool.stats.snapshot().queued
    workers = [t for t in pool.threads() if not t.name.endswith(("_timer", "_shutdown"))]
    if "shut down" not in repr(pool) or workers or not queued:
        return ""
    return f"{queued} jobs queued, no worker thread left"
