"""PynamoDB models of backchat's three tables, bound to table names and endpoint from settings.

The classes are built by `bind_models` rather than declared at import time because the table
names, region and endpoint differ per stage and per test. docs/decisions.md ("Tables") says
why the data is laid out this way; in short:

- `chatSessions`: one small row per session (a turn), updated by every flush and heartbeat,
  so it holds only bounded attributes. Its indexes are keyed on attributes that change only at
  start and end, or (the lease index) every LEASE_INDEX_SECONDS, never per flush.
- `chatEvents`: a session's events under (sessionId, seq).
- `chatConversations`: one partition per conversation, holding the conversation's row, and
  for each turn an item with its input (written once at start) and an item with its ending:
  the answer, status and token counts (written once, with the terminal event). The model's
  history is one Query over that partition.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Type

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.settings import Settings

SESSIONS_BY_OWNER_INDEX = "sessionsByOwner"
# Running sessions by owner, for the running-sessions cap: `runOwner` holds the owner id
# while a session runs and is removed when it ends (a sparse index).
RUNNING_BY_OWNER_INDEX = "runningByOwner"
# Running sessions by the time the reaper may look at them, spread over LEASE_SHARDS
# partitions so that no partition key is shared by every running session.
LEASES_INDEX = "leasesByShard"
LEASE_SHARDS = 16
CONVERSATIONS_BY_ACTIVITY_INDEX = "conversationsByActivity"
# Deleted conversations waiting for the purge (sparse: only tombstones have `purgeQueue`).
PURGE_INDEX = "conversationsToPurge"
PURGE_QUEUE = "pending"

# Sort keys in a conversation's partition: its row, then per turn (in time order) the turn's
# input and the turn's ending. Session ids are URL-safe base64, which never holds '#'.
CONVERSATION_ITEM = "conversation"
TURN_PREFIX = "turn#"
ENDING_SUFFIX = "#end"

# Indexes of older versions, dropped from tables kept by the local stack (scripts/migrate_local.py).
LEGACY_SESSION_INDEXES = ("byOwner", "runningByLease")


def turn_key(created_at: str, session_id: str) -> str:
    """Return the sort key of a turn's input item in its conversation's partition."""
    return f"{TURN_PREFIX}{created_at}#{session_id}"


def ending_key(created_at: str, session_id: str) -> str:
    """Return the sort key of a turn's ending item (answer, status, usage)."""
    return turn_key(created_at, session_id) + ENDING_SUFFIX


class Utf8JSONAttribute(JSONAttribute):
    """JSON stored as UTF-8 text: PynamoDB's JSONAttribute escapes every non-ASCII character,
    which makes an emoji cost 12 bytes instead of 4 against DynamoDB's 400 KB item limit."""

    def serialize(self, value: object) -> str | None:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class UsageMap(MapAttribute):
    """Token counts attached to a `done` event."""

    inputTokens = NumberAttribute()
    outputTokens = NumberAttribute()
    totalTokens = NumberAttribute()


class HistoryEntry(MapAttribute):
    """One message of a seeded (imported) history, stored as a DynamoDB map: no JSON escaping."""

    role = UnicodeAttribute()
    content = UnicodeAttribute()


@dataclass(frozen=True)
class BoundModels:
    """The model classes for one set of settings."""

    session: Type[Model]
    event: Type[Model]
    conversation: Type[Model]
    turn: Type[Model]
    ending: Type[Model]
    turn_item: Type[Model]

    def all(self) -> tuple[Type[Model], ...]:
        """Return one model per table (the others share a table with these)."""
        return (self.session, self.event, self.conversation)


def bind_models(settings: Settings) -> BoundModels:
    """Return the model classes bound to the settings' tables and endpoint."""

    def table_meta(table_name: str) -> type:
        return type("Meta", (), {
            "table_name": table_name,
            "region": settings.region,
            "host": settings.dynamodb_endpoint,
            "billing_mode": "PAY_PER_REQUEST",
            # Runs write from many threads locally; each needs its own HTTP connection.
            "max_pool_connections": settings.max_pool_connections,
            # A stuck store must not hang a route past API Gateway's 29 s (botocore's own
            # retries are off: the store decides what to retry and for how long).
            "connect_timeout_seconds": settings.store_connect_timeout,
            "read_timeout_seconds": settings.store_read_timeout,
            "max_retry_attempts": 0,
        })

    class SessionsByOwner(GlobalSecondaryIndex):
        class Meta:
            index_name = SESSIONS_BY_OWNER_INDEX
            projection = KeysOnlyProjection()

        ownerId = UnicodeAttribute(hash_key=True)
        createdAt = UnicodeAttribute(range_key=True)

    class RunningByOwner(GlobalSecondaryIndex):
        class Meta:
            index_name = RUNNING_BY_OWNER_INDEX
            projection = KeysOnlyProjection()

        runOwner = UnicodeAttribute(hash_key=True)
        createdAt = UnicodeAttribute(range_key=True)

    class LeasesByShard(GlobalSecondaryIndex):
        class Meta:
            index_name = LEASES_INDEX
            projection = KeysOnlyProjection()

        leaseShard = UnicodeAttribute(hash_key=True)
        reapAt = NumberAttribute(range_key=True)

    class ChatSession(Model):
        """A turn's run: status, lease, token counts. Small: every flush updates it."""

        Meta = table_meta(settings.sessions_table)

        id = UnicodeAttribute(hash_key=True)
        ownerId = UnicodeAttribute()
        conversationId = UnicodeAttribute()
        status = UnicodeAttribute()
        model = UnicodeAttribute()
        title = UnicodeAttribute(null=True)
        inputTokens = NumberAttribute(default=0)
        outputTokens = NumberAttribute(default=0)
        lastSeq = NumberAttribute(default=0)
        error = UnicodeAttribute(null=True)
        createdAt = UnicodeAttribute()
        updatedAt = UnicodeAttribute()
        finishedAt = UnicodeAttribute(null=True)
        # The lease: which attempt may write, until when (renewed by every write).
        attemptId = UnicodeAttribute(null=True)
        leaseUntil = NumberAttribute(null=True)
        # The reaper's index keys, present while running; reapAt trails leaseUntil and is
        # renewed only every LEASE_INDEX_SECONDS, so streaming does not write the index.
        leaseShard = UnicodeAttribute(null=True)
        reapAt = NumberAttribute(null=True)
        reapFailures = NumberAttribute(null=True)
        runOwner = UnicodeAttribute(null=True)
        cancelRequested = BooleanAttribute(null=True)
        # Set on a running session when its conversation is deleted, so that reads of a
        # running session need not read its conversation too.
        conversationDeleted = BooleanAttribute(null=True)
        idempotencyKey = UnicodeAttribute(null=True)
        requestHash = UnicodeAttribute(null=True)
        expiresAt = TTLAttribute(null=True)

        sessions_by_owner = SessionsByOwner()
        running_by_owner = RunningByOwner()
        leases_by_shard = LeasesByShard()

    class ChatEvent(Model):
        """One event of a run, at its place `seq` in the session's log."""

        Meta = table_meta(settings.events_table)

        sessionId = UnicodeAttribute(hash_key=True)
        seq = NumberAttribute(range_key=True)
        eventType = UnicodeAttribute()
        content = UnicodeAttribute(null=True)
        toolName = UnicodeAttribute(null=True)
        toolCallId = UnicodeAttribute(null=True)
        toolInput = Utf8JSONAttribute(null=True)
        usage = UsageMap(null=True)
        createdAt = UnicodeAttribute()
        expiresAt = TTLAttribute(null=True)

    class ConversationsByActivity(GlobalSecondaryIndex):
        class Meta:
            index_name = CONVERSATIONS_BY_ACTIVITY_INDEX
            projection = KeysOnlyProjection()

        listOwner = UnicodeAttribute(hash_key=True)
        updatedAt = UnicodeAttribute(range_key=True)

    class ConversationsToPurge(GlobalSecondaryIndex):
        class Meta:
            index_name = PURGE_INDEX
            projection = KeysOnlyProjection()

        purgeQueue = UnicodeAttribute(hash_key=True)
        deletedAt = UnicodeAttribute(range_key=True)

    conversations_meta = table_meta(settings.conversations_table)

    class Conversation(Model):
        """A conversation's row: owner, title, activity, and the turn running now (if any)."""

        Meta = conversations_meta

        conversationId = UnicodeAttribute(hash_key=True)
        item = UnicodeAttribute(range_key=True)
        ownerId = UnicodeAttribute()
        # The owner while the conversation is listed; removed when it is deleted.
        listOwner = UnicodeAttribute(null=True)
        title = UnicodeAttribute()
        createdAt = UnicodeAttribute()
        updatedAt = UnicodeAttribute()
        turnCount = NumberAttribute(default=0)
        lastSessionId = UnicodeAttribute(null=True)
        lastStatus = UnicodeAttribute(null=True)
        runningSessionId = UnicodeAttribute(null=True)
        deletedAt = UnicodeAttribute(null=True)
        purgeQueue = UnicodeAttribute(null=True)
        expiresAt = TTLAttribute(null=True)

        by_activity = ConversationsByActivity()
        to_purge = ConversationsToPurge()

    class TurnInput(Model):
        """A turn's input: the user's message (and, on a conversation's first turn, the
        imported history). Written once, when the turn starts."""

        Meta = conversations_meta

        conversationId = UnicodeAttribute(hash_key=True)
        item = UnicodeAttribute(range_key=True)
        sessionId = UnicodeAttribute()
        model = UnicodeAttribute()
        message = UnicodeAttribute()
        history = ListAttribute(of=HistoryEntry, null=True)
        createdAt = UnicodeAttribute()
        expiresAt = TTLAttribute(null=True)

    class TurnEnding(Model):
        """How a turn ended: its answer, status and usage. Written once, with the terminal event."""

        Meta = conversations_meta

        conversationId = UnicodeAttribute(hash_key=True)
        item = UnicodeAttribute(range_key=True)
        sessionId = UnicodeAttribute()
        status = UnicodeAttribute()
        answer = UnicodeAttribute(null=True)
        error = UnicodeAttribute(null=True)
        finishedAt = UnicodeAttribute()
        inputTokens = NumberAttribute(default=0)
        outputTokens = NumberAttribute(default=0)
        expiresAt = TTLAttribute(null=True)

    class TurnItem(Model):
        """Either kind of a turn's items, for reading a conversation's partition in one Query."""

        Meta = conversations_meta

        conversationId = UnicodeAttribute(hash_key=True)
        item = UnicodeAttribute(range_key=True)
        sessionId = UnicodeAttribute(null=True)
        model = UnicodeAttribute(null=True)
        message = UnicodeAttribute(null=True)
        history = ListAttribute(of=HistoryEntry, null=True)
        createdAt = UnicodeAttribute(null=True)
        status = UnicodeAttribute(null=True)
        answer = UnicodeAttribute(null=True)
        error = UnicodeAttribute(null=True)
        finishedAt = UnicodeAttribute(null=True)
        inputTokens = NumberAttribute(null=True)
        outputTokens = NumberAttribute(null=True)
        expiresAt = TTLAttribute(null=True)

    models = BoundModels(session=ChatSession, event=ChatEvent, conversation=Conversation,
                         turn=TurnInput, ending=TurnEnding, turn_item=TurnItem)
    _share_one_client(models)
    return models


def _share_one_client(models: BoundModels) -> None:
    """Make every model use one botocore client: PynamoDB gives each model class its own,
    and each costs a botocore session and the loading of DynamoDB's service description."""
    classes = (models.session, models.event, models.conversation, models.turn, models.ending,
               models.turn_item)
    shared = classes[0]._get_connection().connection
    for model in classes[1:]:
        table_connection = model._get_connection()
        try:
            shared.add_meta_table(table_connection.get_meta_table())
        except ValueError:
            pass  # another model of the same table registered it already
        table_connection.connection = shared
