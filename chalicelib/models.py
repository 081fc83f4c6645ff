"""PynamoDB models of the two tables, bound to table names and endpoint from settings.

The classes are built by `bind_models` rather than declared at import time because
the table names, region and endpoint differ per stage and per test.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Type

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.settings import Settings

OWNER_INDEX = "byOwner"
RUNNING_INDEX = "runningByLease"
# Running sessions by owner, for the running-sessions cap: `runOwner` holds the owner id
# while a session runs and is removed when it ends (sparse, like the running index).
RUNNING_BY_OWNER_INDEX = "runningByOwner"
# The value of `runState` while a session runs; the attribute is removed when it ends,
# so the running index holds only running sessions (a sparse index).
RUN_STATE_RUNNING = "running"

# What the owner index copies besides its keys: enough for a list row, not the input.
LIST_ATTRIBUTES = [
    "status",
    "model",
    "title",
    "conversationId",
    "updatedAt",
    "finishedAt",
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "lastSeq",
    "error",
    "expiresAt",
]


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


@dataclass(frozen=True)
class BoundModels:
    """The model classes for one set of settings."""

    session: Type[Model]
    event: Type[Model]


def bind_models(settings: Settings) -> BoundModels:
    """Return session and event model classes bound to the settings' tables and endpoint."""

    def table_meta(table_name: str) -> type:
        return type("Meta", (), {
            "table_name": table_name,
            "region": settings.region,
            "host": settings.dynamodb_endpoint,
            "billing_mode": "PAY_PER_REQUEST",
            # Runs write from a pool of threads; each needs its own HTTP connection.
            "max_pool_connections": max(10, settings.local_workers * 2),
        })

    class OwnerIndex(GlobalSecondaryIndex):
        class Meta:
            index_name = OWNER_INDEX
            projection = IncludeProjection(LIST_ATTRIBUTES)

        ownerId = UnicodeAttribute(hash_key=True)
        createdAt = UnicodeAttribute(range_key=True)

    class RunningIndex(GlobalSecondaryIndex):
        class Meta:
            index_name = RUNNING_INDEX
            projection = KeysOnlyProjection()

        runState = UnicodeAttribute(hash_key=True)
        leaseUntil = NumberAttribute(range_key=True)

    class RunningByOwnerIndex(GlobalSecondaryIndex):
        class Meta:
            index_name = RUNNING_BY_OWNER_INDEX
            projection = KeysOnlyProjection()

        runOwner = UnicodeAttribute(hash_key=True)
        createdAt = UnicodeAttribute(range_key=True)

    class ChatSession(Model):
        """A chat run: its input, status, lease, token counts and final answer."""

        Meta = table_meta(settings.sessions_table)

        id = UnicodeAttribute(hash_key=True)
        ownerId = UnicodeAttribute()
        status = UnicodeAttribute()
        model = UnicodeAttribute()
        title = UnicodeAttribute(null=True)
        conversationId = UnicodeAttribute(null=True)
        message = UnicodeAttribute()
        history = Utf8JSONAttribute(null=True)
        inputTokens = NumberAttribute(default=0)
        outputTokens = NumberAttribute(default=0)
        totalTokens = NumberAttribute(default=0)
        lastSeq = NumberAttribute(default=0)
        error = UnicodeAttribute(null=True)
        answer = UnicodeAttribute(null=True)
        createdAt = UnicodeAttribute()
        updatedAt = UnicodeAttribute()
        finishedAt = UnicodeAttribute(null=True)
        runState = UnicodeAttribute(null=True)
        runOwner = UnicodeAttribute(null=True)
        attemptId = UnicodeAttribute(null=True)
        leaseUntil = NumberAttribute(null=True)
        cancelRequested = BooleanAttribute(null=True)
        idempotencyKey = UnicodeAttribute(null=True)
        requestHash = UnicodeAttribute(null=True)
        expiresAt = TTLAttribute(null=True)

        owner_index = OwnerIndex()
        running_index = RunningIndex()
        running_by_owner_index = RunningByOwnerIndex()

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

    return BoundModels(session=ChatSession, event=ChatEvent)

