"""The chronos benchmark suite: ``python -m benchmarks`` (see ``docs/performance.md``).

One module per family of cases, each measuring chronos against the standard library in the
same process run:

- :mod:`benchmarks.throughput` cases 1-5: no-op throughput (submit, map, with timeout and
  retry policy, through a Dispatcher) and the efficiency of sleeping jobs;
- :mod:`benchmarks.rate` case 6: Dispatcher rate accuracy and dispatch lateness;
- :mod:`benchmarks.latency` case 7: how soon a timeout is detected;
- :mod:`benchmarks.memory` case 8: bytes per queued job, RSS under an endless stream;
- :mod:`benchmarks.shutdown` case 9: shutdown latency, by call and by SIGINT;
- :mod:`benchmarks.timeouts` case 10: timeout detection at scale (10,000 jobs, each with its
  own timeout, on 500 workers; 2,000 timeouts due at once) against the OS's own timeouts,
  with its runs in :mod:`benchmarks.overruns`;
- :mod:`benchmarks.harness`: alternation, medians, the table;
- :mod:`benchmarks.hotpath` (run on its own): where case 1's time goes, per job.

This package imports nothing at import time, so that ``python -m benchmarks.memory`` and
``python -m benchmarks.shutdown`` (the child processes of cases 8 and 9) start cleanly.
"""
