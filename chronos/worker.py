"""Worker: runs the jobs of one durable :class:`chronos.tasks.Queue` in a WorkerPool.

(Over the ~400 lines the house style aims at, by its docstring: the design, the stop order
and the thread-safety of three cooperating threads are stated here, in one place.)

::

    queue = chronos.tasks.Queue("sqlite:///jobs.db")

    @queue.task(retry=chronos.RetryPolicy(max_attempts=5))
    def send_email(to: str) -> str: ...

    sys.exit(Worker(queue, workers=8).run())    # SIGTERM/Ctrl+C: drain; a second: at once

**Design.**  Three threads per Worker, each with one job, over the store's contract
(:mod:`chronos.backends.durable`):

- the *claimer* claims at most the free slots (``workers`` minus the claims it holds: no
  hoarding; a shared pool's own load is not counted), resolves each task name through
  ``queue.registry`` only (never an import), and submits a :class:`chronos.Job` with the
  spec's timeout (None: the pool's) and a one-attempt retry policy (retries are scheduled
  by the store; it also overrides a shared pool's default policy) to the pool, or to a
  ``Dispatcher(rate=...)``.  With nothing free it waits for a slot (an Event); with
  nothing to claim, in ``backend.wait_for_work`` (bounded): it never polls busily.
- each job's done-callback (on a pool thread) turns the outcome into a
  :class:`~chronos.backends.durable.Finish` and only enqueues it; the *finisher* writes
  them in batches (a few ms, at most 64) with one ``backend.finish`` call and counts the
  answers (a FENCED one is logged at WARNING and dropped).
- the *heartbeat* thread extends every held lease with one ``backend.heartbeat`` call each
  ``lease/3`` (on ``clock``), cancels the waiting jobs whose claim is lost or whose cancel
  was requested (they finish RELEASE: the store turns a requested cancel into CANCELLED),
  and runs ``backend.recover`` (idempotent: any worker may) at the same pace.  Its
  *watchdog*: no good beat for ``lease - lease/3`` (timed from the send of the last good
  one) stops claiming until one succeeds, and treats every held claim as lost.

One process normally runs one Worker (the rules ask for one heartbeat thread per
process); a second Worker (another queue) brings its own three threads.  A store error
in any thread is caught, counted, logged and retried after a bounded, jittered backoff
(tenacity's, through :class:`chronos.RetryPolicy`): it never ends a thread.

**Stop** (:meth:`Worker.stop`), in order: stop claiming (join the claimer); cancel the
jobs claimed but not started (each finishes RELEASE, its attempt refunded); give the
running ones ``grace`` seconds; then cut them short (an own pool is terminated; a shared
pool's jobs run on, no longer heartbeated).  A job cut short is **not** finished: its
thread may still run and have side effects, so it is left to its lease and recovery runs
it again, its attempt counted (a job that never ends within the grace cannot loop for
ever).  The heartbeats go on all along; then the last finishes are flushed and the
threads joined, each within a bound.  :meth:`Worker.run` waits on a pipe that signals
write to (``signal.set_wakeup_fd``: any thread may receive them), drains on a thread of
its own at the first SIGINT/SIGTERM and terminates at the second, and returns 130 after
a signal, else 0 (as ``chronos demo`` does).

A running job whose cancel was requested, or whose lease was lost, is told to stop
(:meth:`chronos.Job.request_stop`): a cooperative one sees ``current_job().cancelled``
and steps out; one that never looks runs to its end (a failure or retry then ends a
cancelled job CANCELLED, a success SUCCEEDED; a lost lease's finish is FENCED).  It reads
its fencing token with :func:`current_claim` to make its side effects idempotent.

**Not done:** a retry policy's ``deadline`` counts the current attempt only (a claim does
not say when the first one started).  Finishes are not sent in the claim's call (they
overlap on two threads).

Thread-safety: every public method may be called from any thread, except :meth:`run` with
signals (the main thread) and :meth:`stop` from one of the worker's own jobs (it would
wait for itself).  The held claims and the counters are a
:class:`chronos._worker_parts.ClaimBook` (one lock); ``_lock`` guards the state.  The
Worker owns its three threads (and its pool, if it made it); a pool given stays the
caller's and is never shut down.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from chronos._validate import check_clock, check_count, check_number, check_optional_number
from chronos._worker_parts import (
    ClaimBook,
    Finisher,
    Held,
    SignalGuard,
    WorkerStatistics,
    claim_of,
    outcome_of,
    store_delay,
)
from chronos.backends.durable import Claimed, Finish, FinishKind
from chronos.clock import SYSTEM_CLOCK, Clock
from chronos.context import current_job
from chronos.dispatcher import Dispatcher
from chronos.events import default_logger
from chronos.job import Job, JobFuture
from chronos.pool import WorkerPool
from chronos.retry import RetryPolicy
from chronos.tasks import Queue

__all__ = ["Worker", "WorkerStatistics", "current_claim"]

#: Longest real wait of the claimer for work or a slot before it looks again.
IDLE_WAIT = 0.25
#: Real seconds the drain gives the claimer to exit and the finisher to flush.
JOIN_TIMEOUT, FLUSH_TIMEOUT = 2.0, 5.0
_ONE_ATTEMPT = RetryPolicy(max_attempts=1)  # overrides any default retry of a shared pool


#: How long finished jobs are kept by default before a worker purges them: a week.
DEFAULT_RESULT_TTL = 7 * 24 * 3600.0
#: How often (seconds, on the worker's clock) a worker purges finished jobs.
PURGE_INTERVAL = 60.0


def current_claim() -> Claimed | None:
    """The claim of the durable job running on this thread (its ``token`` is an idempotency
    key for its side effects, ``attempt`` counts crashed attempts too), or None elsewhere."""
    try:
        job_id = current_job().job.id
    except RuntimeError:
        return None
    return claim_of(job_id)


class Worker:
    """Claims the jobs of ``queue`` and runs them in a WorkerPool.  See the module docstring.

    Args:
        queue: the durable queue; its registry names the tasks this worker can run.
        workers: the most claims held at once (own pool: also its threads); >= 1.
        rate: jobs started per second at most (a :class:`chronos.Dispatcher`), or None.
        lease: seconds each claim is leased for, renewed every ``lease/3``; > 0.
        grace: default seconds :meth:`stop` gives running jobs; >= 0.
        pool: an existing pool to run the jobs in, beside its own jobs (never shut down
            here); None: an own ``WorkerPool(workers, thread_name_prefix="chronos-worker")``.
        owner: the name recorded with each claim (default ``host:pid:random``).
        result_ttl: seconds finished jobs (and their results) are kept before the worker
            purges them (about once a minute); None: never purged here.
        clock: paces heartbeats, the watchdog and recovery (a :class:`chronos.Clock`;
            tests pass a FakeClock); default the system clock.

    Raises:
        TypeError, ValueError: for a bad argument, naming it.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        workers: int = 8,
        rate: float | None = None,
        lease: float = 30.0,
        grace: float = 30.0,
        pool: WorkerPool | None = None,
        owner: str | None = None,
        clock: Clock | None = None,
        result_ttl: float | None = DEFAULT_RESULT_TTL,
    ) -> None:
        if not isinstance(queue, Queue):
            raise TypeError(f"queue must be a chronos.tasks.Queue, got {type(queue).__name__}")
        workers = check_count("workers", workers, 1)
        rate = check_optional_number("rate", rate, minimum=0.0, inclusive=False, finite=True)
        self._lease = check_number("lease", lease, minimum=0.0, inclusive=False, finite=True)
        self._grace = check_number("grace", grace, minimum=0.0, inclusive=True, finite=True)
        self._result_ttl = check_optional_number(
            "result_ttl", result_ttl, minimum=0.0, inclusive=True, finite=True
        )
        if pool is not None and not isinstance(pool, WorkerPool):
            raise TypeError(f"pool must be a chronos.WorkerPool, got {type(pool).__name__}")
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise TypeError(f"owner must be a non-empty str, got {owner!r}")
        self._clock: Clock = SYSTEM_CLOCK if clock is None else check_clock("clock", clock)
        self._queue, self._backend, self._name = queue, queue.backend, queue.name
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._own_pool = pool is None
        if pool is None:
            pool = WorkerPool(workers, thread_name_prefix="chronos-worker")
        self._pool = pool
        self._dispatcher = None if rate is None else Dispatcher(self._pool, rate=rate)
        self._log = default_logger().bind(queue=self._name, owner=self._owner)
        self._book = ClaimBook(workers, self._lease * 2 / 3, self._clock.now())
        self._lock = threading.Lock()  # guards _state
        self._state = "new"
        self._epoch = 0.0  # clock reading at start()
        self._stopping = threading.Event()  # stop claiming
        self._beat_stop = threading.Event()  # the heartbeat thread exits
        self._force = threading.Event()  # terminate(): no more grace
        self._threads_started = threading.Event()
        self._waker: Callable[[], None] | None = None  # wakes run(), while it runs
        self._stopped = threading.Event()
        prefix = f"chronos-worker-{self._name}"
        self._finish_writer = Finisher(self._backend, self._book, self._log, self._store_error)
        self._finisher, self._beater, self._claimer = (
            threading.Thread(target=target, name=f"{prefix}-{name}", daemon=True)
            for target, name in (
                (self._finish_writer.run, "finisher"),
                (self._beat_loop, "heartbeat"),
                (self._claim_loop, "claimer"),
            )
        )

    # -- public API ---------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        return self._owner

    def start(self) -> Worker:
        """Start the threads.  Returns self.

        Raises:
            RuntimeError: started twice, or after :meth:`stop`.
        """
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"a Worker can be started once (it is {self._state})")
            self._state = "running"
        self._epoch = self._clock.now()  # the watchdog and the heartbeats start now
        self._book.beat_ok(self._epoch, called=False)
        if self._dispatcher is not None:
            self._dispatcher.start()
        for thread in (self._finisher, self._beater, self._claimer):
            thread.start()
        self._threads_started.set()
        self._log.info("worker.started", workers=self._book.workers, lease=self._lease)
        return self

    def stop(self, grace: float | None = None) -> None:
        """Drain, then stop (see the module docstring for the order).  Idempotent: a second
        call waits for the first to end.

        Args:
            grace: seconds running jobs may go on (default: the Worker's ``grace``).

        Raises:
            TypeError, ValueError: ``grace`` is not None nor a finite number >= 0.
        """
        grace = check_number("grace", self._grace if grace is None else grace, minimum=0.0,
                             inclusive=True, finite=True)  # fmt: skip
        with self._lock:
            state = self._state
            if state in ("new", "running"):
                self._state = "draining" if state == "running" else "stopped"
        if state not in ("new", "running"):
            self._stopped.wait()
            return
        self._stopping.set()
        self._book.slot_freed.set()
        try:
            if state == "running":
                self._log.info("worker.stopping", grace=grace)
                self._threads_started.wait()  # start() may still be starting them
                self._drain(grace)
            else:  # never started
                if self._dispatcher is not None:
                    self._dispatcher.stop(timeout=0)
                if self._own_pool:
                    self._pool.shutdown(wait=True, cancel_futures=True, grace=0)
        finally:
            with self._lock:
                self._state = "stopped"
            self._stopped.set()
            waker = self._waker
            if waker is not None:
                waker()
        self._log.info("worker.stopped", **asdict(self.statistics()))

    def terminate(self) -> None:
        """Stop at once: no grace for running jobs (also ends a drain under way)."""
        self._force_drain()
        self.stop(grace=0)

    def run(self, install_signals: bool = True) -> int:
        """Start (if need be) and block until stopped: by :meth:`stop` from another thread,
        or by SIGINT/SIGTERM (or Ctrl+C): the first drains, the second terminates.

        Returns:
            The exit status: 130 after a signal (or Ctrl+C), else 0.

        Raises:
            RuntimeError: ``install_signals`` and not on the main thread.
        """
        with SignalGuard(install_signals) as guard:
            self._waker = guard.wake
            if self.statistics().state == "new":
                self.start()
            try:
                return guard.serve(self._stopped, self.stop, self._force_drain)
            finally:
                self._waker = None

    def statistics(self) -> WorkerStatistics:
        """A frozen snapshot (see :class:`WorkerStatistics`)."""
        with self._lock:
            state = self._state
        return self._book.snapshot(self._claiming(), state)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<chronos.Worker {self._name!r} {self.statistics().state} owner={self._owner}>"

    # -- the drain --------------------------------------------------------------------------

    def _force_drain(self) -> None:
        self._force.set()
        with self._book.idle:
            self._book.idle.notify_all()

    def _drain(self, grace: float) -> None:
        book = self._book
        self._claimer.join(JOIN_TIMEOUT)
        if self._dispatcher is not None:
            self._dispatcher.stop(timeout=JOIN_TIMEOUT)  # its waiting jobs: cancelled
        for job in book.waiting_jobs():
            job.cancel(reason="worker.stop")  # False for a running one
        book.wait_idle(grace, self._force)
        if self._own_pool:  # cuts running jobs short: their callbacks finish nothing
            self._pool.shutdown(wait=True, cancel_futures=True, grace=0)
        book.close()
        self._finisher.join(FLUSH_TIMEOUT)
        self._finish_writer.give_up.set()
        self._finisher.join(JOIN_TIMEOUT)
        self._beat_stop.set()  # the heartbeats went on until every finish was written
        self._beater.join(JOIN_TIMEOUT)
        book.abandon()  # a shared pool's running jobs; finishes never written
        left = [t.name for t in (self._claimer, self._finisher, self._beater) if t.is_alive()]
        if left:
            self._log.warning("worker.threads_left", threads=left)

    # -- the claimer --------------------------------------------------------------------------

    def _claiming(self) -> bool:
        """Not draining, and the watchdog content (a good heartbeat within lease - lease/3)."""
        return not self._stopping.is_set() and self._book.beat_recent(self._clock.now())

    def _claim_loop(self) -> None:
        book, failures = self._book, 0
        while not self._stopping.is_set():
            slots = book.free_slots() if self._claiming() else 0
            if slots <= 0:
                book.slot_freed.clear()  # then look again: a slot freed meanwhile sets it
                if book.free_slots() <= 0 or not self._claiming():
                    book.slot_freed.wait(IDLE_WAIT)
                continue
            try:
                batch = self._backend.claim(self._name, slots, self._lease, self._owner)
                if not batch:
                    self._backend.wait_for_work(self._name, IDLE_WAIT)
                failures = 0
            except Exception as exc:
                failures += 1
                self._store_error("claim", exc, failures)
                self._stopping.wait(store_delay(failures, 1.0))
                continue
            for claimed in batch:
                self._start(claimed)

    def _start(self, claimed: Claimed) -> None:
        spec = claimed.spec
        task = self._queue.registry.get(spec.task)
        job = None
        if task is not None and not self._stopping.is_set():
            job = Job(task.fn, spec.args, spec.kwargs, name=spec.task, timeout=spec.timeout,
                      retry=_ONE_ATTEMPT)  # fmt: skip
        held = self._book.add(claimed, job)
        if job is None:
            if task is None:
                known = ", ".join(self._queue.registry.names()) or "none"
                error = f"unknown task {spec.task!r}: not registered in this worker's queue "
                self._settle_now(held, FinishKind.FAIL, error + f"{self._name!r} (known: {known})")
            else:  # claimed as the drain began
                self._settle_now(held, FinishKind.RELEASE)
            return
        future: JobFuture[Any] = job.future
        future.add_done_callback(functools.partial(self._job_done, held))
        try:
            if self._dispatcher is not None:
                self._dispatcher.submit(job)
            else:
                self._pool.submit_job(job)
        except Exception as exc:  # the pool was shut down (a shared one), or broke
            self._log.error("worker.submit_failed", error=repr(exc))
            self._stopping.set()
            self._settle_now(held, FinishKind.RELEASE)

    def _settle_now(self, held: Held, kind: FinishKind, error: str | None = None) -> None:
        claimed = held.claimed
        self._book.settle(held, Finish(claimed.id, claimed.token, kind, error=error))

    # -- job outcomes and the finisher ----------------------------------------------------------

    def _job_done(self, held: Held, future: JobFuture[Any]) -> None:
        """A held job ended (on a pool thread, or where it was cancelled): enqueue only."""
        try:
            finish = outcome_of(held, future)
        except Exception as exc:  # a chronos bug, or a retry policy that raised
            error = f"chronos worker: {type(exc).__name__}: {exc}"
            finish = Finish(held.claimed.id, held.claimed.token, FinishKind.FAIL, error=error)
        self._book.settle(held, finish)

    # -- the heartbeat thread ---------------------------------------------------------------------

    def _beat_loop(self) -> None:
        clock, interval = self._clock, self._lease / 3
        self._recover()
        next_beat = next_recover = self._epoch + interval
        next_purge = self._epoch + PURGE_INTERVAL
        failures = 0
        while not clock.wait_until(self._beat_stop, next_beat):
            sent = clock.now()
            if self._beat(sent):
                failures, next_beat = 0, sent + interval
            else:
                failures += 1
                next_beat = sent + store_delay(failures, interval)
            if clock.now() >= next_recover and not self._stopping.is_set():
                next_recover = clock.now() + interval
                self._recover()
            if self._result_ttl is not None and clock.now() >= next_purge:
                next_purge = clock.now() + PURGE_INTERVAL
                self._purge(self._result_ttl)

    def _beat(self, sent: float) -> bool:
        """One heartbeat of every held claim; False if the store call failed."""
        book = self._book
        claims = book.beat_claims()
        try:
            reply = self._backend.heartbeat(claims, self._lease) if claims else None
        except Exception as exc:
            tripped = not book.beat_recent(self._clock.now(), failed=True)
            self._log.warning("worker.heartbeat_failed", error=repr(exc), watchdog=tripped)
            if tripped:  # the leases may be gone: stop claiming, give up what is held
                self._cancel(book.lose(None), "worker.lease_lost")
            return False
        book.beat_ok(sent, called=reply is not None)
        if reply is not None and reply.lost:
            self._cancel(book.lose(reply.lost), "worker.lease_lost")
        if reply is not None and reply.cancel_requested:
            self._cancel(book.mark_cancel(reply.cancel_requested), "queue.cancel")
        return True

    def _cancel(self, chosen: list[Held], reason: str) -> None:
        """Cancel the jobs of ``chosen`` that wait (they finish RELEASE); tell running ones
        to stop (a cooperative job steps out through ``current_job()``; its finish then
        ends the store's job CANCELLED, or is FENCED for a lost lease)."""
        if chosen and reason == "worker.lease_lost":
            self._log.warning("worker.leases_lost", job_ids=[h.claimed.id for h in chosen])
        for held in chosen:
            if held.job is not None and not held.job.cancel(reason=reason):
                held.job.request_stop()

    def _purge(self, older_than: float) -> None:
        try:
            self._backend.purge(older_than)
        except Exception as exc:
            self._store_error("purge", exc, 1)

    def _recover(self) -> None:
        try:
            self._backend.recover(self._name)
        except Exception as exc:
            self._store_error("recover", exc, 1)

    def _store_error(self, operation: str, error: Exception, failures: int) -> None:
        self._book.count("store_errors")
        self._log.warning("worker.store_error", operation=operation, error=repr(error),
                          failures=failures)  # fmt: skip
