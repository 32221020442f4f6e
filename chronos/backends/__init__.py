"""Where a pool's jobs wait: the :class:`Backend` contract and its implementations.

- :mod:`chronos.backends.base`: the contract (:class:`Backend`, :class:`Claim`,
  :class:`FinishResult`, :class:`BackendStatistics`).
- :mod:`chronos.backends.memory`: :class:`MemoryBackend`, the default, in this process.
- :mod:`chronos.backends.durable`: the durable half of the contract (:class:`DurableBackend`:
  leases, fencing tokens, scheduling, recovery), for stores that outlive a process.
- :mod:`chronos.backends.sqlite`: :class:`~chronos.backends.sqlite.SQLiteBackend`, the
  embedded durable store (stdlib ``sqlite3``); :mod:`chronos.backends.urls` opens a store
  from a URL (``sqlite:///jobs.db``).

The core imports this package's contracts and memory backend only; a durable backend is
imported by whoever names it (``open_backend`` imports it for its URL), with its optional
dependency.
"""

from chronos.backends.base import Backend, BackendStatistics, Claim, FinishResult
from chronos.backends.memory import MemoryBackend

__all__ = ["Backend", "BackendStatistics", "Claim", "FinishResult", "MemoryBackend"]
