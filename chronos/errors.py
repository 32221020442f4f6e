"""The one error tree of chronos.

Every error chronos raises on its own account derives from :class:`ChronosError` and, where
one fits, from the matching built-in, so callers can catch either.  Misuse of the API raises
plain built-ins (``TypeError``, ``ValueError``, ``RuntimeError``), as ``concurrent.futures``
does.
"""

from __future__ import annotations


class ChronosError(Exception):
    """Root of every exception chronos defines (except :class:`JobInterrupted`)."""


class JobTimeoutError(ChronosError, TimeoutError):
    """An attempt ran past its deadline.

    Set on a job's Future when its last attempt timed out, and passed to the retry policy
    when a timed-out attempt is considered for a retry.
    """


class NonRetryableError(ChronosError):
    """Raise this (or a subclass) from a job to fail it at once, whatever its retry policy."""


class IllegalTransitionError(ChronosError, RuntimeError):
    """A job was asked to move between two states that the state machine does not connect.

    This is a bug in chronos or in code that drives jobs by hand, never a race: races between
    a worker and the timeout watchdog lose a compare-and-set quietly instead.
    """


class JobCancelledError(ChronosError):
    """Raised by :meth:`chronos.JobContext.check` when the running attempt was cancelled."""


class JobInterrupted(BaseException):
    """Raised asynchronously inside a job's thread when its attempt overran its timeout.

    Only with ``interrupt_on_timeout=True``.  It derives from ``BaseException`` so that a
    job's ``except Exception`` cannot swallow it.  It cannot interrupt blocking C calls
    (``time.sleep``, socket reads, lock waits): it lands at the next Python bytecode.
    """
