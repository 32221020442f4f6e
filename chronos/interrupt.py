"""Best-effort interruption of a thread: an exception raised in it asynchronously.

This is what Dramatiq's time limits do (``PyThreadState_SetAsyncExc``).  The exception lands
at the next Python bytecode the thread runs, so it cannot interrupt a thread blocked in C:
``time.sleep``, a socket read, a lock or ``Event`` wait, a long NumPy call.  Those threads
run on until the call returns; chronos counts them as abandoned meanwhile.
"""

from __future__ import annotations

import ctypes

__all__ = ["raise_in_thread"]


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` to be raised in the thread with ident ``thread_id``.

    Returns:
        True if exactly one thread state was found and the exception is pending there.
    """
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    found = set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    if found > 1:  # never expected; undo rather than hit the wrong threads
        set_async_exc(ctypes.c_ulong(thread_id), None)
        return False
    return bool(found == 1)
