"""Small builders and readers the store, writer, orchestrator and reaper tests share."""
from __future__ import annotations

from chalicelib import clock
from chalicelib.conversations import ConversationStore
from chalicelib.records import (
    DELTA,
    DONE,
    EventRecord,
    HistoryTurn,
    NewSession,
    RunEnding,
    SessionRecord,
    TokenUsage,
    TurnEnding,
)
from chalicelib.store import SessionStore


def new_session(session_id: str = "s1", owner: str = "o", message: str = "hello",
                conversation_id: str | None = None, history: tuple[HistoryTurn, ...] = (),
                title: str = "t", new_conversation: bool = True, **fields: object) -> NewSession:
    """Return a start of a session that (by default) opens a conversation of its own."""
    return NewSession(id=session_id, owner_id=owner, model="demo", message=message,
                      conversation_id=conversation_id or f"c-{session_id}", title=title,
                      history=history, new_conversation=new_conversation, **fields)


def start(store: SessionStore, session_id: str = "s1", **fields: object) -> SessionRecord:
    """Store a new running session (a conversation's first turn unless told otherwise)."""
    return store.create(new_session(session_id, **fields))


def log(store: SessionStore, session_id: str = "s1") -> list[EventRecord]:
    """Return every event of a session, oldest first."""
    session = store.get(session_id)
    if session is None:
        return []
    events: list[EventRecord] = []
    while True:
        page = store.events_after(session_id, len(events), 1000, session.last_seq)
        events += page.events
        if not page.has_more:
            return events


def seqs(store: SessionStore, session_id: str = "s1") -> list[int]:
    return [event.seq for event in log(store, session_id)]


def turn_ending(store: SessionStore, session_id: str = "s1") -> TurnEnding | None:
    """Return how the session's turn ended, as kept in its conversation."""
    session = store.get(session_id)
    assert session is not None
    return ConversationStore(store.models).ending(session.conversation_id, session.created_at,
                                                  session.id)


def stored_answer(store: SessionStore, session_id: str = "s1") -> str | None:
    ending = turn_ending(store, session_id)
    return None if ending is None else ending.answer


def delta(seq: int, text: str = "x", session_id: str = "s1") -> EventRecord:
    return EventRecord(session_id, seq, DELTA, clock.now_iso(), content=text)


def ending(seq: int, status: str = DONE, session_id: str = "s1", answer: str = "x") -> RunEnding:
    return RunEnding(status, EventRecord(session_id, seq, status, clock.now_iso()),
                     answer=answer, usage=TokenUsage(3, 4))
