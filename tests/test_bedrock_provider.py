"""The bedrock provider: native message format, ConverseStream events, retries, errors, close.

Stubber cannot represent converse_stream's event stream, so event tests inject a client whose
events are shaped exactly as the Bedrock API documents them; Stubber covers the call-time
errors, and one real boto3 client reads a real binary event stream from a loopback server.
"""
from __future__ import annotations

import binascii
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Sequence
from urllib.parse import unquote

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber

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
from chalicelib.providers.bedrock import BedrockProvider, converse_arguments

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CALCULATOR = ToolSpec("calculator", "Evaluate arithmetic.",
                      {"type": "object", "properties": {"expression": {"type": "string"}}})
REQUEST = ModelRequest(MODEL, (Message("user", "what is 17*23?"),), (CALCULATOR,))

TOOL_USE_EVENTS: list[dict[str, Any]] = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"delta": {"reasoningContent": {"text": "Arithmetic: "}},
                           "contentBlockIndex": 0}},
    {"contentBlockDelta": {"delta": {"reasoningContent": {"text": "use the tool."}},
                           "contentBlockIndex": 0}},
    {"contentBlockDelta": {"delta": {"reasoningContent": {"signature": "c2lnbmF0dXJl"}},
                           "contentBlockIndex": 0}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"contentBlockDelta": {"delta": {"text": "Let me "}, "contentBlockIndex": 1}},
    {"contentBlockDelta": {"delta": {"text": "calculate."}, "contentBlockIndex": 1}},
    {"contentBlockStop": {"contentBlockIndex": 1}},
    {"contentBlockStart": {"start": {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                                                 "name": "calculator"}},
                           "contentBlockIndex": 2}},
    {"contentBlockDelta": {"delta": {"toolUse": {"input": ""}}, "contentBlockIndex": 2}},
    {"contentBlockDelta": {"delta": {"toolUse": {"input": "{\"expres"}}, "contentBlockIndex": 2}},
    {"contentBlockDelta": {"delta": {"toolUse": {"input": "sion\": \"17*"}},
                           "contentBlockIndex": 2}},
    {"contentBlockDelta": {"delta": {"toolUse": {"input": "23\"}"}}, "contentBlockIndex": 2}},
    {"contentBlockStop": {"contentBlockIndex": 2}},
    {"messageStop": {"stopReason": "tool_use"}},
    {"metadata": {"usage": {"inputTokens": 410, "outputTokens": 58, "totalTokens": 468},
                  "metrics": {"latencyMs": 1322}}},
]
TEXT_EVENTS: list[dict[str, Any]] = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"delta": {"text": "17×23 = "}, "contentBlockIndex": 0}},
    {"contentBlockDelta": {"delta": {"text": "**391** 👍"}, "contentBlockIndex": 0}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"messageStop": {"stopReason": "end_turn"}},
    {"metadata": {"usage": {"inputTokens": 20, "outputTokens": 9, "totalTokens": 29},
                  "metrics": {"latencyMs": 400}}},
]


def client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ConverseStream")


THROTTLED = client_error("ThrottlingException", "Too many requests, please wait before trying "
                                                "again.", 429)


class FakeEventStream:
    """Iterates events as boto3's EventStream does (an Exception item is raised); records close."""

    def __init__(self, events: Sequence[dict[str, Any] | Exception]) -> None:
        self._events = events
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self._events:
            if isinstance(event, Exception):
                raise event
            yield event

    def close(self) -> None:
        self.closed = True


class FakeBedrockClient:
    """converse_stream plays one outcome per call: a ClientError to raise, or a list of events."""

    def __init__(self, *outcomes: Sequence[dict[str, Any] | Exception] | Exception) -> None:
        self._outcomes = list(outcomes)
        self.calls: list[dict[str, Any]] = []
        self.streams: list[FakeEventStream] = []

    def converse_stream(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        outcome = self._outcomes[min(len(self.calls), len(self._outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        self.streams.append(FakeEventStream(outcome))
        return {"ResponseMetadata": {"HTTPStatusCode": 200}, "stream": self.streams[-1]}


def collect(provider: BedrockProvider, request: ModelRequest = REQUEST) -> list[StreamItem]:
    stream = provider.stream(request)
    try:
        return list(stream)
    finally:
        stream.close()


def collect_until_error(provider: BedrockProvider) -> tuple[list[StreamItem], ProviderError]:
    items: list[StreamItem] = []
    with pytest.raises(ProviderError) as caught:
        for item in provider.stream(REQUEST):
            items.append(item)
    return items, caught.value


def no_sleep(_: float) -> None:
    pass


def test_history_and_tool_turns_use_the_native_format_with_alternating_roles() -> None:
    calls = (ToolCall("t1", "calculator", {"expression": "17*23"}), ToolCall("t2", "clock", {}))
    request = ModelRequest(MODEL, (
        Message("user", "hello"),
        Message("assistant", "hi, how can I help?"),
        Message("user", "what is 17*23, and the time?"),
        Message("assistant", "", tool_calls=calls),
        Message("tool", "391", tool_call_id="t1"),
        Message("tool", "2026-01-01T00:00:00Z", tool_call_id="t2"),
    ), (CALCULATOR,))
    arguments = converse_arguments(request)
    assert arguments["modelId"] == MODEL
    assert "system" not in arguments
    assert arguments["messages"] == [
        {"role": "user", "content": [{"text": "hello"}]},
        {"role": "assistant", "content": [{"text": "hi, how can I help?"}]},
        {"role": "user", "content": [{"text": "what is 17*23, and the time?"}]},
        {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "t1", "name": "calculator", "input": {"expression": "17*23"}}},
            {"toolUse": {"toolUseId": "t2", "name": "clock", "input": {}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "t1", "content": [{"text": "391"}]}},
            {"toolResult": {"toolUseId": "t2", "content": [{"text": "2026-01-01T00:00:00Z"}]}}]},
    ]
    assert arguments["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "calculator", "description": "Evaluate arithmetic.",
        "inputSchema": {"json": CALCULATOR.input_schema}}}]}


def test_adjacent_same_role_turns_are_merged_and_empty_ones_dropped() -> None:
    request = ModelRequest(MODEL, (Message("user", "one"), Message("user", "two"),
                                   Message("assistant", ""), Message("user", "three")))
    arguments = converse_arguments(request)
    assert arguments["messages"] == [
        {"role": "user", "content": [{"text": "one"}, {"text": "two"}, {"text": "three"}]}]
    assert "toolConfig" not in arguments


def test_events_become_thinking_text_tool_call_and_usage() -> None:
    client = FakeBedrockClient(TOOL_USE_EVENTS)
    items = collect(BedrockProvider(client))
    assert items == [
        ThinkingChunk("Arithmetic: "), ThinkingChunk("use the tool."),
        TextChunk("Let me "), TextChunk("calculate."),
        ToolCall("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "calculator", {"expression": "17*23"}),
        Usage(410, 58),
    ]
    assert client.calls == [converse_arguments(REQUEST)]
    assert client.streams[0].closed


def test_throttling_at_call_time_is_retried_then_succeeds() -> None:
    client = FakeBedrockClient(THROTTLED, TEXT_EVENTS)
    pauses: list[float] = []
    items = collect(BedrockProvider(client, sleep=pauses.append, backoff=1.0, jitter=lambda: 0.0))
    assert len(client.calls) == 2
    assert pauses == [0.5]
    assert "".join(i.text for i in items if isinstance(i, TextChunk)) == "17×23 = **391** 👍"
    assert items[-1] == Usage(20, 9)


def stubbed_client(*errors: tuple[str, str, int]) -> Any:
    client = boto3.client("bedrock-runtime", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    for code, message, status in errors:
        stubber.add_client_error("converse_stream", code, message, status)
    stubber.activate()
    return client


def test_throttling_exhausted_is_an_error_after_bounded_retries() -> None:
    client = stubbed_client(*[("ThrottlingException", "Too many requests", 429)] * 3)
    pauses: list[float] = []
    _, error = collect_until_error(BedrockProvider(client, max_retries=2, sleep=pauses.append))
    assert len(pauses) == 2
    assert str(error).startswith("The model provider is busy or failing (ThrottlingException, "
                                 "3 attempts): Too many requests.")


@pytest.mark.parametrize("code", ["AccessDeniedException", "UnrecognizedClientException"])
def test_rejected_credentials_are_named_without_awss_account_details(code: str) -> None:
    arn = "arn:aws:sts::123456789012:assumed-role/backchat/orchestrator"
    client = stubbed_client((code, f"User: {arn} is not authorized", 403))
    _, error = collect_until_error(BedrockProvider(client, sleep=no_sleep))
    assert str(error).startswith(f"The model provider rejected the credentials ({code})")
    assert "123456789012" not in str(error)


def test_validation_exception_shows_bedrocks_message() -> None:
    client = stubbed_client(("ValidationException", "The provided model identifier is invalid.", 400))
    _, error = collect_until_error(BedrockProvider(client, sleep=no_sleep))
    assert str(error) == ("The model provider refused the request (ValidationException): "
                          "The provided model identifier is invalid.")


@pytest.mark.parametrize("name", ["throttlingException", "modelStreamErrorException",
                                  "validationException", "internalServerException",
                                  "serviceUnavailableException"])
def test_exception_events_in_the_stream_are_errors_after_the_partial_text(name: str) -> None:
    client = FakeBedrockClient([*TEXT_EVENTS[:2], {name: {"message": "It broke."}}])
    items, error = collect_until_error(BedrockProvider(client, sleep=no_sleep))
    assert items == [TextChunk("17×23 = ")]
    assert str(error) == f"The model provider failed during the answer ({name}): It broke."
    assert len(client.calls) == 1


def test_exception_raised_by_the_event_stream_is_an_error() -> None:
    client = FakeBedrockClient([*TEXT_EVENTS[:2], client_error("modelStreamErrorException", "Boom")])
    _, error = collect_until_error(BedrockProvider(client, sleep=no_sleep))
    assert str(error) == ("The model provider failed during the answer "
                          "(modelStreamErrorException): Boom.")


def test_invalid_tool_input_is_a_readable_error() -> None:
    events = [*TOOL_USE_EVENTS[:11], TOOL_USE_EVENTS[13]]
    _, error = collect_until_error(BedrockProvider(FakeBedrockClient(events)))
    assert str(error) == "The model called the calculator tool with input that is not a JSON object."


def test_stream_that_ends_without_message_stop_is_an_error() -> None:
    _, error = collect_until_error(BedrockProvider(FakeBedrockClient(TEXT_EVENTS[:3])))
    assert "broke off" in str(error)


def test_close_closes_the_event_stream() -> None:
    client = FakeBedrockClient(TEXT_EVENTS)
    stream = BedrockProvider(client).stream(REQUEST)
    iterator = iter(stream)
    assert next(iterator) == TextChunk("17×23 = ")
    stream.close()
    assert client.streams[0].closed


# A real boto3 client reading a real event stream (the binary framing Bedrock sends).

def event_message(headers: dict[str, str], payload: dict[str, Any]) -> bytes:
    """Return one application/vnd.amazon.eventstream message."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode()))
        + value.encode() for name, value in headers.items())
    body = json.dumps(payload).encode("utf-8")
    prelude = struct.pack(">II", 16 + len(encoded) + len(body), len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + body
    return message + struct.pack(">I", binascii.crc32(message))


def wire_event(event: dict[str, Any]) -> bytes:
    (name, payload), = event.items()
    if name.endswith("Exception"):
        return event_message({":exception-type": name, ":content-type": "application/json",
                              ":message-type": "exception"}, payload)
    return event_message({":event-type": name, ":content-type": "application/json",
                          ":message-type": "event"}, {**payload, "p": "abcdefgh"})


class EventStreamServer:
    """Answers converse-stream on 127.0.0.1 with the given events, one HTTP chunk each.

    From event `stall_after` on it sends nothing until the client leaves; from `cut_after` on
    it drops the connection.
    """

    def __init__(self, events: Sequence[dict[str, Any]], stall_after: int | None = None,
                 cut_after: int | None = None) -> None:
        self.paths: list[str] = []
        self.disconnected = threading.Event()
        self.stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.amazon.eventstream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.close_connection = True
                for index, event in enumerate(events):
                    if index == cut_after:
                        return
                    if index == stall_after:
                        # Wait until the client goes away: a read returns nothing then.
                        self.connection.settimeout(10)
                        if self.rfile.read(1) == b"":
                            owner.disconnected.set()
                        return
                    data = wire_event(event)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True).start()

    def client(self, read_timeout: float = 10.0) -> Any:
        return boto3.client(
            "bedrock-runtime", region_name="us-east-1", aws_access_key_id="x",
            aws_secret_access_key="x",
            endpoint_url=f"http://127.0.0.1:{self._httpd.server_address[1]}",
            config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                          read_timeout=read_timeout),
        )

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def event_server():
    servers: list[EventStreamServer] = []

    def start(events: Sequence[dict[str, Any]], **faults: int) -> EventStreamServer:
        servers.append(EventStreamServer(events, **faults))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_real_client_reads_a_binary_event_stream(event_server) -> None:
    server = event_server(TOOL_USE_EVENTS)
    items = collect(BedrockProvider(server.client()))
    assert [unquote(path) for path in server.paths] == [f"/model/{MODEL}/converse-stream"]
    assert items[-2:] == [
        ToolCall("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "calculator", {"expression": "17*23"}),
        Usage(410, 58)]


def test_real_client_exception_event_is_an_error(event_server) -> None:
    server = event_server([*TEXT_EVENTS[:2], {"throttlingException": {"message": "Slow down."}}])
    items, error = collect_until_error(BedrockProvider(server.client(), sleep=no_sleep))
    assert items == [TextChunk("17×23 = ")]
    assert str(error) == "The model provider failed during the answer (throttlingException): Slow down."


def test_real_client_connection_dropped_midway_is_an_error_after_the_partial_text(
        event_server) -> None:
    server = event_server(TEXT_EVENTS, cut_after=2)
    items, error = collect_until_error(BedrockProvider(server.client()))
    assert items == [TextChunk("17×23 = ")]
    assert str(error) == "The connection to the model provider broke off in the middle of the answer."


def test_real_client_stalled_stream_times_out(event_server) -> None:
    server = event_server(TEXT_EVENTS, stall_after=2)
    items, error = collect_until_error(BedrockProvider(server.client(read_timeout=0.3)))
    assert items == [TextChunk("17×23 = ")]
    assert str(error) == "The model provider did not answer in time (Amazon Bedrock)."


def test_real_client_close_from_another_thread_unblocks_the_read(event_server) -> None:
    server = event_server(TEXT_EVENTS, stall_after=2)
    stream = BedrockProvider(server.client()).stream(REQUEST)
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
    assert first.wait(5)
    stream.close()
    thread.join(5)
    assert not thread.is_alive()
    assert server.disconnected.wait(5)
    assert (items, errors) == ([TextChunk("17×23 = ")], [])
