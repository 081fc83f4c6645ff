"""SessionStore against moto: creation, fenced appends, terminal writes, paging."""
from __future__ import annotations

import threading

import pytest

from chalicelib import clock
from chalicelib.errors import CancelRequested, LeaseLost
from chalicelib.records import (
    CANCELLED,
    DELTA,
    DONE,
    ERROR,
    EventRecord,
    HistoryTurn,
    NewSession,
    RunEnding,
    TokenUsage,
)
from chalicelib.store import Fence, SessionExists, SessionStore


def new_session(session_id: str = "s1", owner: str = "alice", **fields: object) -> NewSession:
    return NewSession(id=session_id, owner_id=owner, model="demo", message="hello", **fields)


def delta(seq: int, text: str = "x", session_id: str = "s1") -> EventRecord:
    return EventRecord(session_id, seq, DELTA, clock.now_iso(), content=text)


def ending(seq: int, status: str = DONE, session_id: str = "s1") -> RunEnding:
    return RunEnding(status, EventRecord(session_id, seq, status, clock.now_iso()),
                     answer="x", usage=TokenUsage(3, 4))


def seqs(store: SessionStore, session_id: str = "s1") -> list[int]:
    return [e.seq for e in store.events_after(session_id, 0, 1000).events]


@pytest.fixture
def claimed(store: SessionStore) -> SessionStore:
    store.create(new_session())
    assert store.claim_lease("s1", "a1") is not None
    return store


def test_created_session_is_running_with_its_input(store: SessionStore) -> None:
    history = (HistoryTurn("user", "Привет"), HistoryTurn("assistant", "Здравствуйте 👋"))
    store.create(new_session(history=history, title="t", conversation_id="c"))
    session = store.get("s1")
    assert session is not None
    assert (session.status, session.last_seq, session.message) == ("running", 0, "hello")
    assert session.history == history
    assert (session.title, session.conversation_id, session.owner_id) == ("t", "c", "alice")


def test_create_refuses_an_existing_id(store: SessionStore) -> None:
    store.create(new_session())
    with pytest.raises(SessionExists):
        store.create(new_session())


def test_unknown_session_is_none(store: SessionStore) -> None:
    assert store.get("nope") is None


def test_expired_session_and_events_are_hidden(claimed: SessionStore, monkeypatch) -> None:
    claimed.append("s1", Fence("a1"), [delta(1)], TokenUsage())
    later = clock.now_ms() + 31 * 86_400_000
    monkeypatch.setattr(clock, "now_ms", lambda: later)
    assert claimed.get("s1") is None
    assert claimed.events_after("s1", 0, 10).events == ()


def test_only_the_first_claim_wins(store: SessionStore) -> None:
    store.create(new_session())
    assert store.claim_lease("s1", "a1") is not None
    assert store.claim_lease("s1", "a2") is None
    assert store.get("s1").attempt_id == "a1"


def test_concurrent_claims_have_exactly_one_winner(store: SessionStore) -> None:
    store.create(new_session())
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def claim(attempt: str) -> None:
        barrier.wait()
        if store.claim_lease("s1", attempt) is not None:
            winners.append(attempt)

    threads = [threading.Thread(target=claim, args=(f"a{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.get("s1").attempt_id == winners[0]


def test_appends_are_contiguous_and_update_last_seq(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(1), delta(2)], TokenUsage(1, 2))
    claimed.append("s1", Fence("a1"), [delta(3)], TokenUsage(1, 3))
    session = claimed.get("s1")
    assert seqs(claimed) == [1, 2, 3]
    assert session.last_seq == 3
    assert session.usage == TokenUsage(1, 3)


@pytest.mark.parametrize("events", [[delta(1)], [delta(4)], [delta(2), delta(3)]],
                         ids=["seq-written-twice", "gap-ahead", "overlap"])
def test_append_refuses_a_seq_that_is_not_next(claimed: SessionStore, events) -> None:
    claimed.append("s1", Fence("a1"), [delta(1), delta(2)], TokenUsage())
    with pytest.raises(LeaseLost):
        claimed.append("s1", Fence("a1"), events, TokenUsage())
    assert seqs(claimed) == [1, 2]


def test_write_by_another_attempt_is_refused(claimed: SessionStore) -> None:
    with pytest.raises(LeaseLost):
        claimed.append("s1", Fence("zombie"), [delta(1)], TokenUsage())
    with pytest.raises(LeaseLost):
        claimed.finish("s1", Fence("zombie"), [], ending(1))
    assert seqs(claimed) == []
    assert claimed.get("s1").status == "running"


def test_write_after_the_lease_expired_is_refused(claimed: SessionStore, monkeypatch) -> None:
    lease_end = claimed.get("s1").lease_until_ms
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end + 1)
    with pytest.raises(LeaseLost):
        claimed.append("s1", Fence("a1"), [delta(1)], TokenUsage())
    assert seqs(claimed) == []


def test_heartbeat_renews_the_lease(claimed: SessionStore, monkeypatch) -> None:
    first = claimed.get("s1").lease_until_ms
    start = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: start + 2_000)
    claimed.append("s1", Fence("a1"), [], TokenUsage())
    assert claimed.get("s1").lease_until_ms >= first + 1_000


def test_cancel_request_refuses_appends_but_not_the_terminal_write(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(1)], TokenUsage())
    claimed.request_cancel("s1")
    with pytest.raises(CancelRequested):
        claimed.append("s1", Fence("a1"), [delta(2)], TokenUsage())
    claimed.finish("s1", Fence("a1"), [delta(2)], ending(3, CANCELLED))
    assert seqs(claimed) == [1, 2, 3]
    assert claimed.get("s1").status == CANCELLED


def test_cancel_of_a_finished_session_changes_nothing(claimed: SessionStore) -> None:
    claimed.finish("s1", Fence("a1"), [], ending(1))
    before = claimed.get("s1")
    claimed.request_cancel("s1")
    assert claimed.get("s1") == before


def test_finish_writes_terminal_event_and_status_together(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(1, "ab")], TokenUsage())
    claimed.finish("s1", Fence("a1"), [delta(2, "c")], ending(3))
    session = claimed.get("s1")
    events = claimed.events_after("s1", 0, 10).events
    assert [e.event_type for e in events] == [DELTA, DELTA, DONE]
    assert (session.status, session.last_seq, session.answer) == (DONE, 3, "x")
    assert session.usage == TokenUsage(3, 4)
    assert session.finished_at is not None


def test_nothing_is_appended_after_the_terminal_event(claimed: SessionStore) -> None:
    claimed.finish("s1", Fence("a1"), [], ending(1))
    with pytest.raises(LeaseLost):
        claimed.append("s1", Fence("a1"), [delta(2)], TokenUsage())
    with pytest.raises(LeaseLost):
        claimed.finish("s1", Fence("a1"), [], ending(2, ERROR))
    assert seqs(claimed) == [1]
    assert claimed.get("s1").status == DONE


def test_unclaimed_fence_ends_only_a_session_no_run_claimed(store: SessionStore) -> None:
    store.create(new_session("s1"))
    store.create(new_session("s2"))
    store.claim_lease("s2", "a1")
    store.finish("s1", Fence.unclaimed(), [], ending(1, ERROR, "s1"))
    with pytest.raises(LeaseLost):
        store.finish("s2", Fence.unclaimed(), [], ending(1, ERROR, "s2"))
    assert (store.get("s1").status, store.get("s2").status) == (ERROR, "running")


def test_stored_answer_is_capped_on_a_character_boundary(aws, settings) -> None:
    store = SessionStore(settings.with_overrides(max_answer_bytes=10))
    store.create_tables()
    store.create(new_session())
    store.claim_lease("s1", "a1")
    long_answer = RunEnding(DONE, EventRecord("s1", 1, DONE, clock.now_iso()),
                            answer="ЖЖЖЖЖЖЖЖ")  # 16 bytes in UTF-8
    store.finish("s1", Fence("a1"), [], long_answer)
    assert store.get("s1").answer == "ЖЖЖЖЖ"


def test_events_after_pages_oldest_first(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(i) for i in range(1, 6)], TokenUsage())
    first = claimed.events_after("s1", 0, 2)
    rest = claimed.events_after("s1", 4, 2)
    assert ([e.seq for e in first.events], first.has_more) == ([1, 2], True)
    assert ([e.seq for e in rest.events], rest.has_more) == ([5], False)


def test_list_is_newest_first_paged_and_per_owner(store: SessionStore, monkeypatch) -> None:
    start = clock.now_ms()
    for index in range(5):
        monkeypatch.setattr(clock, "now_ms", lambda i=index: start + i)
        store.create(new_session(f"s{index}"))
    store.create(new_session("other", owner="bob"))
    first = store.list_by_owner("alice", 3)
    second = store.list_by_owner("alice", 3, first.next_key)
    assert [s.id for s in first.sessions] == ["s4", "s3", "s2"]
    assert [s.id for s in second.sessions] == ["s1", "s0"]
    assert second.next_key is None
    assert [s.id for s in store.list_by_owner("bob", 10).sessions] == ["other"]
