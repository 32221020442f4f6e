"""A ``concurrent.futures.Future`` without a Condition until one is needed.

Every line of chronos that depends on CPython's private ``Future`` internals is in this
module; nothing else touches them.  :class:`LazyFuture` is the base of
:class:`chronos.JobFuture`.

Guarantees relied on (checked by tests/test_job_future.py on every supported Python):

- ``concurrent.futures._base`` keeps a Future's state in ``_state`` (one of the module's
  ``PENDING``/``RUNNING``/``CANCELLED``/``CANCELLED_AND_NOTIFIED``/``FINISHED`` strings),
  its outcome in ``_result``/``_exception``, its waiters (from ``wait``/``as_completed``) in
  ``_waiters`` with ``add_result``/``add_cancelled``, its callbacks in ``_done_callbacks``,
  and guards all of that with ``_condition``, which every base-class method reads through
  ``self._condition``; ``_invoke_callbacks`` runs the callbacks.  (Unchanged from 3.8 to
  3.13.)
- ``wait()`` and ``as_completed()`` read the states of all their Futures while holding each
  Future's ``_condition``, and install their waiters in the same critical section.
- ``dict.setdefault`` on an instance's ``__dict__`` is atomic (one bytecode, a C call that
  runs no Python code for str keys), and a plain attribute store is atomic: the hand-over in
  :class:`_LazyCondition` rests on these two, under the GIL or free-threaded builds'
  per-object locks alike.
- A Future resolved without a Condition is FINISHED for good: nothing changes its state
  afterwards, so reading ``_state`` without a lock is safe once it is FINISHED.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, LOGGER, PENDING
from typing import Any, TypeVar

__all__ = ["LazyFuture"]

T = TypeVar("T")

#: A Future's states once done; CANCELLED only lasts until set_running_or_notify_cancel(),
#: which :meth:`LazyFuture.resolve_cancelled` makes unnecessary.
_DONE_STATES = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED})
_CANCELLED_STATES = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED})

#: Stored as a Future's Condition by :meth:`LazyFuture.set_result` when it found none: from
#: then on the Future is FINISHED (a statement later) and nothing can wait for it any more.
_SUCCEEDED_UNLOCKED = object()
_UNLOCKED_SUCCESS_LOCK = threading.Lock()  # swaps that mark for a real Condition, once


class _LazyCondition:
    """A Future's ``_condition``, made the first time anything asks for it.

    A data descriptor over the instance's ``_cond`` slot of ``__dict__``, which holds
    nothing (no Condition made yet), a Condition, or :data:`_SUCCEEDED_UNLOCKED`.  Every
    hand-over is a ``dict.setdefault``, atomic in CPython, so :meth:`LazyFuture.set_result`
    and a first reader agree on one outcome: either the reader's Condition is in place
    first, and ``set_result`` takes it like the base class does, or ``set_result``'s mark
    is, and the reader gets a Condition of a Future that is already FINISHED for good.
    """

    def __get__(self, future: object, owner: object = None) -> threading.Condition:
        if future is None:
            raise AttributeError("_condition is an attribute of LazyFuture instances")
        slots = future.__dict__
        condition = slots.get("_cond")
        if condition is None:
            condition = slots.setdefault("_cond", threading.Condition())
        if condition is _SUCCEEDED_UNLOCKED:
            return _condition_of_finished(slots)
        assert isinstance(condition, threading.Condition)
        return condition

    def __set__(self, future: object, condition: threading.Condition) -> None:
        future.__dict__["_cond"] = condition


def _condition_of_finished(slots: dict[str, Any]) -> threading.Condition:
    """The Condition of a Future that succeeded without one (rare: ``wait()`` or a callback
    added after the fact).  Its state is final, so any Condition will do, as long as every
    caller gets the same one."""
    while slots.get("_state") is not FINISHED:  # set_result writes it right after its mark
        time.sleep(0)  # noqa: TID251 -- not a wait: gives the GIL to the resolving thread
    with _UNLOCKED_SUCCESS_LOCK:
        condition = slots["_cond"]
        if condition is _SUCCEEDED_UNLOCKED:
            condition = slots["_cond"] = threading.Condition()
        assert isinstance(condition, threading.Condition)
        return condition


class LazyFuture(Future[T]):
    """A Future that makes its Condition only when something needs it.

    Most Futures are never waited on (the job is done before anyone asks), so the Condition
    that a Future guards its state with is made only when needed (``result()`` of a pending
    Future, ``wait``, ``as_completed``, ``add_done_callback``, cancellation).  The one thread
    that resolves a success (:meth:`set_result`) claims the Condition's place atomically: if
    a Condition is there, it resolves under it exactly as the base class does (waiters
    counted and woken, callbacks run); if not, it leaves a mark there and writes the state
    without a lock, and whoever asks for the Condition later finds the Future FINISHED for
    good.  So ``wait()`` and ``as_completed()``, which read the states twice under the
    Conditions, never see one change in between.  ``result()``, ``done()`` and
    ``cancelled()`` of a finished Future read the state without a lock.

    Thread-safety: as ``concurrent.futures.Future``; :meth:`set_result`,
    :meth:`set_exception` and :meth:`resolve_cancelled` are called once, by the one thread
    that resolves it.
    """

    _condition = _LazyCondition()

    def __init__(self, owner: Any = None) -> None:
        # Future.__init__ without its Condition (see the class docstring); ``owner`` is
        # what the Future is of (a subclass's ``job``), set here to spare a call per job.
        self._state = PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[T]], object]] = []
        self.job = owner

    def resolve_copy(self, result: T | None, error: BaseException | None, cancelled: bool) -> None:
        """Make this new Future resolved at once (a copy of a finished one's outcome)."""
        if cancelled:
            self._state = CANCELLED_AND_NOTIFIED
        else:
            self._result = result
            self._exception = error
            self._state = FINISHED

    def is_finished(self) -> bool:
        """Resolved with a result or an exception (not cancelled)."""
        return self._state is FINISHED

    def set_running_or_notify_cancel(self) -> bool:
        """As the base class; False (not an error) for a Future cancelled and already
        notified, as happens to every Future that chronos cancelled: it tells waiters at
        once (see :meth:`resolve_cancelled`)."""
        if self._state in _CANCELLED_STATES:
            return False
        return super().set_running_or_notify_cancel()

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES  # once cancelled, it stays so

    def done(self) -> bool:
        return self._state in _DONE_STATES  # once done, a Future never changes

    def result(self, timeout: float | None = None) -> T:
        if self._state is FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]
        return super().result(timeout)

    def _invoke_callbacks(self) -> None:
        """Run the done-callbacks, as the base class does, except that *any* exception one
        raises is logged (on the ``concurrent.futures`` logger, like the base class's
        Exceptions): a BaseException such as SystemExit from a callback must neither kill
        the chronos thread that resolved the job nor cut its accounting short."""
        callbacks, self._done_callbacks = self._done_callbacks, []  # run once, then let go
        for callback in callbacks:
            try:
                callback(self)
            except BaseException:
                LOGGER.exception("exception calling callback for %r", self)

    def set_result(self, result: T) -> None:
        """Resolve with ``result``, without a lock when nobody waits.

        Called once, by the thread whose transition made the job SUCCEEDED, so the Future is
        still PENDING (it is never marked RUNNING: see ``JobFuture.running``).

        Raises:
            concurrent.futures.InvalidStateError: the Future is already resolved.
        """
        if self._state in _DONE_STATES:
            raise InvalidStateError(f"{self._state}: {self!r}")
        self._result = result
        condition = self.__dict__.setdefault("_cond", _SUCCEEDED_UNLOCKED)
        if condition is _SUCCEEDED_UNLOCKED:  # no Condition: no waiter, no callback
            self._state = FINISHED
            return
        condition.acquire()
        try:
            self._state = FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            condition.notify_all()
        finally:
            condition.release()
        self._invoke_callbacks()

    def resolve_cancelled(self) -> None:
        """``Future.cancel()`` then ``set_running_or_notify_cancel()`` in one critical
        section: waiters are told before any done-callback runs."""
        with self._condition:
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()
