"""Fill a local-stack data directory with stored sessions and events, as weeks of use leave it.

`python -m bench.seed_data DIR --events 1000000 [--events-per-session 50] [--owner local]`

The tables are created by the app's own code (`SessionStore.create_tables`, on an in-process
embedded DynamoDB that keeps its data in DIR), so their schema is the one the stack expects, and
TTL is enabled on them as infra/tables.yaml enables it. The items are then added straight to the
tables as stored partitions and written as one snapshot: a million events take seconds, not the
hours a million API writes would. DIR must not be in use by a running stack.

What the items hold is decided by `session_item`, `conversation_items` and `event_items` below
(the current layout: one small row per run, its events by seq, and per conversation its row and
each turn's input and ending); they are the one place to change when the tables change. Each
session is a one-turn conversation. Sessions are spread over the retention period up to now,
so none has expired yet.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from moto import mock_aws

from chalicelib.settings import Settings
from chalicelib.store import SessionStore
from scripts.dynamodb_storage import DurableStorage
from scripts.local_stack import FAKE_AWS_CREDENTIALS, stage_environment
from scripts.migrate_local import migrate

TTL_ATTRIBUTE = "expiresAt"
WORDS = ("the stream keeps going while the tab is closed and the answer arrives in order "
         "with every event persisted so a reload resumes where it stopped").split()

Image = dict[str, Any]


@dataclass(frozen=True)
class Seeded:
    """What a data directory holds after seeding."""

    sessions: int
    events: int
    # Sessions with at least `events_per_session` events, for reading a full page.
    session_ids: list[str]


def session_item(session_id: str, conversation_id: str, owner: str, created_ms: int,
                 events: int, retention_days: int, rng: random.Random) -> Image:
    """Return a finished session's row, as SessionStore writes it."""
    created = _iso(created_ms)
    finished = _iso(created_ms + events * 40)
    return {
        "id": {"S": session_id}, "ownerId": {"S": owner}, "status": {"S": "done"},
        "model": {"S": "demo"}, "title": {"S": f"conversation {session_id[:8]}"},
        "conversationId": {"S": conversation_id},
        "inputTokens": {"N": str(rng.randrange(5, 40))}, "outputTokens": {"N": str(events * 6)},
        "lastSeq": {"N": str(events)}, "createdAt": {"S": created}, "updatedAt": {"S": finished},
        "finishedAt": {"S": finished}, "attemptId": {"S": uuid.UUID(int=rng.getrandbits(128)).hex},
        "leaseUntil": {"N": str(created_ms + events * 40 + 30_000)},
        TTL_ATTRIBUTE: {"N": str(created_ms // 1000 + retention_days * 86_400)},
    }


def conversation_items(session_id: str, conversation_id: str, owner: str, created_ms: int,
                       events: int, retention_days: int, rng: random.Random) -> Iterator[Image]:
    """Yield a one-turn conversation's items: its row, the turn's input and its ending."""
    created = _iso(created_ms)
    finished = _iso(created_ms + events * 40)
    message = " ".join(rng.choices(WORDS, k=rng.randrange(5, 30)))
    answer = " ".join(rng.choices(WORDS, k=events * 6))[:4000]
    expires = {"N": str(created_ms // 1000 + retention_days * 86_400)}
    turn = f"turn#{created}#{session_id}"
    yield {"conversationId": {"S": conversation_id}, "item": {"S": "conversation"},
           "ownerId": {"S": owner}, "listOwner": {"S": owner}, "title": {"S": message[:60]},
           "createdAt": {"S": created}, "updatedAt": {"S": finished}, "turnCount": {"N": "1"},
           "lastSessionId": {"S": session_id}, "lastStatus": {"S": "done"},
           TTL_ATTRIBUTE: expires}
    yield {"conversationId": {"S": conversation_id}, "item": {"S": turn},
           "sessionId": {"S": session_id}, "model": {"S": "demo"}, "message": {"S": message},
           "createdAt": {"S": created}, TTL_ATTRIBUTE: expires}
    yield {"conversationId": {"S": conversation_id}, "item": {"S": turn + "#end"},
           "sessionId": {"S": session_id}, "status": {"S": "done"}, "answer": {"S": answer},
           "finishedAt": {"S": finished}, "inputTokens": {"N": "20"},
           "outputTokens": {"N": str(events * 6)}, TTL_ATTRIBUTE: expires}


def event_items(session_id: str, created_ms: int, events: int, retention_days: int,
                rng: random.Random) -> Iterator[Image]:
    """Yield a finished run's events: thinking, a tool call and its result, deltas, done."""
    expires = {"N": str(created_ms // 1000 + retention_days * 86_400)}
    for seq in range(1, events + 1):
        item: Image = {"sessionId": {"S": session_id}, "seq": {"N": str(seq)},
                       "createdAt": {"S": _iso(created_ms + seq * 40)}, TTL_ATTRIBUTE: expires}
        if seq == events:
            item["eventType"] = {"S": "done"}
            item["usage"] = {"M": {"inputTokens": {"N": "20"}, "outputTokens": {"N": "300"},
                                   "totalTokens": {"N": "320"}}}
        elif seq == 1:
            item["eventType"] = {"S": "thinking"}
            item["content"] = {"S": "The user asks for arithmetic; use the calculator."}
        elif seq == 2:
            item.update(eventType={"S": "tool_call"}, toolName={"S": "calculator"},
                        toolCallId={"S": f"call-{session_id[:8]}"},
                        toolInput={"S": json.dumps({"expression": "17*23"})})
        elif seq == 3:
            item.update(eventType={"S": "tool_result"}, toolCallId={"S": f"call-{session_id[:8]}"},
                        content={"S": "391"})
        else:
            item["eventType"] = {"S": "delta"}
            item["content"] = {"S": " ".join(rng.choices(WORDS, k=rng.randrange(4, 20)))}
        yield item


def seed(directory: Path, events: int, events_per_session: int = 50, owner: str = "local",
         seed_value: int = 13) -> Seeded:
    """Create the tables in directory and add `events` events over events/per-session sessions."""
    rng = random.Random(seed_value)
    # The local stage's settings (table names, retention), talking to the in-process moto.
    env = {**os.environ, **FAKE_AWS_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("DDB_ENDPOINT", None)
    settings = Settings.from_env(stage_environment(env, ()))
    sessions = max(1, -(-events // events_per_session)) if events else 0
    now_ms = int(time.time() * 1000)
    span_ms = (settings.retention_days - 1) * 86_400_000
    plan = sorted((now_ms - rng.randrange(span_ms), _new_id(rng), _new_id(rng))
                  for _ in range(sessions))
    counts = [min(events_per_session, events - index * events_per_session)
              for index in range(sessions)]
    with mock_aws():
        storage = DurableStorage.open(directory)
        try:
            store = SessionStore(settings)
            store.create_tables()  # with TTL on expiresAt, as infra/tables.yaml has it
            # A stack has run on these tables: nothing of an earlier version to migrate.
            migrate(store.models, lambda: _new_id(rng))
            days = settings.retention_days
            storage.import_items(settings.sessions_table, (
                session_item(session_id, conversation_id, owner, created, count, days, rng)
                for (created, session_id, conversation_id), count in zip(plan, counts)))
            storage.import_items(settings.conversations_table, (
                item for (created, session_id, conversation_id), count in zip(plan, counts)
                for item in conversation_items(session_id, conversation_id, owner, created,
                                               count, days, rng)))
            stored = storage.import_items(settings.events_table, (
                item for (created, session_id, _), count in zip(plan, counts)
                for item in event_items(session_id, created, count, days, rng)))
            storage.compact()
        finally:
            storage.close()
    full = [session_id for (_, session_id, _), count in zip(plan, counts)
            if count >= events_per_session]
    return Seeded(sessions, stored, full)


def _new_id(rng: random.Random) -> str:
    """Return an id shaped like the server's (22 URL-safe characters), from rng."""
    return base64.urlsafe_b64encode(rng.getrandbits(128).to_bytes(16, "big")).decode().rstrip("=")


def _iso(epoch_ms: int) -> str:
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--events-per-session", type=int, default=50)
    parser.add_argument("--owner", default="local")
    args = parser.parse_args(argv)
    began = time.monotonic()
    seeded = seed(args.directory.resolve(), args.events, args.events_per_session, args.owner)
    print(f"{args.directory}: {seeded.sessions} sessions, {seeded.events} events "
          f"in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
