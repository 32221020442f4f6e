"""Where a pool's jobs wait: the :class:`Backend` contract and its implementations.

- :mod:`chronos.backends.base`: the contract (:class:`Backend`, :class:`Claim`,
  :class:`FinishResult`, :class:`BackendStatistics`).
- :mod:`chronos.backends.memory`: :class:`MemoryBackend`, the default, in this process.

The core imports this package's contract and memory backend only; a durable backend is
imported by whoever names it, with its optional dependency.
"""

from chronos.backends.base import Backend, BackendStatistics, Claim, FinishResult
from chronos.backends.memory import MemoryBackend

__all__ = ["Backend", "BackendStatistics", "Claim", "FinishResult", "MemoryBackend"]
