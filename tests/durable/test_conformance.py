"""The durable backend contract, against :class:`DurableBackend` only: every backend in
``conftest.FACTORIES`` passes these unchanged.  Time is the store's clock, moved by the test
(``store_clock.advance``); the only real waits are the bounded ones of ``wait_for_work``.
Times are compared within half a second and every step is a second or more, so a backend
whose store clock is its server's time plus the test's offset passes too."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from chronos.backends.durable import (
    Claimed,
    DurableBackend,
    Finish,
    FinishKind,
    FinishResult,
    JobState,
    Recovery,
)
from chronos.retry import RetryPolicy
from chronos.spec import JobSpec
from tests.durable.conftest import BackendFactory, Store, StoreClock

APPLIED, DUPLICATE, FENCED = FinishResult.APPLIED, FinishResult.DUPLICATE, FinishResult.FENCED
LEASE = 30.0


def about(seconds: float) -> object:
    """A store-clock time, give or take what a backend on its server's clock may add."""
    return pytest.approx(seconds, abs=0.5)


def spec(task: str = "task", **options: object) -> JobSpec:
    return JobSpec(task, **options)  # type: ignore[arg-type]


def claim_one(backend: DurableBackend, queue: str = "default", lease: float = LEASE) -> Claimed:
    (claimed,) = backend.claim(queue, 1, lease, "worker-1")
    return claimed


def complete(claimed: Claimed, result: object = None) -> Finish:
    return Finish(claimed.id, claimed.token, FinishKind.COMPLETE, result=result)


def state_of(backend: DurableBackend, job_id: str) -> JobState:
    record = backend.get(job_id)
    assert record is not None
    return record.state


def test_it_is_a_durable_backend(backend: DurableBackend) -> None:
    assert isinstance(backend, DurableBackend)


def test_enqueue_claim_finish(backend: DurableBackend, store_clock: StoreClock) -> None:
    job = spec("send", args=(1, "a", [2.5, None]), kwargs={"to": {"x": True}}, timeout=5.0)
    (job_id,) = backend.enqueue([job])
    record = backend.get(job_id)
    assert record is not None
    assert (record.state, record.attempt, record.token, record.spec) == (JobState.READY, 0, 0, job)
    assert record.queue == "default" and record.enqueued_at == about(store_clock())
    assert record.max_attempts == 3  # the default, for a spec without a retry policy

    claimed = claim_one(backend)
    assert (claimed.id, claimed.attempt, claimed.queue, claimed.spec) == (job_id, 1, "default", job)
    record = backend.get(job_id)
    assert record is not None and record.state is JobState.RUNNING
    assert record.token == claimed.token and record.owner == "worker-1"
    assert record.lease_until == about(store_clock() + LEASE)
    assert backend.claim("default", 5, LEASE, "worker-2") == []

    store_clock.advance(1)
    assert backend.finish([complete(claimed, {"sent": [1, 2]})]) == [APPLIED]
    record = backend.get(job_id)
    assert record is not None
    assert (record.state, record.result, record.error) == (
        JobState.SUCCEEDED,
        {"sent": [1, 2]},
        None,
    )
    assert record.finished_at == about(store_clock()) and record.lease_until is None
    assert backend.get("no-such-job") is None
    assert backend.enqueue([]) == []


def test_claims_go_by_priority_then_due_time_then_enqueue_order(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    now = store_clock()
    ids = backend.enqueue(
        [
            spec("low", priority=-1),
            spec("first"),
            spec("second"),
            spec("urgent", priority=5),
            spec("overdue", not_before=now - 60),  # due earlier than the others
            spec("third"),
        ]
    )
    tasks = [c.spec.task for c in backend.claim("default", 4, LEASE, "w")]
    assert tasks == ["urgent", "overdue", "first", "second"]
    tasks = [c.spec.task for c in backend.claim("default", 10, LEASE, "w")]
    assert tasks == ["third", "low"]
    assert len(set(ids)) == 6


def test_queues_are_apart(backend: DurableBackend) -> None:
    (a,) = backend.enqueue([spec("a")], queue="alpha")
    (b,) = backend.enqueue([spec("b")], queue="beta")
    assert [c.id for c in backend.claim("alpha", 10, LEASE, "w")] == [a]
    assert backend.claim("alpha", 10, LEASE, "w") == []
    assert [(c.id, c.queue) for c in backend.claim("beta", 10, LEASE, "w")] == [(b, "beta")]
    assert backend.claim("gamma", 10, LEASE, "w") == []
    assert backend.claim("alpha", 0, LEASE, "w") == []


def test_not_before_waits_in_the_scheduled_state(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    (job_id,) = backend.enqueue([spec(not_before=store_clock() + 60)])
    assert state_of(backend, job_id) is JobState.SCHEDULED
    assert backend.claim("default", 1, LEASE, "w") == []
    store_clock.advance(59)
    assert backend.recover("default").promoted == 0
    assert backend.claim("default", 1, LEASE, "w") == []
    store_clock.advance(1)
    assert backend.recover("default").promoted == 1
    assert state_of(backend, job_id) is JobState.READY
    assert backend.recover("default").promoted == 0  # idempotent
    assert claim_one(backend).id == job_id


def test_a_claim_takes_due_scheduled_jobs_without_waiting_for_recover(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    (job_id,) = backend.enqueue([spec(not_before=store_clock() + 5)])
    store_clock.advance(5)
    assert claim_one(backend).id == job_id


def test_a_retry_waits_its_delay_and_keeps_its_attempt(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    (job_id,) = backend.enqueue([spec()])
    first = claim_one(backend)
    retry = Finish(first.id, first.token, FinishKind.RETRY, error="ValueError: boom", delay=30)
    assert backend.finish([retry]) == [APPLIED]
    record = backend.get(job_id)
    assert record is not None
    assert (record.state, record.error, record.attempt) == (
        JobState.SCHEDULED,
        "ValueError: boom",
        1,
    )
    assert record.run_at == about(store_clock() + 30)
    assert backend.finish([retry]) == [DUPLICATE]  # a replayed reply
    store_clock.advance(29)
    assert backend.claim("default", 1, LEASE, "w") == []
    store_clock.advance(1)
    assert backend.recover("default").promoted == 1
    second = claim_one(backend)
    assert (second.id, second.attempt) == (job_id, 2)
    assert second.token > first.token
    now = Finish(second.id, second.token, FinishKind.RETRY, error="again", delay=0)
    assert backend.finish([now]) == [APPLIED]
    assert state_of(backend, job_id) is JobState.READY  # no delay: ready at once


def test_a_retry_with_no_attempt_left_is_dead(backend: DurableBackend) -> None:
    (job_id,) = backend.enqueue([spec(retry=RetryPolicy(max_attempts=1))])
    claimed = claim_one(backend)
    retry = Finish(claimed.id, claimed.token, FinishKind.RETRY, error="boom", delay=1)
    assert backend.finish([retry]) == [APPLIED]
    record = backend.get(job_id)
    assert record is not None and (record.state, record.max_attempts) == (JobState.DEAD, 1)


def test_an_expired_lease_is_recovered_and_the_old_claim_fenced(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    (job_id,) = backend.enqueue([spec()])
    old = claim_one(backend, lease=10)
    store_clock.advance(8)
    assert backend.recover("default").requeued == 0
    reply = backend.heartbeat([(old.id, old.token)], 10)  # now the lease ends at 18
    assert reply.lost == () and reply.cancel_requested == ()
    store_clock.advance(9)
    assert backend.recover("default").requeued == 0
    store_clock.advance(2)  # 19 > 18: expired
    assert backend.recover("default").requeued == 1
    assert backend.recover("default").requeued == 0  # idempotent
    record = backend.get(job_id)
    assert record is not None and record.state is JobState.READY
    assert record.error is not None and "lease expired" in record.error

    new = claim_one(backend)
    assert (new.id, new.attempt) == (job_id, 2)
    assert new.token > old.token
    pairs = [(old.id, old.token), (new.id, new.token), ("no-such-job", 1)]
    assert backend.heartbeat(pairs, 10).lost == (job_id, "no-such-job")
    assert backend.finish([complete(old, "zombie")]) == [FENCED]
    assert backend.finish([complete(new, "fresh")]) == [APPLIED]
    record = backend.get(job_id)
    assert record is not None and record.result == "fresh"
    stats = backend.statistics()
    assert (stats.applied, stats.fenced, stats.recovered) == (1, 1, 1)


def test_recover_moves_at_most_limit_of_each_kind(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    backend.enqueue([spec() for _ in range(3)])
    backend.claim("default", 3, LEASE, "w")
    backend.enqueue([spec(not_before=store_clock() + 1) for _ in range(3)])
    store_clock.advance(LEASE + 1)
    assert backend.recover("default", limit=2) == Recovery(requeued=2, dead=0, promoted=2)
    assert backend.recover("default", limit=2) == Recovery(requeued=1, dead=0, promoted=1)
    assert backend.recover("default", limit=2) == Recovery(requeued=0, dead=0, promoted=0)
    assert backend.statistics().counts[JobState.READY] == 6


def test_a_late_finish_before_recover_still_counts(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    backend.enqueue([spec()])
    claimed = claim_one(backend, lease=10)
    store_clock.advance(60)  # expired, but nobody recovered it
    assert backend.finish([complete(claimed)]) == [APPLIED]
    assert backend.recover("default").requeued == 0


def test_a_crash_loop_ends_dead(backend: DurableBackend, store_clock: StoreClock) -> None:
    ids = backend.enqueue([spec("bounded", retry=RetryPolicy(max_attempts=2)), spec("default")])
    tokens: dict[str, list[int]] = {job_id: [] for job_id in ids}
    for attempt in (1, 2, 3):
        for claimed in backend.claim("default", 10, LEASE, f"doomed-{attempt}"):
            assert claimed.attempt == attempt
            tokens[claimed.id].append(claimed.token)
        store_clock.advance(LEASE + 1)  # every worker dies
        backend.recover("default")
    assert backend.claim("default", 10, LEASE, "w") == []
    for job_id, attempts in zip(ids, (2, 3), strict=True):
        record = backend.get(job_id)
        assert record is not None
        assert (record.state, record.attempt) == (JobState.DEAD, attempts)
        assert record.error is not None and "attempts used up" in record.error
        assert tokens[job_id] == sorted(set(tokens[job_id])) and len(tokens[job_id]) == attempts
    assert backend.statistics().recovered == 5


def test_a_replayed_finish_is_a_duplicate(backend: DurableBackend) -> None:
    backend.enqueue([spec(), spec()])
    a, b = backend.claim("default", 2, LEASE, "w")
    assert backend.finish([complete(a, 1), complete(a, 1), complete(b, 2)]) == [
        APPLIED,
        DUPLICATE,
        APPLIED,
    ]
    assert backend.finish([complete(b, 2)]) == [DUPLICATE]
    wrong = Finish(a.id, a.token + 1, FinishKind.COMPLETE)
    gone = Finish("no-such-job", 1, FinishKind.COMPLETE)
    assert backend.finish([wrong, gone]) == [FENCED, FENCED]
    stats = backend.statistics()
    assert (stats.applied, stats.duplicates, stats.fenced) == (2, 2, 1)  # "gone": no queue


def test_a_unique_key_holds_while_its_job_lives(backend: DurableBackend) -> None:
    first, again, other = backend.enqueue(
        [spec(unique_key="k"), spec("x", unique_key="k"), spec(unique_key="k2")]
    )
    assert first == again and other != first
    assert backend.enqueue([spec(unique_key="k")]) == [first]
    (elsewhere,) = backend.enqueue([spec(unique_key="k")], queue="other")
    assert elsewhere != first  # per queue
    assert backend.statistics().deduplicated == 2

    claimed = {c.id: c for c in backend.claim("default", 10, LEASE, "w")}
    assert backend.enqueue([spec(unique_key="k")]) == [first]  # still running: still live
    assert backend.finish([complete(claimed[first])]) == [APPLIED]
    (fresh,) = backend.enqueue([spec(unique_key="k")])
    assert fresh != first
    assert backend.cancel([fresh]) == [JobState.CANCELLED]
    (fresher,) = backend.enqueue([spec(unique_key="k")])
    assert fresher not in (first, fresh)


def test_cancel(backend: DurableBackend, store_clock: StoreClock) -> None:
    running_id, ready_id, done_id = backend.enqueue(
        [spec("r", priority=2), spec(), spec("d", priority=1)]
    )
    (scheduled_id,) = backend.enqueue([spec(not_before=store_clock() + 20)])
    running, done = backend.claim("default", 2, LEASE, "w")
    assert backend.finish([complete(done)]) == [APPLIED]
    states = backend.cancel([scheduled_id, ready_id, running_id, done_id, "no-such-job"])
    assert states == [
        JobState.CANCELLED,
        JobState.CANCELLED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
        None,
    ]
    record = backend.get(running_id)
    assert record is not None and record.cancel_requested and record.state is JobState.RUNNING
    assert backend.heartbeat([(running.id, running.token)], LEASE).cancel_requested == (running_id,)
    assert backend.claim("default", 10, LEASE, "w") == []
    store_clock.advance(20)  # within the lease
    assert backend.recover("default") == Recovery(0, 0, 0)  # the cancelled job stays so
    retry = Finish(running.id, running.token, FinishKind.RETRY, error="stopped", delay=1)
    assert backend.finish([retry]) == [APPLIED]
    assert state_of(backend, running_id) is JobState.CANCELLED  # never retried
    counts = backend.statistics().counts
    assert (counts[JobState.CANCELLED], counts[JobState.SUCCEEDED]) == (3, 1)


def test_a_running_job_asked_to_cancel_may_still_complete(backend: DurableBackend) -> None:
    (job_id,) = backend.enqueue([spec()])
    claimed = claim_one(backend)
    backend.cancel([job_id])
    assert backend.finish([complete(claimed, "made it")]) == [APPLIED]
    assert state_of(backend, job_id) is JobState.SUCCEEDED


def test_an_expired_lease_with_a_cancel_request_ends_cancelled(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    (job_id,) = backend.enqueue([spec()])
    claim_one(backend)
    backend.cancel([job_id])
    store_clock.advance(LEASE + 1)
    assert backend.recover("default").cancelled == 1
    assert state_of(backend, job_id) is JobState.CANCELLED


def test_requeue_brings_dead_jobs_back(backend: DurableBackend) -> None:
    dead_id, ready_id = backend.enqueue([spec("dead", priority=1, unique_key="u"), spec()])
    claimed = claim_one(backend)
    assert backend.finish([Finish(claimed.id, claimed.token, FinishKind.FAIL, error="bad")]) == [
        APPLIED
    ]
    record = backend.get(dead_id)
    assert record is not None and (record.state, record.error) == (JobState.DEAD, "bad")
    assert backend.requeue([dead_id, ready_id, "no-such-job"]) == 1
    record = backend.get(dead_id)
    assert record is not None
    assert (record.state, record.attempt, record.error) == (JobState.READY, 0, None)
    again = claim_one(backend)
    assert (again.id, again.attempt) == (dead_id, 1)
    assert again.token > claimed.token  # tokens never go back
    # The old token did finish (a replay of it is a duplicate); nothing changes.
    assert backend.finish([complete(claimed)]) == [DUPLICATE]
    assert state_of(backend, dead_id) is JobState.RUNNING
    assert backend.finish([Finish(again.id, again.token, FinishKind.FAIL)]) == [APPLIED]
    (holder,) = backend.enqueue([spec(unique_key="u")])  # the key is free: a new job takes it
    assert backend.requeue([dead_id]) == 0  # and keeps it
    assert state_of(backend, dead_id) is JobState.DEAD and holder != dead_id


def test_release_refunds_the_attempt(backend: DurableBackend) -> None:
    (job_id,) = backend.enqueue([spec()])
    first = claim_one(backend)
    release = Finish(first.id, first.token, FinishKind.RELEASE)
    assert backend.finish([release]) == [APPLIED]
    record = backend.get(job_id)
    assert record is not None and (record.state, record.attempt) == (JobState.READY, 0)
    assert backend.finish([release]) == [DUPLICATE]
    second = claim_one(backend)
    assert (second.attempt, second.token > first.token) == (1, True)


def test_purge_deletes_old_terminal_jobs_only(
    backend: DurableBackend, store_clock: StoreClock
) -> None:
    old_id, new_id, live_id = backend.enqueue([spec(priority=2), spec(priority=1), spec()])
    old = claim_one(backend)
    backend.finish([complete(old)])
    store_clock.advance(100)
    new = claim_one(backend)
    backend.finish([Finish(new.id, new.token, FinishKind.FAIL)])
    store_clock.advance(50)
    assert backend.purge(older_than=120) == 1
    assert backend.get(old_id) is None
    assert state_of(backend, new_id) is JobState.DEAD
    assert backend.purge(older_than=0) == 1
    assert backend.get(new_id) is None
    assert state_of(backend, live_id) is JobState.READY
    assert backend.finish([complete(old)]) == [FENCED]


def test_statistics_add_up(backend: DurableBackend, store_clock: StoreClock) -> None:
    backend.enqueue([spec() for _ in range(6)] + [spec(not_before=store_clock() + 9)])
    backend.enqueue([spec()], queue="elsewhere")
    a, b, c, _still_running = backend.claim("default", 4, LEASE, "w")
    backend.finish(
        [
            complete(a),
            Finish(b.id, b.token, FinishKind.FAIL),
            Finish(c.id, c.token, FinishKind.RETRY, delay=5),
        ]
    )
    backend.cancel([backend.claim("default", 1, LEASE, "w")[0].id])
    stats = backend.statistics()
    assert stats.queue == "default" and stats.kind
    assert dict(stats.counts) == {
        JobState.SCHEDULED: 2,
        JobState.READY: 1,
        JobState.RUNNING: 2,
        JobState.SUCCEEDED: 1,
        JobState.DEAD: 1,
        JobState.CANCELLED: 0,
    }
    assert sum(stats.counts.values()) == 7
    assert backend.statistics("elsewhere").counts[JobState.READY] == 1
    assert sum(backend.statistics("nothing-here").counts.values()) == 0


def test_list_jobs_pages_by_id(backend: DurableBackend) -> None:
    ids = backend.enqueue([spec(args=(i,)) for i in range(25)])
    backend.enqueue([spec()], queue="other")
    pages: list[list[str]] = []
    after: str | None = None
    while page := backend.list_jobs("default", limit=10, after_id=after):
        pages.append([r.id for r in page])
        after = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5]
    listed = [i for p in pages for i in p]
    assert listed == sorted(listed) and set(listed) == set(ids)
    claimed = {c.id for c in backend.claim("default", 3, LEASE, "w")}
    running = backend.list_jobs("default", JobState.RUNNING)
    assert {r.id for r in running} == claimed and all(r.state is JobState.RUNNING for r in running)
    assert len(backend.list_jobs("default", JobState.READY, limit=100)) == 22


def test_results_and_arguments_are_json(backend: DurableBackend) -> None:
    with pytest.raises(TypeError, match="JSON"):
        spec(args=(object(),))
    (job_id,) = backend.enqueue([spec(args=((1, 2), {"k": [None]}))])
    claimed = claim_one(backend)
    assert claimed.spec.args == ([1, 2], {"k": [None]})  # tuples come back as lists
    with pytest.raises(TypeError, match="JSON"):
        backend.finish(
            [complete(claimed), Finish(job_id, claimed.token, FinishKind.COMPLETE, result={1j})]
        )
    assert state_of(backend, job_id) is JobState.RUNNING  # nothing was written
    with pytest.raises(TypeError, match="JSON"):
        backend.finish([complete(claimed, float("nan"))])
    assert backend.finish([complete(claimed, {"n": 1.5})]) == [APPLIED]


def test_bad_arguments_are_refused(backend: DurableBackend) -> None:
    with pytest.raises(ValueError, match="lease"):
        backend.claim("default", 1, 0, "w")
    with pytest.raises(ValueError, match="n must be"):
        backend.claim("default", -1, LEASE, "w")
    with pytest.raises(TypeError, match="queue"):
        backend.enqueue([spec()], queue="")
    with pytest.raises(TypeError, match="JobSpec"):
        backend.enqueue([{"task": "x"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="delay"):
        Finish("id", 1, FinishKind.RETRY, delay=-1)
    with pytest.raises(ValueError, match="bogus"):
        Finish("id", 1, "bogus")  # type: ignore[arg-type]


def test_wait_for_work(open_backend: Callable[[], DurableBackend]) -> None:
    backend, other = open_backend(), open_backend()
    assert backend.wait_for_work("default", 0.05) is False  # idle: gives up after its timeout
    answers: list[bool] = []
    done = threading.Event()

    def waiter(client: DurableBackend) -> None:
        answers.append(client.wait_for_work("default", 20))
        done.set()

    for producer in (backend, other):  # the same client, then another one (another process)
        done.clear()
        thread = threading.Thread(target=waiter, args=(backend,))
        thread.start()
        producer.enqueue([spec()], queue="unrelated")
        producer.enqueue([spec()])
        assert done.wait(10), "wait_for_work did not wake up"
        thread.join(10)
        assert backend.wait_for_work("default", 0) is True  # work is there: at once
        backend.claim("default", 1, LEASE, "w")
    assert answers == [True, True]


def test_close(factory: BackendFactory, tmp_path: Path) -> None:
    backend = factory(Store(tmp_path, StoreClock()))
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.enqueue([spec()])
    assert backend.wait_for_work("default", 5) is False


class DurableMachine(RuleBasedStateMachine):
    """Workers that claim, beat, finish with live or stale tokens, die and recover, on a
    clock that jumps: at most one APPLIED per claim, tokens only go up, counts add up."""

    factory: BackendFactory
    root: Path

    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        self.clock = StoreClock()
        self.backend = self.factory(Store(self.root, self.clock, name=uuid.uuid4().hex))
        self.jobs: list[str] = []
        self.held: dict[tuple[str, int], Claimed] = {}  # claims of live workers
        self.applied: set[tuple[str, int]] = set()
        self.completed: set[str] = set()
        self.tokens: dict[str, list[int]] = {}
        self.answers = {APPLIED: 0, DUPLICATE: 0, FENCED: 0}

    def teardown(self) -> None:
        self.backend.close()

    @rule(n=st.integers(1, 3), priority=st.integers(0, 1), attempts=st.integers(1, 3))
    def enqueue(self, n: int, priority: int, attempts: int) -> None:
        retry = RetryPolicy(max_attempts=attempts)
        ids = self.backend.enqueue([spec(priority=priority, retry=retry) for _ in range(n)])
        assert len(set(ids)) == n and not set(ids) & set(self.jobs)
        self.jobs.extend(ids)

    @rule(target=claims, n=st.integers(1, 3))
    def claim(self, n: int) -> list[Claimed]:
        got = self.backend.claim("default", n, LEASE, "w")
        for claimed in got:
            seen = self.tokens.setdefault(claimed.id, [])
            assert not seen or claimed.token > seen[-1], "tokens must go up"
            seen.append(claimed.token)
            self.held[claimed.id, claimed.token] = claimed
        return got

    @rule()
    def heartbeat(self) -> None:
        reply = self.backend.heartbeat(list(self.held), LEASE)
        for key in list(self.held):
            if key[0] in reply.lost:
                del self.held[key]  # the worker gives it up

    @rule(seconds=st.sampled_from([1.0, 10.0, LEASE + 1]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def recover(self) -> None:
        self.backend.recover("default")

    @rule()
    def kill(self) -> None:
        self.held.clear()  # the worker dies: its claims are never finished by it

    @rule(
        batch=claims,
        kind=st.sampled_from(FinishKind),
        delay=st.sampled_from([0.0, 5.0]),
        live=st.booleans(),
    )
    def finish(self, batch: list[Claimed], kind: FinishKind, delay: float, live: bool) -> None:
        if live:  # a live worker finishes what it holds; else a zombie replays its claims
            batch = [c for c in batch if (c.id, c.token) in self.held]
        finishes = [
            Finish(c.id, c.token, kind, result=c.token, error="e", delay=delay) for c in batch
        ]
        answers = self.backend.finish(finishes)
        for claimed, answer in zip(batch, answers, strict=True):
            self.answers[answer] += 1
            key = (claimed.id, claimed.token)
            self.held.pop(key, None)
            if answer is APPLIED:
                assert key not in self.applied, "a claim applied twice"
                self.applied.add(key)
                if kind is FinishKind.COMPLETE:
                    assert claimed.id not in self.completed, "a job completed twice"
                    self.completed.add(claimed.id)
            elif answer is DUPLICATE:
                assert key in self.applied, "a duplicate of nothing"

    @invariant()
    def every_job_is_in_exactly_one_state(self) -> None:
        by_state = {
            s: {r.id for r in self.backend.list_jobs("default", s, limit=1000)} for s in JobState
        }
        seen = [i for ids in by_state.values() for i in ids]
        assert sorted(seen) == sorted(self.jobs)
        stats = self.backend.statistics()
        assert {s: len(ids) for s, ids in by_state.items()} == dict(stats.counts)
        assert (stats.applied, stats.duplicates, stats.fenced) == (
            self.answers[APPLIED],
            self.answers[DUPLICATE],
            self.answers[FENCED],
        )
        for job_id in by_state[JobState.RUNNING] | by_state[JobState.SUCCEEDED]:
            record = self.backend.get(job_id)
            assert record is not None and record.token == self.tokens[job_id][-1]
            assert 1 <= record.attempt <= record.max_attempts
            assert (record.lease_until is not None) == (record.state is JobState.RUNNING)


def test_state_machine(factory: BackendFactory, tmp_path: Path) -> None:
    machine = type(
        "Machine", (DurableMachine,), {"factory": staticmethod(factory), "root": tmp_path}
    )
    run_state_machine_as_test(
        machine, settings=settings(max_examples=100, stateful_step_count=40, deadline=None)
    )
