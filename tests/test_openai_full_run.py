"""Whole runs through the public API with `model: "openai:test-model"` against a loopback server."""
from __future__ import annotations

import json
import logging
from typing import Iterator

import pytest

from chalicelib.providers import ProviderRegistry
from chalicelib.providers.demo import DemoProvider
from chalicelib.providers.openai import OpenAIProvider
from tests.openai_server import (
    DONE,
    FakeOpenAIServer,
    Status,
    Stream,
    chunk,
    cut,
    sse,
    text_answer,
    usage_chunk,
)

JSON = {"Content-Type": "application/json"}
KEY = "sk-test-SECRET-123"

TOOL_STEP = [
    sse(chunk({"role": "assistant", "content": None})),
    sse(chunk({"reasoning_content": "I should use "})),
    sse(chunk({"reasoning_content": "the calculator."})),
    sse(chunk({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                               "function": {"name": "calculator", "arguments": ""}}]})),
    sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"expression\""}}]})),
    sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": \"17*2"}}]})),
    sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "3\"}"}}]})),
    sse(chunk({}, "tool_calls")),
    sse(usage_chunk(42, 17)),
    DONE,
]
ANSWER = ["17 × 23 ", "= **391**", ". Готово ✅"]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def openai_app(client, components, server, monkeypatch):
    """The app with an `openai` provider pointed at the loopback server."""
    registry = ProviderRegistry({
        "demo": DemoProvider(),
        "openai": OpenAIProvider(server.url, KEY, read_timeout=5.0, sleep=lambda _: None),
    })
    monkeypatch.setattr(components.orchestrator, "_providers", registry)
    monkeypatch.setattr(components.service, "_providers", registry)
    return client


def start(client, message: str, **fields: object) -> str:
    body = json.dumps({"message": message, "model": "openai:test-model", **fields})
    response = client.http.post("/api/chat/session", headers=JSON, body=body)
    assert response.status_code == 202, response.body
    return response.json_body["sessionId"]


def events_of(client, session_id: str) -> dict:
    return client.http.get(f"/api/chat/session/{session_id}/events?limit=1000").json_body


def test_tool_call_result_deltas_and_done_with_the_servers_usage(openai_app, server) -> None:
    server.script(Stream(cut(b"".join(TOOL_STEP), 11)), Stream(text_answer(ANSWER, (60, 9))))
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    session_id = start(openai_app, "what is 17*23?", history=history)

    page = events_of(openai_app, session_id)
    events = page["events"]
    kinds = [e["eventType"] for e in events]
    assert (page["status"], page["hasMore"], kinds[-1]) == ("done", False, "done")
    assert kinds.index("thinking") < kinds.index("tool_call") < kinds.index("tool_result") < (
        kinds.index("delta"))
    call = next(e for e in events if e["eventType"] == "tool_call")
    result = next(e for e in events if e["eventType"] == "tool_result")
    assert (call["toolName"], call["toolCallId"], call["toolInput"]) == (
        "calculator", "call_abc", {"expression": "17*23"})
    assert (result["toolCallId"], result["content"]) == ("call_abc", "391")
    assert "".join(e["content"] for e in events if e["eventType"] == "delta") == "".join(ANSWER)
    assert events[-1]["usage"] == {"inputTokens": 102, "outputTokens": 26, "totalTokens": 128}

    session = openai_app.http.get(f"/api/chat/session/{session_id}").json_body
    assert (session["status"], session["model"], session["answer"]) == (
        "done", "openai:test-model", "".join(ANSWER))

    first, second = (request.body for request in server.requests)
    assert first["model"] == second["model"] == "test-model"
    assert first["messages"] == [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "Hello!"},
                                 {"role": "user", "content": "what is 17*23?"}]
    assert second["messages"][3:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "calculator", "arguments": '{"expression": "17*23"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "391"},
    ]
    assert [tool["function"]["name"] for tool in first["tools"]] == ["calculator", "clock"]


def test_a_stream_that_breaks_midway_ends_error_with_the_partial_answer(openai_app, server) -> None:
    server.script(Stream(text_answer(["Partial ", "answer"])[:3], drop=True))
    session_id = start(openai_app, "tell me a story")
    session = openai_app.http.get(f"/api/chat/session/{session_id}").json_body
    events = events_of(openai_app, session_id)["events"]
    assert (session["status"], session["answer"]) == ("error", "Partial answer")
    assert events[-1]["eventType"] == "error"
    assert "broke off" in events[-1]["content"]


def test_rejected_credentials_end_the_run_with_no_key_in_events_or_logs(
        openai_app, server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(Status(401, json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}})))
    session_id = start(openai_app, "hello")
    page = events_of(openai_app, session_id)
    session = openai_app.http.get(f"/api/chat/session/{session_id}").json_body
    assert page["status"] == "error"
    assert page["events"][-1]["content"] == "The model provider rejected the credentials (HTTP 401)."
    assert session["error"] == page["events"][-1]["content"]
    assert KEY not in json.dumps([page, session])
    assert KEY not in caplog.text
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"
