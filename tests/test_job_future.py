"""JobFuture makes its Condition lazily and resolves a success without a lock when nobody
waits: these tests race every way of waiting on a Future against that resolution."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, as_completed, wait

import pytest

from chronos import Job, JobFuture, WorkerPool

ROUNDS = 300


def seven() -> int:
    return 7


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Switch threads as often as CPython allows, to shuffle the interleavings."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def waiters(future: JobFuture[int], seen: list[str]) -> list[Callable[[], None]]:
    """Every way a thread can wait on ``future``; each appends what it saw to ``seen``."""

    def by_result() -> None:
        seen.append(f"result={future.result(timeout=10)}")

    def by_callback() -> None:
        future.add_done_callback(lambda f: seen.append(f"callback={f.result()}"))

    def by_wait() -> None:
        done, _ = wait([future], timeout=10)
        seen.append(f"wait={len(done)}")

    def by_first_completed() -> None:
        done, _ = wait([future], timeout=10, return_when=FIRST_COMPLETED)
        seen.append(f"first_completed={len(done)}")

    def by_as_completed() -> None:
        seen.extend(f"as_completed={f.result()}" for f in as_completed([future], timeout=10))

    def by_done() -> None:
        while not future.done():
            pass
        seen.append(f"done={future.result()}")

    return [by_result, by_callback, by_wait, by_first_completed, by_as_completed, by_done]


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("tiny_switch_interval")
def test_every_waiter_sees_a_success_that_races_it() -> None:
    expected = sorted(
        ["result=7", "callback=7", "wait=1", "first_completed=1", "as_completed=7", "done=7"]
    )
    for round_number in range(ROUNDS):
        future = Job(seven).future
        seen: list[str] = []
        start = threading.Barrier(7)

        def run(body: Callable[[], None], barrier: threading.Barrier = start) -> None:
            barrier.wait(10)
            body()

        threads = [threading.Thread(target=run, args=(body,)) for body in waiters(future, seen)]
        for thread in threads:
            thread.start()
        start.wait(10)
        future.set_result(7)
        for thread in threads:
            thread.join(10)
        assert not any(t.is_alive() for t in threads), f"round {round_number}: a waiter hung"
        assert sorted(seen) == expected, f"round {round_number}"


def test_a_finished_future_answers_without_making_a_condition() -> None:
    future = Job(seven).future
    future.set_result(7)
    assert future.done() and future.result() == 7
    assert not future.cancel() and not future.cancelled()  # what Executor.map calls
    assert not isinstance(vars(future).get("_cond"), threading.Condition)
    assert future.exception() is None  # the base class's way: it makes the Condition
    assert isinstance(vars(future).get("_cond"), threading.Condition)


def test_a_future_behaves_like_the_standard_one_through_a_pool() -> None:
    """wait, as_completed, callbacks and repr work on Futures resolved by real workers."""
    calls: list[object] = []
    with WorkerPool(4) as pool:
        futures = [pool.submit(pow, 2, n) for n in range(200)]
        futures[0].add_done_callback(lambda f: calls.append(f.result()))
        done, not_done = wait(futures, timeout=10)
        assert len(done) == 200 and not not_done
        assert sorted(f.result() for f in as_completed(futures, timeout=10)) == sorted(
            2**n for n in range(200)
        )
    assert calls == [1]
    assert "state=finished returned int" in repr(futures[0])
