"""The WorkerPool and its insides.

- :mod:`~chronos.pool.executor`: :class:`WorkerPool`, the public face (an Executor).
- :mod:`~chronos.pool.core`: the insides its threads share (settings, ledger, backend,
  timer, Handoff, thread book); producers reach it through :func:`core_of`.
- :mod:`~chronos.pool.threads`: the thread book (worker slots; spawn, abandon, rejoin).
- :mod:`~chronos.pool.worker`: the loop every worker thread runs.
- :mod:`~chronos.pool.attempts`: one attempt, and how it ends (worker, timer, shutdown).
- :mod:`~chronos.pool.handoff`: threads for what follows a timeout.
- :mod:`~chronos.pool.lifecycle`: shutdown, interpreter exit, a dropped pool, os.fork().
- :mod:`~chronos.pool.statistics`: :class:`PoolStatistics`.
"""

from chronos.pool.executor import DEFAULT_QUEUE_SIZE, WorkerPool, core_of
from chronos.pool.statistics import PoolStatistics

__all__ = ["DEFAULT_QUEUE_SIZE", "PoolStatistics", "WorkerPool", "core_of"]
