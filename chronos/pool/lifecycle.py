"""How a pool ends: shutdown's steps, interpreter exit, a pool dropped, and os.fork().

Shutdown, in order (:meth:`chronos.WorkerPool.shutdown`):

1. :func:`close`: refuse new jobs (the ledger closes), tell the producers (Dispatchers stop
   admitting), cancel waiting jobs if asked (``cancel_futures``), cancel running ones at
   once if ``grace == 0``.
2. :func:`finish`: wait for every unfinished job (retries included) for up to ``grace``
   seconds; then cancel what is left, abandoning the threads of running jobs; then
   :func:`stop_threads`: stop and join the workers, the timer, the Handoff and the backend's
   delay timer, each with a deadline, and let the producers' threads go.

Thread-safety: every function may be called from any thread; :func:`finish` runs its last
step once (``core.finish_lock``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from chronos._ledger import WAITING_STATES, cancel_waiting
from chronos.clock import SYSTEM_CLOCK
from chronos.pool.attempts import abandon_if_fenced, cancel_fenced, cancel_running
from chronos.pool.core import PoolCore
from chronos.status import JobStatus

__all__ = ["close", "finish", "register", "shut_down"]

#: How long shutdown waits for each idle worker thread (and each helper) to exit.
JOIN_TIMEOUT = 5.0
#: How long shutdown waits for each of the pool's dispatchers to exit.  Short: every job is
#: terminal by then, and a dispatcher stuck in its iterable's ``next()`` (a generator
#: waiting for input) cannot be interrupted; it is a daemon thread that exits, submitting
#: nothing, as soon as ``next()`` returns.
DISPATCHER_JOIN_TIMEOUT = 0.1

_live_cores: weakref.WeakSet[PoolCore] = weakref.WeakSet()


def register(core: PoolCore) -> None:
    """Give ``core`` its grace at interpreter exit, and forget it in a forked child."""
    _live_cores.add(core)


def shut_down(core: PoolCore, wait: bool, cancel_futures: bool, grace: float | None) -> None:
    """:meth:`chronos.WorkerPool.shutdown`, its arguments checked."""
    close(core, cancel_futures=cancel_futures, grace=grace)
    if wait:
        finish(core, grace)
        return
    finisher = None
    with core.finish_lock:
        if core.finisher is None and not core.finished.is_set():
            finisher = core.finisher = threading.Thread(
                target=finish, args=(core, grace), name=f"{core.name}_shutdown", daemon=True
            )
    if finisher is not None:
        finisher.start()


def close(core: PoolCore, *, cancel_futures: bool, grace: float | None) -> None:
    """The first steps of shutdown, on the calling thread: refuse new jobs, tell the
    producers, cancel what ``cancel_futures`` and ``grace == 0`` say."""
    if core.ledger.close():
        core.events.pool("pool.shutdown", pool=core.name, phase="started")
    core.run_shutdown_hooks(0)
    if cancel_futures:
        cancel_waiting_jobs(core)
    if grace == 0:
        cancel_running_jobs(core)


def finish(core: PoolCore, grace: float | None) -> None:
    """Wait up to ``grace`` for the unfinished jobs, cancel the rest, stop the threads."""
    drained = core.ledger.drained
    if not drained.wait(grace):
        cancel_waiting_jobs(core)
        cancel_running_jobs(core)
        if not drained.wait(JOIN_TIMEOUT):  # cannot happen: every live job was cancelled
            stuck = RuntimeError(f"unfinished after shutdown: {core.ledger.live_jobs()}")
            core.events.internal_error("pool.shutdown", stuck)
    with core.finish_lock:
        if core.finished.is_set():
            return
        stop_threads(core)
        core.finished.set()
    core.events.pool(
        "pool.shutdown", pool=core.name, phase="finished", **core.stats.snapshot().as_dict()
    )


def cancel_waiting_jobs(core: PoolCore) -> None:
    now = core.now()
    for job in core.ledger.live_jobs():
        if cancel_waiting(job, WAITING_STATES, now, "shutdown"):
            core.record_unfinished(job)
    core.backend.wake_putters()


def cancel_running_jobs(core: PoolCore) -> None:
    for slot in core.threads.active_slots():
        current = slot.current
        if current is not None:
            cancel_running(core, slot, current)
    for job in core.ledger.live_jobs():
        if job.status is JobStatus.RUNNING:  # fenced by the timer, not settled yet
            cancel_fenced(core, job)


def stop_threads(core: PoolCore) -> None:
    for slot in core.threads.begin_stop():  # from here no thread starts or rejoins
        abandon_if_fenced(core, slot)
    core.backend.close()  # the stop sentinel, and every blocked put woken
    core.threads.join(JOIN_TIMEOUT)
    core.stop_helpers(JOIN_TIMEOUT)
    # Every job is terminal by now: nothing is lost by stopping a dispatcher that still
    # waits for its next tick with a job shutdown cancelled.
    core.run_shutdown_hooks(1)


def orphaned(core: PoolCore) -> None:
    """The finalizer of a WorkerPool collected without shutdown() (see
    :meth:`PoolCore.collected`)."""
    core.collected()


# -- interpreter exit ------------------------------------------------------------------------


def _shutdown_at_exit() -> None:
    """Interpreter exit: give every live pool ``exit_grace`` seconds, then cancel the rest.

    Registered with ``threading._register_atexit``, as ThreadPoolExecutor's own hook is: it
    runs when the main thread ends, *before* Python joins the non-daemon threads, so a user
    thread blocked in ``submit()`` behind a hung job is released (its job cancelled) instead
    of blocking exit for ever.  The pools' graces run side by side, not one after another.
    When jobs are still unfinished, it says so once, on one line of stderr, with how long it
    will wait; Ctrl+C meanwhile cancels them at once (one more line, no traceback).
    """
    cores = [core for core in list(_live_cores) if not core.forked]
    began = SYSTEM_CLOCK.now()
    try:
        # No thread is started here (Python may refuse to start one this late): every pool
        # is closed first, then each waits until its own grace, counted from the same start.
        for core in cores:
            grace = core.settings.exit_grace
            _announce_exit_wait(core)
            _quietly(core, close, core, cancel_futures=False, grace=grace)
        for core in cores:
            left = max(0.0, began + core.settings.exit_grace - SYSTEM_CLOCK.now())
            _quietly(core, finish, core, left)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            print("chronos: interrupted: cancelling unfinished jobs", file=sys.stderr, flush=True)
        for core in cores:
            with contextlib.suppress(BaseException):
                close(core, cancel_futures=True, grace=0)


def _announce_exit_wait(core: PoolCore) -> None:
    unfinished = core.stats.snapshot().in_flight
    grace = core.settings.exit_grace
    if unfinished and not core.ledger.closed and grace > 0:
        with contextlib.suppress(Exception):
            print(
                f"chronos: exiting: waiting up to {grace:g}s (exit_grace) for "
                f"{unfinished} unfinished job(s) of {core.name}, then cancelling them",
                file=sys.stderr,
                flush=True,
            )


def _quietly(core: PoolCore, step: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """A shutdown step at exit: any error but Ctrl+C is logged, and exit goes on."""
    try:
        step(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        core.events.internal_error("atexit", exc)


def _after_fork_in_child() -> None:
    """os.fork(): the child has none of the pools' threads, and any of their locks may have
    been held at the fork.  Its copies of the pools refuse work and are forgotten, so its
    exit neither waits for the parent's jobs nor touches a lock."""
    for core in list(_live_cores):
        core.forked = True
        core.broken_reason = (
            "this pool was copied into a child process by os.fork(); its threads stayed in "
            "the parent: create a new WorkerPool in the child"
        )
    _live_cores.clear()


threading._register_atexit(_shutdown_at_exit)  # type: ignore[attr-defined]  # noqa: SLF001 -- the hook ThreadPoolExecutor uses: runs before non-daemon threads are joined
os.register_at_fork(after_in_child=_after_fork_in_child)
