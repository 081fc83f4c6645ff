"""Every documented limit, in every awkward character class: the run ends `done`, no item
passes DynamoDB's 400 KB, and the session row, which every flush updates, stays under 4 KB."""
from __future__ import annotations

import json

import pytest

from chalicelib.settings import Settings
from tests.test_deploy_requests import item_bytes

JSON = {"Content-Type": "application/json"}
DIRECTIVE = " [demo rate=100000 tokens=40]"
ITEM_LIMIT = 400 * 1024
ROW_LIMIT = 4 * 1024
# What a character class costs: escaped in JSON (\n 2 bytes, \x01 6, " and \\ 2), or 2-4 bytes
# in UTF-8, or several code points to one symbol.
CHARACTER_CLASSES = {
    "ascii": "a",
    "newlines": "a\n",
    "control": "\x01",
    "quotes-and-backslashes": '"\\',
    "cyrillic": "ж",
    "cjk": "字",
    "emoji": "😀",
    "emoji-zwj-sequence": "👩🏽\u200d💻",
    "combining-marks": "e\u0301\u0302",
    "right-to-left": "\u05e9\u200f",
}


def at_most(unit: str, chars: int) -> str:
    """Return `unit` repeated to exactly `chars` code points (the last one cut if need be)."""
    return (unit * (chars // len(unit) + 1))[:chars]


def at_most_bytes(unit: str, max_bytes: int) -> str:
    """Return `unit` repeated to as many code points as fit in max_bytes of UTF-8."""
    text = unit * (max_bytes // len(unit.encode("utf-8")))
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    return text


def stored_items():
    """Yield (table, item) for every item moto holds, in DynamoDB's JSON."""
    from moto.dynamodb.models import dynamodb_backends

    for table in dynamodb_backends["123456789012"]["us-east-1"].tables.values():
        for item in table.all_items():
            yield table.name, item.to_json()["Attributes"]


@pytest.mark.parametrize("unit", CHARACTER_CLASSES.values(), ids=CHARACTER_CLASSES.keys())
def test_input_at_every_limit_ends_done_and_every_item_fits(client, unit: str) -> None:
    limits = Settings()
    per_entry = limits.max_history_bytes // limits.max_history_items
    body = {
        "message": at_most(unit, limits.max_message_chars - len(DIRECTIVE)) + DIRECTIVE,
        "title": at_most(unit, limits.max_title_chars),
        "history": [{"role": "user" if index % 2 == 0 else "assistant",
                     "content": at_most_bytes(unit, per_entry)}
                    for index in range(limits.max_history_items)],
    }
    encoded = json.dumps(body).encode("utf-8")
    assert len(encoded) <= limits.max_body_bytes
    started = client.http.post("/api/chat/session", headers=JSON, body=encoded)
    assert started.status_code == 202, started.body
    session_id = started.json_body["sessionId"]
    session = client.http.get(f"/api/chat/session/{session_id}").json_body
    assert session["status"] == "done", session
    # The demo model quotes the message: the answer is at least as long, and kept whole.
    assert body["message"].split("\n")[0][:100] in session["answer"]

    follow_up = client.http.post("/api/chat/session", headers=JSON, body=json.dumps(
        {"message": at_most(unit, 1000) + DIRECTIVE,
         "conversationId": started.json_body["conversationId"]}))
    assert follow_up.status_code == 202, follow_up.body
    assert client.http.get(
        f"/api/chat/session/{follow_up.json_body['sessionId']}").json_body["status"] == "done"

    sizes = [(table, item_bytes(item)) for table, item in stored_items()]
    assert max(size for _, size in sizes) < ITEM_LIMIT
    assert max(size for table, size in sizes if table == "chatSessions") < ROW_LIMIT


def test_the_session_row_stays_under_4_kb_with_every_field_at_its_limit(aws, settings) -> None:
    """The longest owner, title, model, idempotency key and error the API lets through."""
    from chalicelib.auth import MAX_OWNER_CHARS
    from chalicelib.records import ERROR
    from chalicelib.store import Fence, SessionStore
    from chalicelib.validation import MAX_IDEMPOTENCY_KEY_CHARS, MAX_MODEL_CHARS
    from tests.builders import ending, new_session

    store = SessionStore(settings)
    store.create_tables()
    owner = "o" * MAX_OWNER_CHARS
    store.create(new_session(
        "s1", owner=owner, title="😀" * settings.max_title_chars,
        idempotency_key="k" * MAX_IDEMPOTENCY_KEY_CHARS, request_hash="f" * 64))
    store.models.session("s1").update(actions=[
        store.models.session.model.set("bedrock:" + "m" * (MAX_MODEL_CHARS - 8))])
    store.claim_lease("s1", "a" * 32)
    running = [item_bytes(item) for table, item in stored_items() if table == "chatSessions"]
    failed = ending(1, ERROR, answer="")
    store.finish(store.get("s1"), Fence("a" * 32), [], type(failed)(
        ERROR, failed.terminal_event, error="ошибка " * 1_000))
    ended = [item_bytes(item) for table, item in stored_items() if table == "chatSessions"]
    assert max(running + ended) < ROW_LIMIT, (running, ended)
