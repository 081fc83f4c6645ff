"""The openai provider against a real HTTP server on a loopback port: streaming, retries, faults."""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Iterator

import pytest

from chalicelib.errors import ProviderError
from chalicelib.providers.base import (
    Message,
    ModelRequest,
    StreamItem,
    TextChunk,
    ThinkingChunk,
    ToolCall,
    ToolSpec,
    Usage,
)
from chalicelib.providers.openai import OpenAIProvider
from tests.openai_server import (
    DONE,
    FakeOpenAIServer,
    Hang,
    Status,
    Stream,
    chunk,
    cut,
    sse,
    text_answer,
    usage_chunk,
)

CALCULATOR = ToolSpec("calculator", "Evaluate arithmetic.",
                      {"type": "object", "properties": {"expression": {"type": "string"}}})
REQUEST = ModelRequest("test-model", (Message("user", "what is 17*23?"),), (CALCULATOR,))

TOOL_CALL_STREAM = [
    sse(chunk({"role": "assistant", "content": None})),
    sse(chunk({"reasoning_content": "The user asks "})),
    sse(chunk({"reasoning_content": "for arithmetic."})),
    sse(chunk({"content": "Let me "})),
    sse(chunk({"content": "calculate."})),
    sse(chunk({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                               "function": {"name": "calculator", "arguments": ""}}]})),
    sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"expre"}}]})),
    sse(chunk({"tool_calls": [{"index": 1, "id": "call_def", "type": "function",
                               "function": {"name": "clock", "arguments": "{}"}}]})),
    sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "ssion\": \"17"}}]})),
    sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "*23\"}"}}]})),
    sse(chunk({}, "tool_calls")),
    sse(usage_chunk(42, 17)),
    DONE,
]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


def provider_for(server: FakeOpenAIServer, **options: object) -> OpenAIProvider:
    options = {"api_key": "sk-test-key", "read_timeout": 5.0, "sleep": lambda _: None, **options}
    return OpenAIProvider(server.url, **options)  # type: ignore[arg-type]


def collect(provider: OpenAIProvider, request: ModelRequest = REQUEST) -> list[StreamItem]:
    stream = provider.stream(request)
    try:
        return list(stream)
    finally:
        stream.close()


def collect_until_error(provider: OpenAIProvider) -> tuple[list[StreamItem], ProviderError]:
    items: list[StreamItem] = []
    with pytest.raises(ProviderError) as caught:
        for item in provider.stream(REQUEST):
            items.append(item)
    return items, caught.value


def text_of(items: list[StreamItem]) -> str:
    return "".join(item.text for item in items if isinstance(item, TextChunk))


def test_streams_reasoning_text_tool_calls_and_usage_from_chunked_sse(server) -> None:
    # Pieces of 7 bytes: events, lines and UTF-8 characters all span network reads.
    server.script(Stream(cut(b"".join(TOOL_CALL_STREAM), 7)))
    items = collect(provider_for(server))
    assert "".join(i.text for i in items if isinstance(i, ThinkingChunk)) == (
        "The user asks for arithmetic.")
    assert text_of(items) == "Let me calculate."
    assert items[-3:] == [ToolCall("call_abc", "calculator", {"expression": "17*23"}),
                          ToolCall("call_def", "clock", {}),
                          Usage(42, 17)]


def test_text_in_small_flushed_pieces_round_trips_exactly(server) -> None:
    pieces = ["При", "вет", ", 世", "界 ", "👋🏽", " e\u0301", "\n\n**done**"]
    server.script(Stream(text_answer(pieces, usage=(9, 7)), pause=0.002))
    items = collect(provider_for(server))
    assert text_of(items) == "".join(pieces)
    assert [i for i in items if isinstance(i, TextChunk)] == [TextChunk(p) for p in pieces]
    assert items[-1] == Usage(9, 7)


def test_ollama_style_reasoning_field_becomes_thinking(server) -> None:
    server.script(Stream([sse(chunk({"reasoning": "Hmm."})), *text_answer(["Hi"])]))
    assert collect(provider_for(server))[0] == ThinkingChunk("Hmm.")


def test_request_carries_stream_options_messages_and_tools(server) -> None:
    server.script(Stream(text_answer(["ok"])))
    call = ToolCall("call_1", "calculator", {"expression": "2×3"})
    request = ModelRequest("test-model", (
        Message("user", "earlier question"),
        Message("assistant", "earlier answer"),
        Message("user", "what is 2×3?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "6", tool_call_id="call_1"),
    ), (CALCULATOR,))
    collect(provider_for(server), request)
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-test-key"
    assert (sent.body["model"], sent.body["stream"], sent.body["stream_options"]) == (
        "test-model", True, {"include_usage": True})
    assert sent.body["messages"] == [
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "what is 2×3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "calculator", "arguments": '{"expression": "2×3"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "6"},
    ]
    assert sent.body["tools"] == [{"type": "function", "function": {
        "name": "calculator", "description": "Evaluate arithmetic.",
        "parameters": CALCULATOR.input_schema}}]
    assert json.loads(sent.body["messages"][3]["tool_calls"][0]["function"]["arguments"]) == call.input


def test_without_a_key_or_tools_neither_is_sent(server) -> None:
    server.script(Stream(text_answer(["ok"])))
    collect(provider_for(server, api_key=None), ModelRequest("m", (Message("user", "hi"),)))
    sent = server.requests[0]
    assert "Authorization" not in sent.headers
    assert "tools" not in sent.body


def test_429_then_success_retries_once_after_retry_after(server) -> None:
    server.script(Status(429, '{"error": {"message": "Rate limit reached"}}', {"Retry-After": "0.25"}),
                  Stream(text_answer(["fine"])))
    pauses: list[float] = []
    items = collect(provider_for(server, sleep=pauses.append))
    assert len(server.requests) == 2
    assert pauses == [0.25]
    assert text_of(items) == "fine"


def test_5xx_retries_are_bounded_with_exponential_backoff_then_error(server) -> None:
    server.script(Status(503, '{"error": {"message": "Service overloaded"}}'))
    pauses: list[float] = []
    provider = provider_for(server, sleep=pauses.append, max_retries=2, backoff=1.0,
                            jitter=lambda: 1.0)
    items, error = collect_until_error(provider)
    assert (items, len(server.requests), pauses) == ([], 3, [1.0, 2.0])
    assert "HTTP 503" in str(error) and "Service overloaded" in str(error)


def test_a_long_retry_after_is_not_waited_for(server) -> None:
    server.script(Status(429, "", {"Retry-After": "3600"}))
    _, error = collect_until_error(provider_for(server))
    assert len(server.requests) == 1
    assert "HTTP 429" in str(error)


def test_401_says_the_credentials_were_rejected_without_the_key(server) -> None:
    server.script(Status(401, '{"error": {"message": "Incorrect API key provided: sk-test-key"}}'))
    _, error = collect_until_error(provider_for(server))
    assert str(error) == "The model provider rejected the credentials (HTTP 401)."
    assert len(server.requests) == 1


def test_other_4xx_shows_the_servers_message_shortened(server) -> None:
    server.script(Status(404, json.dumps({"error": {"message": "The model `nope` does not exist "
                                                               + "x" * 1000}})))
    _, error = collect_until_error(provider_for(server))
    assert str(error).startswith(
        "The model provider refused the request (HTTP 404): The model `nope` does not exist")
    assert len(str(error)) < 400
    assert len(server.requests) == 1


def test_connection_dropped_midway_keeps_partial_text_then_errors(server) -> None:
    pieces = text_answer(["Hello", ", wor", "ld"])[:3] + [b'data: {"choices": [{"del']
    server.script(Stream(pieces, drop=True))
    items, error = collect_until_error(provider_for(server))
    assert text_of(items) == "Hello, wor"
    assert "broke off" in str(error)


def test_malformed_data_line_is_an_error_after_the_good_text(server) -> None:
    server.script(Stream([sse(chunk({"content": "Good"})), b"data: {\"choices\": [{\"delta\n\n",
                          DONE]))
    items, error = collect_until_error(provider_for(server))
    assert text_of(items) == "Good"
    assert "not valid chat-completion JSON" in str(error)


def test_error_reported_inside_the_stream_is_an_error(server) -> None:
    server.script(Stream([sse(chunk({"content": "Partial"})),
                          sse({"error": {"message": "The server had an error", "code": 500}})]))
    items, error = collect_until_error(provider_for(server))
    assert text_of(items) == "Partial"
    assert "The server had an error" in str(error)


def test_stream_ending_without_done_or_finish_is_an_error(server) -> None:
    server.script(Stream([sse(chunk({"content": "Cut"}))]))
    items, error = collect_until_error(provider_for(server))
    assert text_of(items) == "Cut"
    assert "broke off" in str(error)


def test_invalid_tool_call_arguments_are_a_readable_error(server) -> None:
    server.script(Stream([
        sse(chunk({"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                   "function": {"name": "calculator", "arguments": "{\"expr"}}]})),
        sse(chunk({}, "tool_calls")), DONE]))
    _, error = collect_until_error(provider_for(server))
    assert str(error) == ("The model called the calculator tool with arguments that are not "
                          "a JSON object.")


def test_a_server_that_never_answers_times_out(server) -> None:
    server.script(Hang())
    started = time.monotonic()
    _, error = collect_until_error(provider_for(server, read_timeout=0.5))
    assert "did not answer in time" in str(error)
    assert time.monotonic() - started < 10  # it stopped; not a timing assertion


def test_a_stream_that_stalls_midway_times_out(server) -> None:
    server.script(Stream([sse(chunk({"content": "Hi"})), DONE], pause=30))
    items, error = collect_until_error(provider_for(server, read_timeout=0.3))
    assert text_of(items) == "Hi"
    assert "did not answer in time" in str(error)


def test_an_unreachable_server_is_a_readable_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = OpenAIProvider(f"http://user:pw@127.0.0.1:{port}/v1", connect_timeout=2)
    with pytest.raises(ProviderError) as caught:
        list(provider.stream(REQUEST))
    assert str(caught.value) == f"The model provider could not be reached at http://127.0.0.1:{port}/v1."


def iterate_in_thread(stream) -> tuple[threading.Thread, list, list, threading.Event]:
    items: list[StreamItem] = []
    errors: list[BaseException] = []
    first = threading.Event()

    def read() -> None:
        try:
            for item in stream:
                items.append(item)
                first.set()
        except BaseException as error:  # reported to the test, never left unhandled
            errors.append(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, items, errors, first


def test_close_from_another_thread_unblocks_a_stalled_read_and_closes_the_connection(
        server) -> None:
    # After the first piece the server goes quiet, so the reader is blocked in recv().
    server.script(Stream([sse(chunk({"content": "first"})), sse(chunk({"content": "never"}))],
                         pause=30))
    stream = provider_for(server, read_timeout=60.0).stream(REQUEST)
    thread, items, errors, first = iterate_in_thread(stream)
    assert first.wait(5)
    stream.close()
    thread.join(5)
    assert not thread.is_alive()
    assert server.disconnected.wait(5)
    assert (errors, text_of(items)) == ([], "first")


def test_close_during_a_retry_pause_ends_without_another_request(server) -> None:
    server.script(Status(429, "", {"Retry-After": "5"}), Stream(text_answer(["late"])))
    # The default pause waits on the stream, so close() cuts it short.
    stream = OpenAIProvider(server.url, read_timeout=5.0).stream(REQUEST)
    thread, items, errors, _ = iterate_in_thread(stream)
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    thread.join(3)
    assert not thread.is_alive()
    assert (items, errors, len(server.requests)) == ([], [], 1)


def test_a_line_without_end_beyond_the_limit_is_a_malformed_stream_error(server) -> None:
    server.script(Stream([sse(chunk({"content": "Hi"})), b"data: " + b"x" * 4_100_000]))
    items, error = collect_until_error(provider_for(server))
    assert text_of(items) == "Hi"
    assert "not valid chat-completion JSON" in str(error)
