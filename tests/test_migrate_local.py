"""Data an earlier version kept locally becomes conversations of this one, and still works."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest

from chalicelib.conversations import ConversationStore
from chalicelib.models import LEGACY_SESSION_INDEXES
from chalicelib.store import SessionStore
from scripts.migrate_local import migrate
from tests.builders import log

EXPIRES = int((datetime.now(timezone.utc) + timedelta(days=20)).timestamp())


def legacy_row(session_id: str, created: str, status: str, **fields: Any) -> dict[str, Any]:
    """A session row as the earlier version wrote it: input and answer inside the row."""
    row = {
        "id": {"S": session_id}, "ownerId": {"S": "local"}, "status": {"S": status},
        "model": {"S": "demo"}, "createdAt": {"S": created}, "updatedAt": {"S": created},
        "inputTokens": {"N": "3"}, "outputTokens": {"N": "4"}, "totalTokens": {"N": "7"},
        "lastSeq": {"N": "1"}, "expiresAt": {"N": str(EXPIRES)},
    }
    for name, value in fields.items():
        row[name] = {"N": str(value)} if isinstance(value, int) else {"S": value}
    return row


def write_legacy_data(client: Any, sessions_table: str) -> None:
    """Create the sessions table as the earlier version laid it out, holding its rows."""
    client.create_table(
        TableName=sessions_table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in (
            ("id", "S"), ("ownerId", "S"), ("createdAt", "S"), ("runState", "S"),
            ("leaseUntil", "N"))],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {"IndexName": "byOwner", "Projection": {"ProjectionType": "KEYS_ONLY"},
             "KeySchema": [{"AttributeName": "ownerId", "KeyType": "HASH"},
                           {"AttributeName": "createdAt", "KeyType": "RANGE"}]},
            {"IndexName": "runningByLease", "Projection": {"ProjectionType": "KEYS_ONLY"},
             "KeySchema": [{"AttributeName": "runState", "KeyType": "HASH"},
                           {"AttributeName": "leaseUntil", "KeyType": "RANGE"}]},
        ])
    history = json.dumps([{"role": "user", "content": "earlier"},
                          {"role": "assistant", "content": "reply"}])
    rows = [
        legacy_row("first", "2026-11-20T10:00:00.000Z", "done", message="Привет 👋",
                   history=history, answer="Здравствуйте", conversationId="page-made-id-1",
                   title="Greetings", finishedAt="2026-11-20T10:00:05.000Z"),
        legacy_row("second", "2026-11-20T10:01:00.000Z", "error", message="and then?",
                   history=history, answer="partial", error="The model failed",
                   conversationId="page-made-id-1", finishedAt="2026-11-20T10:01:05.000Z"),
        legacy_row("alone", "2026-11-21T09:00:00.000Z", "running", message="still going",
                   runState="running", leaseUntil=1, attemptId="dead"),
    ]
    for row in rows:
        client.put_item(TableName=sessions_table, Item=row)
    client.put_item(TableName=sessions_table, Item=legacy_row(
        "no-conversation", "2026-11-19T08:00:00.000Z", "cancelled", message="stop",
        answer="", finishedAt="2026-11-19T08:00:01.000Z"))


@pytest.fixture
def legacy_store(aws, settings) -> SessionStore:
    """Tables laid out by the earlier version, holding its rows; then this version's tables."""
    write_legacy_data(boto3.client("dynamodb", region_name="us-east-1"), settings.sessions_table)
    store = SessionStore(settings)
    store.create_tables()
    return store


def test_old_rows_become_turns_of_conversations_and_the_old_indexes_go(
        legacy_store: SessionStore) -> None:
    report = migrate(legacy_store.models, iter(["new-1", "new-2", "new-3"]).__next__)
    assert report is not None
    assert (report.sessions, report.conversations) == (4, 3)
    assert set(report.dropped_indexes) == set(LEGACY_SESSION_INDEXES)
    conversations = ConversationStore(legacy_store.models)

    kept = conversations.get("page-made-id-1")
    assert (kept.title, kept.turn_count, kept.last_session_id, kept.last_status) == (
        "Greetings", 2, "second", "error")
    turns = conversations.turns("page-made-id-1", 10).turns
    assert [t.input.message for t in turns] == ["Привет 👋", "and then?"]
    # The first turn keeps the imported history; the second's was the first again.
    assert [(h.role, h.content) for h in turns[0].input.history] == [
        ("user", "earlier"), ("assistant", "reply")]
    assert turns[1].input.history == ()
    assert [(t.ending.status, t.ending.answer) for t in turns] == [
        ("done", "Здравствуйте"), ("error", "partial")]

    row = legacy_store.models.session.get("first")
    assert row.conversationId == "page-made-id-1"
    raw = boto3.client("dynamodb", region_name="us-east-1").get_item(
        TableName=legacy_store.models.session.Meta.table_name, Key={"id": {"S": "first"}})["Item"]
    assert not {"message", "history", "answer", "runState", "totalTokens"} & set(raw)

    # The running one is in the new lease index, so the stack's start ends it.
    alone = legacy_store.get("alone")
    assert alone is not None and alone.is_running
    assert "alone" in legacy_store.expired_runs()
    # Its conversation (a new id) counts it as running.
    assert conversations.get(alone.conversation_id).running_session_id == "alone"


def test_a_second_start_finds_the_marker_and_does_nothing(legacy_store: SessionStore) -> None:
    assert migrate(legacy_store.models, iter(["a", "b", "c"]).__next__) is not None
    assert migrate(legacy_store.models, iter(["d"]).__next__) is None


def test_a_migrated_conversation_takes_a_new_turn_with_its_history(
        legacy_store: SessionStore, settings) -> None:
    from chalicelib.orchestrator import Orchestrator
    from chalicelib.providers import ProviderRegistry
    from chalicelib.tools import default_tools
    from tests.builders import new_session
    from tests.fakes import ScriptedProvider
    from chalicelib.providers.base import TextChunk, Usage

    migrate(legacy_store.models, iter(["x", "y", "z"]).__next__)
    legacy_store.create(new_session("third", owner="local", message="third one",
                                    conversation_id="page-made-id-1", new_conversation=False))
    provider = ScriptedProvider([TextChunk("ok"), Usage(1, 1)])
    Orchestrator(legacy_store, ConversationStore(legacy_store.models),
                 ProviderRegistry({"demo": provider}), default_tools(), settings).run("third")
    assert [(m.role, m.content) for m in provider.requests[0].messages] == [
        ("user", "earlier"), ("assistant", "reply"), ("user", "Привет 👋"),
        ("assistant", "Здравствуйте"), ("user", "and then?"), ("assistant", "partial"),
        ("user", "third one")]
    assert log(legacy_store, "third")[-1].event_type == "done"


def test_a_migration_cut_short_and_run_again_counts_every_turn(legacy_store: SessionStore,
                                                               monkeypatch) -> None:
    import scripts.migrate_local as migration

    real_write_turn = migration._write_turn
    written: list[str] = []

    def killed_after_one(models, legacy_row, conversation_id, row, imported):
        if written:
            raise KeyboardInterrupt("the stack was stopped mid-migration")
        written.append(row["id"])
        real_write_turn(models, legacy_row, conversation_id, row, imported)

    monkeypatch.setattr(migration, "_write_turn", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        migrate(legacy_store.models, iter(["n1", "n2", "n3"]).__next__)
    monkeypatch.setattr(migration, "_write_turn", real_write_turn)
    migrate(legacy_store.models, iter(["n4", "n5", "n6"]).__next__)
    kept = ConversationStore(legacy_store.models).get("page-made-id-1")
    assert (kept.turn_count, kept.title, kept.last_session_id) == (2, "Greetings", "second")
    turns = ConversationStore(legacy_store.models).turns("page-made-id-1", 10).turns
    assert [len(t.input.history) for t in turns] == [2, 0]
