"""Bring the local stack's kept data (BACKCHAT_DATA_DIR) from an earlier version's layout up to
this one, before the API starts.

Earlier versions kept a session's message, history and answer in its row, had no
conversations table, and indexed running sessions by a constant partition key. Each such row
becomes a turn of a conversation: sessions that shared a `conversationId` (the page sent its
own) become the turns of one conversation, oldest first; a session without one gets a
conversation of its own. The message moves to the turn's input item (the imported history only
on a conversation's first turn: later turns' history was the earlier turns again), the answer,
status and usage of an ended session to its ending item; the row keeps its small attributes.
The old indexes are dropped. Nothing is lost but the repeated histories.

A marker item (`#schema`) in the sessions table records that the data is in this layout, so
later starts skip the scan. Ids the server issues never contain `#`, so no session clashes
with it.
"""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any, Iterable

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model

from chalicelib.conversations import ConversationStore
from chalicelib.models import (
    CONVERSATION_ITEM,
    LEGACY_SESSION_INDEXES,
    BoundModels,
    ending_key,
    turn_key,
)
from chalicelib.records import RUNNING
from chalicelib.service import title_from
from chalicelib.store import lease_shard
from chalicelib.tables import drop_indexes

logger = logging.getLogger(__name__)

SCHEMA_MARKER = "#schema"
# More turns than any conversation of the earlier version could hold (its page sent them all).
MAX_TURNS = 100_000
SCHEMA_VERSION = 2
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class MigrationReport:
    """What a migration did, for the start-up message."""

    sessions: int
    conversations: int
    dropped_indexes: tuple[str, ...]

    def describe(self) -> str:
        return (f"moved {self.sessions} session(s) of an earlier version into "
                f"{self.conversations} conversation(s)"
                + (f"; dropped the old indexes {', '.join(self.dropped_indexes)}"
                   if self.dropped_indexes else ""))


def migrate(models: BoundModels, new_id: Any) -> MigrationReport | None:
    """Migrate the tables' data if an earlier version wrote it; None if there was nothing to do."""
    legacy_row = _legacy_row_model(models)
    try:
        legacy_row.get(SCHEMA_MARKER, consistent_read=True)
        return None
    except DoesNotExist:
        pass
    legacy = [item for item in _raw_sessions(models) if "message" in item or "runState" in item]
    conversations = _group(legacy, new_id)
    for conversation_id, rows in conversations.items():
        _write_conversation(models, legacy_row, conversation_id, rows)
    dropped = tuple(drop_indexes(models.session, LEGACY_SESSION_INDEXES))
    legacy_row(SCHEMA_MARKER, version=SCHEMA_VERSION).save()
    if not legacy and not dropped:
        return None
    return MigrationReport(len(legacy), len(conversations), dropped)


def _legacy_row_model(models: BoundModels) -> Any:
    """Return a model of the session table with what an earlier version kept in its rows
    (and the schema marker's version)."""

    class LegacyRow(Model):
        Meta = models.session.Meta
        id = UnicodeAttribute(hash_key=True)
        message = UnicodeAttribute(null=True)
        history = UnicodeAttribute(null=True)
        answer = UnicodeAttribute(null=True)
        runState = UnicodeAttribute(null=True)
        totalTokens = NumberAttribute(null=True)
        version = NumberAttribute(null=True)

    return LegacyRow


def _raw_sessions(models: BoundModels) -> Iterable[dict[str, Any]]:
    """Yield every session row as plain values (a scan: once, locally, at start)."""
    client = models.session._get_connection().connection.client
    paginator = client.get_paginator("scan")
    for page in paginator.paginate(TableName=models.session.Meta.table_name, ConsistentRead=True):
        for item in page["Items"]:
            yield {name: _plain(value) for name, value in item.items()}


def _plain(value: dict[str, Any]) -> Any:
    (kind, content), = value.items()
    if kind == "N":
        return int(content) if content.lstrip("-").isdigit() else float(content)
    if kind == "L":
        return [_plain(v) for v in content]
    if kind == "M":
        return {k: _plain(v) for k, v in content.items()}
    return content


def _group(rows: list[dict[str, Any]], new_id: Any) -> dict[str, list[dict[str, Any]]]:
    """Return the legacy sessions by the conversation they become, each oldest first."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        given = row.get("conversationId")
        key = given if isinstance(given, str) and _ID.fullmatch(given) else f"#{row['id']}"
        grouped[(row["ownerId"], key)].append(row)
    result: dict[str, list[dict[str, Any]]] = {}
    for (_, key), turns in grouped.items():
        conversation_id = new_id() if key.startswith("#") or key in result else key
        result[conversation_id] = sorted(turns, key=lambda row: row["createdAt"])
    return result


def _write_conversation(models: BoundModels, legacy_row: Any, conversation_id: str,
                        rows: list[dict[str, Any]]) -> None:
    """Write the rows' turns, then the conversation's row from every turn it now holds: a
    migration cut short and run again (some turns moved already) still counts them all."""
    conversations = ConversationStore(models)
    first_ever = not conversations.turns(conversation_id, 1).turns
    for index, row in enumerate(rows):
        _write_turn(models, legacy_row, conversation_id, row, imported=first_ever and index == 0)
    turns = conversations.turns(conversation_id, MAX_TURNS).turns
    sessions = {row["id"]: row for row in rows}
    first, last = turns[0].input, turns[-1].input
    first_row = models.session.get(first.session_id)
    expires = max((row["expiresAt"] for row in rows if "expiresAt" in row), default=None)
    running = [t.input.session_id for t in turns if t.ending is None]
    conversation = models.conversation(
        conversation_id, CONVERSATION_ITEM, ownerId=first_row.ownerId,
        listOwner=first_row.ownerId,
        title=(first_row.title or title_from(first.message) or "Chat")[:200],
        createdAt=first.created_at,
        updatedAt=sessions.get(last.session_id, {}).get("updatedAt") or last.created_at,
        turnCount=len(turns), lastSessionId=last.session_id,
        lastStatus=turns[-1].ending.status if turns[-1].ending else RUNNING,
        runningSessionId=running[-1] if running else None,
    )
    if expires is not None:
        conversation.expiresAt = _moment(expires)
    conversation.save()


def _write_turn(models: BoundModels, legacy_row: Any, conversation_id: str,
                row: dict[str, Any], imported: bool) -> None:
    expires = _moment(row["expiresAt"]) if "expiresAt" in row else None
    history = _history(row.get("history")) if imported else None
    turn = models.turn(conversation_id, turn_key(row["createdAt"], row["id"]),
                       sessionId=row["id"], model=row.get("model") or "demo",
                       message=row.get("message") or "", createdAt=row["createdAt"],
                       history=history or None)
    turn.expiresAt = expires
    turn.save()
    if row.get("status") != RUNNING:
        ending = models.ending(
            conversation_id, ending_key(row["createdAt"], row["id"]), sessionId=row["id"],
            status=row.get("status") or "error", answer=row.get("answer") or None,
            error=row.get("error"), finishedAt=row.get("finishedAt") or row["createdAt"],
            inputTokens=row.get("inputTokens", 0), outputTokens=row.get("outputTokens", 0))
        ending.expiresAt = expires
        ending.save()
    S, L = models.session, legacy_row
    actions = [S.conversationId.set(conversation_id), L.message.remove(), L.history.remove(),
               L.answer.remove(), L.runState.remove(), L.totalTokens.remove()]
    if row.get("status") == RUNNING:
        actions += [S.leaseShard.set(lease_shard(row["id"])),
                    S.reapAt.set(int(row.get("leaseUntil") or 0))]
    S(row["id"]).update(actions=actions)


def _history(raw: Any) -> list[dict[str, str]]:
    """Return an earlier version's history (JSON text, or a list) as role/content maps."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    if not isinstance(raw, list):
        return []
    return [{"role": entry["role"], "content": entry["content"]} for entry in raw
            if isinstance(entry, dict) and entry.get("role") in ("user", "assistant")
            and isinstance(entry.get("content"), str)]


def _moment(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(int(epoch_seconds), tz=timezone.utc)
