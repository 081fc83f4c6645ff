"""Reaper: a run whose orchestrator died ends as error, with one terminal event and no gap."""
from __future__ import annotations

import threading
import time

import pytest

from chalicelib import clock
from chalicelib.conversations import ConversationStore
from chalicelib.errors import LeaseLost, StoreUnavailable
from chalicelib.orchestrator import Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import TextChunk, Usage
from chalicelib.reaper import MAX_REAP_FAILURES, STOPPED_RESPONDING, LocalHousekeeping, Reaper
from chalicelib.records import DELTA, EventRecord, TokenUsage
from chalicelib.store import Fence, SessionStore
from chalicelib.tools import default_tools
from tests.builders import log, start, stored_answer
from tests.fakes import ScriptedProvider


def after_lease(store: SessionStore, monkeypatch, session_id: str = "s1") -> None:
    """Move the clock past the session's lease."""
    lease_end = store.get(session_id).lease_until_ms
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end + 1)


def test_expired_run_is_ended_error_after_its_last_event(store, monkeypatch) -> None:
    start(store)
    store.claim_lease("s1", "dead")
    store.append("s1", Fence("dead"), [EventRecord("s1", 1, DELTA, clock.now_iso(), content="Hal"),
                                       EventRecord("s1", 2, DELTA, clock.now_iso(), content="f")],
                 TokenUsage(4, 2))
    after_lease(store, monkeypatch)
    assert Reaper(store).reap() == ["s1"]
    events = log(store)
    session = store.get("s1")
    assert [(e.seq, e.event_type) for e in events] == [(1, "delta"), (2, "delta"), (3, "error")]
    assert (session.status, session.error, stored_answer(store)) == (
        "error", STOPPED_RESPONDING, "Half")
    assert session.usage == TokenUsage(4, 2)
    assert ConversationStore(store.models).get("c-s1").running_session_id is None


def test_live_and_finished_runs_are_left_alone(store) -> None:
    start(store, "live")
    store.claim_lease("live", "a1")
    assert Reaper(store).reap() == []
    assert store.get("live").status == "running"


def test_a_dispatch_never_claimed_is_reaped_after_the_claim_timeout(store, monkeypatch) -> None:
    start(store)
    after_lease(store, monkeypatch)
    assert Reaper(store).reap() == ["s1"]
    assert store.get("s1").status == "error"


def test_zombie_cannot_write_after_the_reaper_ended_its_run(store, monkeypatch) -> None:
    start(store)
    store.claim_lease("s1", "zombie")
    real_now = clock.now_ms
    after_lease(store, monkeypatch)
    Reaper(store).reap()
    monkeypatch.setattr(clock, "now_ms", real_now)
    with pytest.raises(LeaseLost):
        store.append("s1", Fence("zombie"), [EventRecord("s1", 2, DELTA, clock.now_iso(), content="x")],
                     TokenUsage())
    assert [e.seq for e in log(store)] == [1]


def test_orchestrator_thread_that_stops_is_reaped_by_the_local_loop(store, settings,
                                                                    monkeypatch) -> None:
    """A run thread that simply stops (here: blocked forever) stops renewing its lease."""
    settings = settings.with_overrides(lease_seconds=2)
    stuck = threading.Event()
    real_append = store.append
    calls = []

    def append_then_stop(*args, **kwargs):  # noqa: ANN002
        calls.append(args)
        if len(calls) > 2:
            stuck.wait(30)
        return real_append(*args, **kwargs)

    monkeypatch.setattr(store, "append", append_then_stop)
    provider = ScriptedProvider([TextChunk(f"t{i} ") for i in range(50)] + [Usage(1, 1)],
                                pause=0.1)
    start(store)
    orchestrator = Orchestrator(store, ConversationStore(store.models),
                                ProviderRegistry({"demo": provider}), default_tools(), settings)
    loop = LocalHousekeeping([Reaper(store).reap], interval=0.2)
    loop.start()
    run = threading.Thread(target=orchestrator.run, args=("s1",), daemon=True)
    try:
        run.start()
        deadline = time.monotonic() + 20
        while store.get("s1").status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        loop.stop()
        stuck.set()  # the zombie wakes up and tries to write: it must be refused
        run.join(10)
    events = log(store)
    session = store.get("s1")
    assert (session.status, session.error) == ("error", STOPPED_RESPONDING)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.event_type for e in events].count("error") == 1
    assert events[-1].event_type == "error"
    assert stored_answer(store) == "".join(e.content for e in events if e.event_type == "delta")


def test_a_session_that_cannot_be_ended_is_set_aside_and_never_blocks_the_others(
        store, monkeypatch) -> None:
    for index in range(3):
        start(store, f"s{index}")
    after_lease(store, monkeypatch, "s2")
    real_finish = store.finish

    def refuse_s0(session, fence, pending, ending):
        if session.id == "s0":
            raise StoreUnavailable("DynamoDB refused the request (ValidationException)")
        return real_finish(session, fence, pending, ending)

    monkeypatch.setattr(store, "finish", refuse_s0)
    assert sorted(Reaper(store).reap()) == ["s1", "s2"]
    row = store.models.session.get("s0")
    assert (row.status, row.reapFailures) == ("running", 1)
    assert row.reapAt > clock.now_ms()  # moved back in the queue
    assert "s0" not in store.expired_runs()
    for failures in range(2, MAX_REAP_FAILURES + 1):
        moved = row.reapAt
        monkeypatch.setattr(clock, "now_ms", lambda at=moved: at + 1)
        assert Reaper(store).reap() == []
        row = store.models.session.get("s0")
        assert row.reapFailures == failures
    assert (row.leaseShard, row.reapAt) == (None, None)  # set aside: out of the queue


def test_a_failed_ending_is_retried_without_the_answer(store, monkeypatch) -> None:
    start(store)
    store.claim_lease("s1", "dead")
    store.append("s1", Fence("dead"), [EventRecord("s1", 1, DELTA, clock.now_iso(), content="x")],
                 TokenUsage())
    after_lease(store, monkeypatch)
    real_events = store.events_after
    monkeypatch.setattr(store, "events_after", lambda *a: (_ for _ in ()).throw(
        StoreUnavailable("the events cannot be read")))
    assert Reaper(store).reap() == ["s1"]
    monkeypatch.setattr(store, "events_after", real_events)
    assert store.get("s1").status == "error"
    assert stored_answer(store) == ""


def test_expired_runs_are_found_in_every_shard(store, monkeypatch) -> None:
    ids = [f"session-{index}" for index in range(40)]
    for session_id in ids:
        start(store, session_id)
    after_lease(store, monkeypatch, ids[-1])
    assert sorted(store.expired_runs()) == sorted(ids)


def test_a_dead_run_is_found_once_its_lease_runs_out_though_its_index_entry_lags(
        store, monkeypatch) -> None:
    start(store)
    store.claim_lease("s1", "a1")
    claimed = clock.now_ms()
    # Writes renew the lease (5 s here) without moving the index entry, which lags behind.
    monkeypatch.setattr(clock, "now_ms", lambda: claimed + 3_000)
    store.append("s1", Fence("a1"), [], TokenUsage())
    lease_end = store.get("s1").lease_until_ms
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end - 1)
    assert "s1" in store.expired_runs()  # its index entry says it may be dead...
    assert Reaper(store).reap() == []  # ...but its lease still holds
    assert store.get("s1").status == "running"
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end + 1)
    assert Reaper(store).reap() == ["s1"]


def test_throttling_never_counts_towards_setting_a_session_aside(store, monkeypatch) -> None:
    from chalicelib.dynamo import StoreThrottled

    start(store)
    after_lease(store, monkeypatch)
    real_finish = store.finish

    def throttled(*args, **kwargs):
        raise StoreThrottled("DynamoDB is throttling")

    monkeypatch.setattr(store, "finish", throttled)
    for _ in range(MAX_REAP_FAILURES + 2):
        assert Reaper(store).reap() == []
    row = store.models.session.get("s1")
    assert (row.reapFailures, row.status) == (None, "running")
    assert "s1" in store.expired_runs()  # still in the queue
    monkeypatch.setattr(store, "finish", real_finish)
    assert Reaper(store).reap() == ["s1"]


def test_one_pass_ends_more_dead_runs_than_one_page_of_a_shard(store, monkeypatch) -> None:
    from chalicelib.store import lease_shard

    same_shard = [f"dead-{n}" for n in range(2000) if lease_shard(f"dead-{n}") == "s00"][:30]
    for session_id in same_shard:
        start(store, session_id)
    after_lease(store, monkeypatch, same_shard[-1])
    assert sorted(Reaper(store).reap()) == sorted(same_shard)
