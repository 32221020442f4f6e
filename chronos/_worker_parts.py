"""The parts of :class:`chronos.worker.Worker` (its own module so that the Worker stays
readable; over ~400 lines as five small parts, each documented where it stands): the claims
it holds and its counters
(:class:`ClaimBook`), how a job's outcome becomes a
:class:`chronos.backends.durable.Finish` (:func:`outcome_of`), the finisher's loop
(:class:`Finisher`), the store's backoff, and what :meth:`chronos.worker.Worker.run`
waits on (:class:`SignalGuard`).

:mod:`chronos.worker` owns the threads these run on, and makes the other store calls.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from types import FrameType
from typing import Any

from chronos.backends.durable import (
    Claimed,
    DurableBackend,
    Finish,
    FinishKind,
    FinishResult,
    dump_result,
)
from chronos.clock import SYSTEM_CLOCK, join_timeout
from chronos.job import Job, JobFuture
from chronos.retry import RetryPolicy

__all__ = [
    "ClaimBook",
    "Finisher",
    "Held",
    "SignalGuard",
    "WorkerStatistics",
    "claim_of",
    "outcome_of",
    "store_delay",
]

#: The backoff between two tries of a store call that failed: tenacity's exponential wait
#: with full jitter, through chronos's RetryPolicy (the one module that imports tenacity).
_STORE_BACKOFF = RetryPolicy(max_attempts=2**62, backoff=0.05, max_backoff=2.0)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The finisher writes what came within this many real seconds, or FLUSH_BATCH at once.
FLUSH_WINDOW, FLUSH_BATCH = 0.002, 64
_KINDS = {
    FinishKind.COMPLETE: "completed",
    FinishKind.RETRY: "retried",
    FinishKind.FAIL: "failed",
    FinishKind.RELEASE: "released",
}
#: What the finisher takes: a held claim and its finish, or None (flush and exit).
FinishItem = tuple["Held", Finish] | None

_claims_lock = threading.Lock()  # guards _claims
_claims: dict[int, Claimed] = {}  # Job.id -> its claim, while the job is in a pool


def claim_of(job_id: int) -> Claimed | None:
    """The claim of the in-process job ``job_id``, while it is in a pool."""
    with _claims_lock:
        return _claims.get(job_id)


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """A snapshot of one :class:`chronos.worker.Worker`, taken under its lock.

    Attributes:
        claimed: claims received from the store.
        running: claims held in this process whose job has not ended (waiting in the pool
            or the rate limiter, or running).
        completed, retried, failed, released: finishes of each kind the store took
            (APPLIED or DUPLICATE); an unknown task or a result that is not JSON counts as
            failed.
        fenced: finishes the store refused (the lease was lost): their outcome was dropped.
        duplicates: finishes the store had already taken (a replay): successes.
        lost_leases: held claims found lost: by a heartbeat, or by the local watchdog.
        heartbeats: heartbeat calls that succeeded; heartbeat_failures: those that raised.
        store_errors: claim, finish and recover calls that raised (each retried later).
        abandoned: claims given up without a finish (a running job cut short by the drain,
            a finish that could not be written before the drain's deadline): their leases
            expire and recovery runs them again.
        claiming: the claim loop may claim now (not draining, the watchdog content).
        state: ``"new"``, ``"running"``, ``"draining"`` or ``"stopped"``.
    """

    claimed: int
    running: int
    completed: int
    retried: int
    failed: int
    released: int
    fenced: int
    duplicates: int
    lost_leases: int
    heartbeats: int
    heartbeat_failures: int
    store_errors: int
    abandoned: int
    claiming: bool
    state: str


class Held:
    """One claim this worker holds, from the claim until the store answered its finish.

    Thread-safety: ``done``, ``lost`` and ``cancel_requested`` are written under the
    :class:`ClaimBook`'s lock; ``claimed``, ``key`` and ``job`` never change.
    """

    __slots__ = ("cancel_requested", "claimed", "done", "job", "key", "lost")

    def __init__(self, claimed: Claimed, job: Job[Any] | None) -> None:
        self.claimed = claimed
        self.key = (claimed.id, claimed.token)
        self.job = job  # None: never submitted (an unknown task, a claim during the drain)
        self.done = False  # its job ended: it no longer takes a slot
        self.lost = False  # no longer heartbeated: the store (or the watchdog) says lost
        self.cancel_requested = False  # the store reported a cancel request


class ClaimBook:
    """The claims one Worker holds, its counters and the queue of its finisher.

    A claim is held from :meth:`add` until the store answered its finish
    (:meth:`answered`) or it was given up (abandoned); it takes a slot until its job ended
    (:meth:`settle`).  Only :meth:`settle` feeds the finisher's queue, under the lock, so
    nothing comes after the sentinel that :meth:`close` puts.

    Thread-safety: every method may be called from any thread; ``lock`` guards every field
    below it.  No method calls out (a job's cancel, a log) while holding it.
    """

    def __init__(self, workers: int, limit: float, now: float) -> None:
        self.workers = workers
        self.limit = limit  # the watchdog's: lease - lease/3
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)  # notified when a held job ends
        self.held: dict[tuple[str, int], Held] = {}  # (id, token) -> claim
        self.busy = 0  # held claims whose job has not ended: slots taken
        self.counts: Counter[str] = Counter()
        self.last_ok = now  # clock reading at which the last good heartbeat was sent
        self.closed = False  # the finisher's sentinel is queued
        self.finishes: SimpleQueue[FinishItem] = SimpleQueue()
        self.slot_freed = threading.Event()  # "look again" for the claimer

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def free_slots(self) -> int:
        with self.lock:
            return self.workers - self.busy

    def add(self, claimed: Claimed, job: Job[Any] | None) -> Held:
        """Hold a new claim (taking a slot); ``job``, if any, is about to be submitted."""
        held = Held(claimed, job)
        with self.lock:
            for old in self.held.values():  # handed out again: an older claim was lost
                if old.claimed.id == claimed.id and not old.lost:
                    old.lost = True
                    self.counts["lost_leases"] += 1
            self.counts["claimed"] += 1
            self.held[claimed.id, claimed.token] = held
            self.busy += 1
        if job is not None:
            with _claims_lock:
                _claims[job.id] = claimed
        return held

    def settle(self, held: Held, finish: Finish | None) -> None:
        """The job of ``held`` ended: free its slot; queue ``finish`` (None: give it up)."""
        if held.job is not None:
            with _claims_lock:
                _claims.pop(held.job.id, None)
        with self.idle:
            if held.done:
                return
            held.done = True
            self.busy -= 1
            if finish is not None and not self.closed:
                self.finishes.put((held, finish))
            elif self.held.pop(held.key, None) is not None:
                self.counts["abandoned"] += 1
            self.idle.notify_all()
        self.slot_freed.set()

    def answered(
        self, batch: Sequence[tuple[Held, Finish]], answers: Sequence[FinishResult]
    ) -> None:
        """The store answered ``batch``: count, and let the claims go."""
        with self.lock:
            for (held, finish), answer in zip(batch, answers, strict=True):
                self.held.pop(held.key, None)
                if answer is FinishResult.FENCED:
                    self.counts["fenced"] += 1
                else:
                    self.counts[_KINDS[finish.kind]] += 1
                    self.counts["duplicates"] += answer is FinishResult.DUPLICATE

    def abandon(self, batch: Sequence[tuple[Held, Finish]] | None = None) -> None:
        """Give up the claims of ``batch`` (None: every claim still held) unfinished."""
        with self.lock:
            chosen = list(self.held.values()) if batch is None else [h for h, _ in batch]
            for held in chosen:
                if self.held.pop(held.key, None) is not None:
                    self.counts["abandoned"] += 1

    def close(self) -> None:
        """No finish after this one: queue the finisher's sentinel; stop beating for the
        jobs that still run (a shared pool's, past the grace: left to their leases)."""
        with self.lock:
            self.closed = True
            self.finishes.put(None)
            for held in self.held.values():
                held.lost = held.lost or not held.done

    def beat_claims(self) -> list[tuple[str, int]]:
        """The claims to heartbeat: every held one that is not lost."""
        with self.lock:
            return [(h.claimed.id, h.claimed.token) for h in self.held.values() if not h.lost]

    def beat_ok(self, sent: float, called: bool) -> None:
        with self.lock:
            self.last_ok = max(self.last_ok, sent)
            self.counts["heartbeats"] += called

    def beat_recent(self, now: float, *, failed: bool = False) -> bool:
        """The watchdog: a heartbeat sent within ``limit`` of ``now`` succeeded (``failed``:
        count a failed one first)."""
        with self.lock:
            self.counts["heartbeat_failures"] += failed
            return now - self.last_ok < self.limit

    def lose(self, ids: Sequence[str] | None) -> list[Held]:
        """Mark held claims lost (``ids``, or all): the newly lost ones."""
        with self.lock:
            wanted = None if ids is None else set(ids)
            chosen = [h for h in self.held.values() if wanted is None or h.claimed.id in wanted]
            lost = [h for h in chosen if not h.lost]
            for held in lost:
                held.lost = True
            self.counts["lost_leases"] += len(lost)
        return lost

    def mark_cancel(self, ids: Sequence[str]) -> list[Held]:
        with self.lock:
            wanted = set(ids)
            chosen = [h for h in self.held.values() if h.claimed.id in wanted and not h.lost]
            for held in chosen:
                held.cancel_requested = True
        return chosen

    def waiting_jobs(self) -> list[Job[Any]]:
        """The jobs of held claims that have not ended (waiting or running)."""
        with self.lock:
            return [h.job for h in self.held.values() if h.job is not None and not h.done]

    def wait_idle(self, grace: float, force: threading.Event) -> None:
        """Wait up to ``grace`` real seconds until no held job runs, or ``force`` is set (its
        setter notifies :attr:`idle`)."""
        deadline = SYSTEM_CLOCK.now() + grace
        with self.idle:
            while self.busy and not force.is_set():
                left = deadline - SYSTEM_CLOCK.now()
                if left <= 0:
                    return
                self.idle.wait(join_timeout(left))

    def snapshot(self, claiming: bool, state: str) -> WorkerStatistics:
        with self.lock:
            c = self.counts
            return WorkerStatistics(
                claimed=c["claimed"], running=self.busy, completed=c["completed"],
                retried=c["retried"], failed=c["failed"], released=c["released"],
                fenced=c["fenced"], duplicates=c["duplicates"], lost_leases=c["lost_leases"],
                heartbeats=c["heartbeats"], heartbeat_failures=c["heartbeat_failures"],
                store_errors=c["store_errors"], abandoned=c["abandoned"],
                claiming=claiming, state=state,
            )  # fmt: skip


def _finish(claimed: Claimed, kind: FinishKind, **fields: Any) -> Finish:
    return Finish(claimed.id, claimed.token, kind, **fields)


def describe(error: BaseException) -> str:
    """The stored text of an error: ``"ValueError: boom"``."""
    return f"{type(error).__name__}: {error}"


def outcome_of(held: Held, future: JobFuture[Any]) -> Finish | None:
    """The finish that the ended job of ``held`` calls for, or None for none at all.

    Success: COMPLETE with the result, or FAIL if it is not JSON-able.  An exception
    (JobTimeoutError included): RETRY after the delay of the spec's retry policy, asked with
    the store's attempt number, else FAIL.  Cancelled before it started (the drain, a lost
    lease, a cancel request): RELEASE.  Cancelled while it ran (the drain's grace ran out):
    None, the claim is left to its lease.
    """
    claimed, job = held.claimed, held.job
    assert job is not None
    if future.cancelled():
        return None if job.attempts else _finish(claimed, FinishKind.RELEASE)
    error = future.exception()
    if error is None:
        result = future.result()
        try:
            dump_result(result)
        except TypeError as exc:
            return _finish(claimed, FinishKind.FAIL, error=f"{describe(exc)} (task {job.name!r})")
        return _finish(claimed, FinishKind.COMPLETE, result=result)
    text = describe(error)
    policy = claimed.spec.retry
    delay = None
    if policy is not None:
        # This attempt's run time: the store does not tell when the first attempt started.
        duration = job.attempts[-1].duration if job.attempts else None
        delay = policy.next_delay(claimed.attempt, error, max(0.0, duration or 0.0))
    if delay is None:
        return _finish(claimed, FinishKind.FAIL, error=text)
    return _finish(claimed, FinishKind.RETRY, error=text, delay=delay)


class Finisher:
    """The finisher thread's body: writes the finishes of a :class:`ClaimBook`'s queue in
    batches (what comes within :data:`FLUSH_WINDOW` of the first, at most
    :data:`FLUSH_BATCH`), one ``backend.finish`` call each, until the sentinel.

    A store error is reported to ``on_error`` and the batch tried again after a backoff,
    until :attr:`give_up` is set (the drain's deadline): then the batch is abandoned.

    Thread-safety: :meth:`run` on one thread; :attr:`give_up` may be set from any.
    """

    def __init__(
        self,
        backend: DurableBackend,
        book: ClaimBook,
        log: Any,
        on_error: Callable[[str, Exception, int], None],
    ) -> None:
        self._backend, self._book, self._log, self._on_error = backend, book, log, on_error
        self.give_up = threading.Event()

    def run(self) -> None:
        while True:
            batch, end = self._take()
            if batch:
                self._write(batch)
            if end:
                return

    def _take(self) -> tuple[list[tuple[Held, Finish]], bool]:
        """The next batch; and True once the sentinel (None) was taken: flush and exit."""
        items = self._book.finishes
        first = items.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = SYSTEM_CLOCK.now() + FLUSH_WINDOW
        while len(batch) < FLUSH_BATCH:
            try:
                item = items.get(timeout=max(0.0, deadline - SYSTEM_CLOCK.now()))
            except Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _write(self, batch: list[tuple[Held, Finish]]) -> None:
        failures = 0
        while True:
            try:
                answers = self._backend.finish([finish for _, finish in batch])
                break
            except Exception as exc:
                failures += 1
                self._on_error("finish", exc, failures)
                if self.give_up.wait(store_delay(failures, 1.0)):
                    self._book.abandon(batch)
                    return
        self._book.answered(batch, answers)
        for (held, finish), answer in zip(batch, answers, strict=True):
            if answer is FinishResult.FENCED:
                self._log.warning("worker.finish_fenced", job_id=held.claimed.id,
                                  token=held.claimed.token, kind=finish.kind.value)  # fmt: skip


def store_delay(failures: int, cap: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row of a store call."""
    delay = _STORE_BACKOFF.next_delay(min(max(1, failures), 30), ConnectionError(), 0.0)
    return min(cap, max(0.01, 0.05 if delay is None else delay))


class SignalGuard:
    """What :meth:`chronos.worker.Worker.run`'s main thread blocks on: a pipe that
    :meth:`wake` (any thread) and, with ``install``, SIGINT/SIGTERM write to.

    Python runs signal handlers on the main thread only, and a main thread blocked in a
    lock wait is not woken by a signal that the kernel delivered to another thread.  So the
    signals write to the pipe through :func:`signal.set_wakeup_fd` (from whichever thread
    received them), and the main thread waits in ``select`` on it: it wakes at once, runs
    the handler (which only records the signal: no lock), and acts.

    Thread-safety: enter, :meth:`wait` and exit on one thread (the main thread, with
    ``install``); :meth:`wake` from any thread.
    """

    def __init__(self, install: bool) -> None:
        self.install = install
        self.received: list[int] = []  # appended by the handler only (atomic)
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._pipe: tuple[int, int] | None = None

    def __enter__(self) -> SignalGuard:
        if self.install and threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Worker.run(install_signals=True) must run on the main thread")
        self._pipe = read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        if self.install:
            try:
                self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
                for sig in _SIGNALS:
                    self._previous[sig] = signal.signal(sig, self._handle)
            except BaseException:
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self.install and self._pipe is not None:
            signal.set_wakeup_fd(self._previous_fd)
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def wait(self) -> None:
        """Block until a signal or a :meth:`wake` (or spuriously)."""
        assert self._pipe is not None
        select.select([self._pipe[0]], [], [])
        with contextlib.suppress(BlockingIOError):
            os.read(self._pipe[0], 512)

    def serve(
        self,
        stopped: threading.Event,
        stop: Callable[[], None],
        force: Callable[[], None],
    ) -> int:
        """Wait until ``stopped``: the first signal (or Ctrl+C) runs ``stop`` on a thread of
        its own (this one must go on listening), the second calls ``force``.  Returns the
        exit status: 130 after a signal, else 0."""
        interrupts, stopper = 0, None
        while not stopped.is_set():
            try:
                self.wait()
            except KeyboardInterrupt:  # not installed: Python's own SIGINT handler
                interrupts += 1
            signals = len(self.received) + interrupts
            if signals and stopper is None:
                stopper = threading.Thread(target=stop, name="chronos-worker-stop")
                stopper.start()
            if signals > 1:
                force()
        if stopper is not None:
            stopper.join()
        return 130 if interrupts or self.received else 0

    def wake(self) -> None:
        pipe = self._pipe
        if pipe is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
                os.write(pipe[1], b"w")
