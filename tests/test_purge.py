"""The purge: a deleted conversation's turns, sessions and events leave the tables; a turn
still running waits; a pass cut short goes on where it stopped."""
from __future__ import annotations

from chalicelib.conversations import ConversationStore
from chalicelib.purge import Purger
from chalicelib.store import Fence, SessionStore
from tests.builders import delta, ending, start


def conversation_of(store: SessionStore, turns: int, running_last: bool = False) -> list[str]:
    """Make conversation `conv` with `turns` turns (each with events); return their ids."""
    ids = []
    for index in range(turns):
        session_id = f"t{index}"
        start(store, session_id, conversation_id="conv", new_conversation=index == 0)
        session = store.claim_lease(session_id, "a")
        store.append(session_id, Fence("a"), [delta(1, session_id=session_id)], session.usage)
        if not (running_last and index == turns - 1):
            store.finish(store.get(session_id), Fence("a"), [],
                         ending(2, session_id=session_id))
        ids.append(session_id)
    return ids


def items_left(store: SessionStore) -> dict[str, int]:
    """Count what the three tables hold, by table."""
    from moto.dynamodb.models import dynamodb_backends

    tables = dynamodb_backends["123456789012"]["us-east-1"].tables
    return {name: len(list(table.all_items())) for name, table in tables.items()}


def test_a_deleted_conversation_leaves_nothing_behind(store: SessionStore) -> None:
    conversation_of(store, 3)
    conversations = ConversationStore(store.models)
    conversations.mark_deleted("conv", "o")
    assert Purger(store, conversations).purge() == ["conv"]
    assert items_left(store) == {"chatSessions": 0, "chatEvents": 0, "chatConversations": 0}


def test_a_conversation_whose_turn_still_runs_waits_for_a_later_pass(store: SessionStore) -> None:
    ids = conversation_of(store, 2, running_last=True)
    conversations = ConversationStore(store.models)
    conversations.mark_deleted("conv", "o")
    assert Purger(store, conversations).purge() == []
    assert store.get(ids[0]) is not None  # nothing removed yet
    store.finish(store.get(ids[1]), Fence("a"), [], ending(2, session_id=ids[1]))
    assert Purger(store, conversations).purge() == ["conv"]
    assert items_left(store)["chatConversations"] == 0


def test_a_pass_out_of_time_keeps_its_progress_and_the_next_one_finishes(
        store: SessionStore) -> None:
    conversation_of(store, 4)
    conversations = ConversationStore(store.models)
    conversations.mark_deleted("conv", "o")
    ticks = iter(range(1000))
    # A clock that gives the pass time for two turns only.
    purger = Purger(store, conversations, monotonic=lambda: next(ticks))
    assert purger.purge(seconds=4) == []
    left = items_left(store)
    assert 0 < left["chatSessions"] < 4
    assert ConversationStore(store.models).get("conv") is not None  # still queued
    assert Purger(store, conversations).purge() == ["conv"]
    assert items_left(store) == {"chatSessions": 0, "chatEvents": 0, "chatConversations": 0}
