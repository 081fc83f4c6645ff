"""The client and `backchat` with conversations kept by the server (DESIGN.md, Conversations)."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from backchat_client import ApiError, Client
from tests.e2e.test_client_cli import QUICK, json_lines, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(local_stack) -> Iterator[Client]:
    with Client(local_stack.api_url) as client:
        yield client


def thinking(events: list[dict[str, Any]]) -> str:
    return "".join(e.get("content", "") for e in events if e["eventType"] == "thinking")


def turn(api: Client, message: str, conversation_id: str | None = None,
         title: str | None = None) -> dict[str, Any]:
    """Start a turn, wait for its end, and return the 202 body."""
    started = api.start(message, conversation_id=conversation_id, title=title)
    api.answer(started["sessionId"])
    return started


def test_ask_begins_a_conversation_and_continue_adds_the_next_turn(
    local_stack, api: Client
) -> None:
    first = run_cli(local_stack.api_url, "ask", "--json", "--title", "Client turns",
                    f"first {QUICK}")
    second = run_cli(local_stack.api_url, "ask", "--json", "--continue", f"second {QUICK}")

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    first_id = json_lines(first.stdout)[0]["sessionId"]
    second_events = json_lines(second.stdout)
    conversation_id = api.session(first_id)["conversationId"]
    conversation = api.conversation(conversation_id)
    assert conversation["title"] == "Client turns"
    assert [t["sessionId"] for t in conversation["turns"]] == [first_id,
                                                              second_events[0]["sessionId"]]
    assert "history: 2 messages" in thinking(second_events)


def test_ask_conversation_adds_a_turn_to_that_conversation(local_stack, api: Client) -> None:
    conversation_id = turn(api, f"opening {QUICK}")["conversationId"]
    turn(api, f"elsewhere {QUICK}")

    result = run_cli(local_stack.api_url, "ask", "--conversation", conversation_id, f"more {QUICK}")

    assert result.returncode == 0, result.stderr
    assert [t["message"] for t in api.conversation(conversation_id)["turns"]] == [
        f"opening {QUICK}", f"more {QUICK}"]


def test_a_turn_while_another_runs_exits_4_with_the_conflict(local_stack, api: Client) -> None:
    running = api.start("long [demo tokens=2000 rate=50]")
    try:
        result = run_cli(local_stack.api_url, "ask", "--conversation", running["conversationId"],
                         f"too soon {QUICK}")
    finally:
        api.cancel(running["sessionId"])

    assert result.returncode == 4
    assert "(HTTP 409)" in result.stderr and "Traceback" not in result.stderr


def test_conversations_lists_the_most_recently_active_first(local_stack, api: Client) -> None:
    older = turn(api, f"older {QUICK}", title="Older")["conversationId"]
    newer = turn(api, f"newer {QUICK}", title="Newer")["conversationId"]

    as_json = run_cli(local_stack.api_url, "conversations", "--json", "--limit", "2")
    plain = run_cli(local_stack.api_url, "conversations", "--limit", "2")

    assert as_json.returncode == 0 and plain.returncode == 0
    listed = json_lines(as_json.stdout)
    assert [(c["id"], c["title"], c["turnCount"]) for c in listed] == [
        (newer, "Newer", 1), (older, "Older", 1)]
    rows = plain.stdout.splitlines()
    assert [row.split()[0] for row in rows] == [newer, older]
    assert rows[0].endswith("Newer") and " 1 turn " in rows[0]


def test_chat_runs_each_line_as_a_turn_of_one_conversation(local_stack, api: Client) -> None:
    result = run_cli(local_stack.api_url, "chat",
                     stdin=f"hello {QUICK}\n\nagain {QUICK}\n/exit\nnot sent\n")

    assert result.returncode == 0, result.stderr
    conversation_id = result.stderr.rsplit("backchat chat --conversation ", 1)[1].strip()
    turns = api.conversation(conversation_id)["turns"]
    assert [t["message"] for t in turns] == [f"hello {QUICK}", f"again {QUICK}"]
    assert result.stdout == "".join(t["answer"] + "\n" for t in turns)


def test_chat_goes_on_with_a_conversation(local_stack, api: Client) -> None:
    conversation_id = turn(api, f"before {QUICK}", title="Resumed")["conversationId"]

    result = run_cli(local_stack.api_url, "chat", "--conversation", conversation_id,
                     stdin=f"after {QUICK}\n")

    assert result.returncode == 0, result.stderr
    assert "'Resumed'" in result.stderr
    turns = api.conversation(conversation_id)["turns"]
    assert [t["message"] for t in turns] == [f"before {QUICK}", f"after {QUICK}"]
    assert result.stdout == turns[1]["answer"] + "\n"


def test_the_client_reads_every_page_of_conversations_and_turns(api: Client) -> None:
    conversation_id = turn(api, f"one {QUICK}")["conversationId"]
    for message in ("two", "three"):
        turn(api, f"{message} {QUICK}", conversation_id=conversation_id)

    listed = [c["id"] for c in api.conversations(page_size=1)]
    conversation = api.conversation(conversation_id)

    assert listed[0] == conversation_id and len(listed) == len(set(listed))
    assert [t["message"] for t in conversation["turns"]] == [
        f"one {QUICK}", f"two {QUICK}", f"three {QUICK}"]
    assert conversation["turnCount"] == 3


def test_a_conversation_can_be_renamed_and_deleted(api: Client) -> None:
    started = turn(api, f"short-lived {QUICK}")
    conversation_id = started["conversationId"]

    renamed = api.rename_conversation(conversation_id, "Renamed by the client")
    api.delete_conversation(conversation_id)

    assert renamed["title"] == "Renamed by the client"
    for read in (lambda: api.conversation(conversation_id),
                 lambda: api.session(started["sessionId"])):
        with pytest.raises(ApiError) as raised:
            read()
        assert raised.value.status == 404
