"""SessionStore against moto: creation with its turn, fenced appends, terminal writes, paging."""
from __future__ import annotations

import threading

import pytest

from chalicelib import clock
from chalicelib.conversations import ConversationStore
from chalicelib.errors import CancelRequested, LeaseLost
from chalicelib.models import LEASE_SHARDS
from chalicelib.records import CANCELLED, DELTA, DONE, ERROR, HistoryTurn, TokenUsage
from chalicelib.store import ConversationUnavailable, Fence, SessionExists, SessionStore, lease_shard
from tests.builders import delta, ending, log, new_session, seqs, start, stored_answer


@pytest.fixture
def claimed(store: SessionStore) -> SessionStore:
    start(store)
    assert store.claim_lease("s1", "a1") is not None
    return store


def session(store: SessionStore, session_id: str = "s1"):
    found = store.get(session_id)
    assert found is not None
    return found


def test_created_session_is_running_and_its_turn_keeps_the_input(store: SessionStore) -> None:
    history = (HistoryTurn("user", "Привет"), HistoryTurn("assistant", "Здравствуйте 👋"))
    start(store, history=history, title="t", message="hello")
    created = session(store)
    assert (created.status, created.last_seq, created.title) == ("running", 0, "t")
    assert (created.conversation_id, created.owner_id) == ("c-s1", "o")
    [turn] = ConversationStore(store.models).turns("c-s1", 10).turns
    assert (turn.input.message, turn.input.history, turn.ending) == ("hello", history, None)
    conversation = ConversationStore(store.models).get("c-s1")
    assert (conversation.running_session_id, conversation.turn_count) == ("s1", 1)


def test_create_refuses_an_existing_id(store: SessionStore) -> None:
    start(store)
    with pytest.raises(SessionExists):
        store.create(new_session(conversation_id="elsewhere"))


def test_a_second_turn_waits_for_the_running_one(store: SessionStore) -> None:
    start(store)
    with pytest.raises(ConversationUnavailable):
        store.create(new_session("s2", conversation_id="c-s1", new_conversation=False))
    store.claim_lease("s1", "a1")
    store.finish(session(store), Fence("a1"), [], ending(1))
    store.create(new_session("s2", conversation_id="c-s1", new_conversation=False))
    assert ConversationStore(store.models).get("c-s1").turn_count == 2


def test_a_turn_of_another_owners_conversation_is_refused(store: SessionStore) -> None:
    start(store)
    store.claim_lease("s1", "a1")
    store.finish(session(store), Fence("a1"), [], ending(1))
    with pytest.raises(ConversationUnavailable):
        store.create(new_session("s2", owner="mallory", conversation_id="c-s1",
                                 new_conversation=False))
    assert store.get("s2") is None


def test_unknown_session_is_none(store: SessionStore) -> None:
    assert store.get("nope") is None


def test_expired_session_and_events_are_hidden(claimed: SessionStore, monkeypatch) -> None:
    claimed.append("s1", Fence("a1"), [delta(1)], TokenUsage())
    last_seq = session(claimed).last_seq
    later = clock.now_ms() + 31 * 86_400_000
    monkeypatch.setattr(clock, "now_ms", lambda: later)
    assert claimed.get("s1") is None
    assert claimed.events_after("s1", 0, 10, last_seq).events == ()


def test_only_the_first_claim_wins(store: SessionStore) -> None:
    start(store)
    assert store.claim_lease("s1", "a1") is not None
    assert store.claim_lease("s1", "a2") is None
    assert session(store).attempt_id == "a1"


def test_concurrent_claims_have_exactly_one_winner(store: SessionStore) -> None:
    start(store)
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
    assert session(store).attempt_id == winners[0]


def test_appends_are_contiguous_and_update_last_seq(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(1), delta(2)], TokenUsage(1, 2))
    claimed.append("s1", Fence("a1"), [delta(3)], TokenUsage(1, 3))
    assert seqs(claimed) == [1, 2, 3]
    assert session(claimed).last_seq == 3
    assert session(claimed).usage == TokenUsage(1, 3)


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
        claimed.finish(session(claimed), Fence("zombie"), [], ending(1))
    assert seqs(claimed) == []
    assert session(claimed).status == "running"


def test_write_after_the_lease_expired_is_refused(claimed: SessionStore, monkeypatch) -> None:
    lease_end = session(claimed).lease_until_ms
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end + 1)
    with pytest.raises(LeaseLost):
        claimed.append("s1", Fence("a1"), [delta(1)], TokenUsage())
    assert seqs(claimed) == []


def test_every_write_renews_the_lease_but_only_some_move_the_reaper_index(
        claimed: SessionStore, monkeypatch) -> None:
    def raw():
        return claimed.models.session.get("s1", consistent_read=True)

    first = raw()
    start_ms = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: start_ms + 2_000)
    claimed.append("s1", Fence("a1"), [], TokenUsage())
    renewed = raw()
    assert renewed.leaseUntil >= first.leaseUntil + 1_000
    assert renewed.reapAt == first.reapAt
    claimed.append("s1", Fence("a1"), [], TokenUsage(), renew_index=True)
    assert raw().reapAt == raw().leaseUntil > first.reapAt


def test_running_sessions_are_spread_over_the_lease_shards(store: SessionStore) -> None:
    shards = {lease_shard(f"session-{i}") for i in range(200)}
    assert len(shards) == LEASE_SHARDS
    start(store)
    assert store.models.session.get("s1").leaseShard == lease_shard("s1")


def test_cancel_request_refuses_appends_but_not_the_terminal_write(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(1)], TokenUsage())
    claimed.request_cancel("s1")
    with pytest.raises(CancelRequested):
        claimed.append("s1", Fence("a1"), [delta(2)], TokenUsage())
    claimed.finish(session(claimed), Fence("a1"), [delta(2)], ending(3, CANCELLED))
    assert seqs(claimed) == [1, 2, 3]
    assert session(claimed).status == CANCELLED


def test_cancel_of_a_finished_session_changes_nothing(claimed: SessionStore) -> None:
    claimed.finish(session(claimed), Fence("a1"), [], ending(1))
    before = session(claimed)
    claimed.request_cancel("s1")
    assert session(claimed) == before


def test_finish_writes_terminal_event_status_ending_and_frees_the_conversation(
        claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(1, "ab")], TokenUsage())
    claimed.finish(session(claimed), Fence("a1"), [delta(2, "c")], ending(3, answer="abc"))
    finished = session(claimed)
    assert [e.event_type for e in log(claimed)] == [DELTA, DELTA, DONE]
    assert (finished.status, finished.last_seq, stored_answer(claimed)) == (DONE, 3, "abc")
    assert finished.usage == TokenUsage(3, 4)
    assert finished.finished_at is not None
    row = claimed.models.session.get("s1")
    assert (row.leaseShard, row.reapAt, row.runOwner) == (None, None, None)
    conversation = ConversationStore(claimed.models).get("c-s1")
    assert (conversation.running_session_id, conversation.last_status) == (None, DONE)


def test_nothing_is_appended_after_the_terminal_event(claimed: SessionStore) -> None:
    claimed.finish(session(claimed), Fence("a1"), [], ending(1))
    with pytest.raises(LeaseLost):
        claimed.append("s1", Fence("a1"), [delta(2)], TokenUsage())
    with pytest.raises(LeaseLost):
        claimed.finish(session(claimed), Fence("a1"), [], ending(2, ERROR))
    assert seqs(claimed) == [1]
    assert session(claimed).status == DONE


def test_unclaimed_fence_ends_only_a_session_no_run_claimed(store: SessionStore) -> None:
    start(store, "s1")
    start(store, "s2")
    store.claim_lease("s2", "a1")
    store.finish(session(store, "s1"), Fence.unclaimed(), [], ending(1, ERROR, "s1"))
    with pytest.raises(LeaseLost):
        store.finish(session(store, "s2"), Fence.unclaimed(), [], ending(1, ERROR, "s2"))
    assert (session(store, "s1").status, session(store, "s2").status) == (ERROR, "running")


def test_a_cancelled_unclaimed_session_can_no_longer_be_claimed(store: SessionStore) -> None:
    start(store)
    store.finish(session(store), Fence.unclaimed(), [], ending(1, CANCELLED))
    assert store.claim_lease("s1", "late-delivery") is None
    assert (session(store).status, seqs(store)) == (CANCELLED, [1])


def test_stored_answer_and_error_are_capped_on_a_character_boundary(aws, settings) -> None:
    store = SessionStore(settings.with_overrides(max_answer_bytes=10, max_error_bytes=5))
    store.create_tables()
    start(store)
    store.claim_lease("s1", "a1")
    long_ending = ending(1, ERROR, answer="ЖЖЖЖЖЖЖЖ")  # 16 bytes in UTF-8
    store.finish(session(store), Fence("a1"), [], type(long_ending)(
        ERROR, long_ending.terminal_event, answer=long_ending.answer, error="ЯЯЯЯ"))
    assert stored_answer(store) == "ЖЖЖЖЖ"
    assert session(store).error == "ЯЯ"


def test_events_after_pages_oldest_first(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(i) for i in range(1, 6)], TokenUsage())
    first = claimed.events_after("s1", 0, 2, 5)
    rest = claimed.events_after("s1", 4, 2, 5)
    assert ([e.seq for e in first.events], first.has_more) == ([1, 2], True)
    assert ([e.seq for e in rest.events], rest.has_more) == ([5], False)


def test_events_after_never_reads_past_the_last_seq_it_is_given(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(i) for i in range(1, 6)], TokenUsage())
    page = claimed.events_after("s1", 0, 100, 3)
    assert ([e.seq for e in page.events], page.has_more) == ([1, 2, 3], False)


def test_events_after_stops_at_a_gap(claimed: SessionStore) -> None:
    # As a Query can see during another transaction's commit: seq 5 stored, 4 not yet.
    claimed.append("s1", Fence("a1"), [delta(i) for i in range(1, 4)], TokenUsage())
    claimed.models.event("s1", 5, eventType=DELTA, content="early",
                         createdAt=clock.now_iso()).save()
    page = claimed.events_after("s1", 1, 100, 5)
    assert ([e.seq for e in page.events], page.has_more) == ([2, 3], True)


def test_list_is_newest_first_paged_and_per_owner(store: SessionStore, monkeypatch) -> None:
    begin = clock.now_ms()
    for index in range(5):
        monkeypatch.setattr(clock, "now_ms", lambda i=index: begin + i)
        start(store, f"s{index}", owner="alice")
    start(store, "other", owner="bob")
    first = store.list_by_owner("alice", 3)
    second = store.list_by_owner("alice", 3, first.next_key)
    assert [s.id for s in first.sessions] == ["s4", "s3", "s2"]
    assert [s.id for s in second.sessions] == ["s1", "s0"]
    assert second.next_key is None
    assert [s.id for s in store.list_by_owner("bob", 10).sessions] == ["other"]


def test_deleting_a_session_removes_its_row_and_events(claimed: SessionStore) -> None:
    claimed.append("s1", Fence("a1"), [delta(1), delta(2)], TokenUsage())
    claimed.finish(session(claimed), Fence("a1"), [], ending(3))
    claimed.delete_session("s1")
    assert claimed.get("s1") is None
    assert claimed.events_after("s1", 0, 10, 3).events == ()
