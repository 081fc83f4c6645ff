"""A real OpenAI-compatible HTTP server on a loopback port, scripted per request, for tests.

It streams the way real servers do: HTTP/1.1 chunked transfer encoding, one flush per piece.
"""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence, Union


@dataclass(frozen=True)
class Stream:
    """Answer 200 with these byte pieces, pausing between them; `drop` cuts the connection after."""

    pieces: Sequence[bytes]
    pause: float = 0.0
    drop: bool = False


@dataclass(frozen=True)
class Status:
    """Answer with an error status and body."""

    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer."""


Reply = Union[Stream, Status, Hang]


@dataclass(frozen=True)
class ReceivedRequest:
    """What the server was sent."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def sse(payload: Any) -> bytes:
    """Return one SSE event whose data is payload as JSON."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


DONE = b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    """Return a chat.completion.chunk with one choice, as OpenAI sends it with include_usage."""
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "test-model", "usage": None,
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None,
                         "finish_reason": finish_reason}]}


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """Return the usage-only final chunk (empty choices) that include_usage asks for."""
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "test-model", "choices": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def text_answer(pieces: Sequence[str], usage: tuple[int, int] = (12, 5)) -> list[bytes]:
    """Return the events of a plain streamed answer, text in the given pieces."""
    return [sse(chunk({"role": "assistant", "content": ""})),
            *(sse(chunk({"content": piece})) for piece in pieces),
            sse(chunk({}, "stop")), sse(usage_chunk(*usage)), DONE]


def cut(data: bytes, size: int) -> list[bytes]:
    """Return data in pieces of size bytes, so events (and UTF-8 characters) span reads."""
    return [data[start:start + size] for start in range(0, len(data), size)]


class FakeOpenAIServer:
    """Serves POST /v1/chat/completions on 127.0.0.1 from a script of replies, one per request."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        # Set when a streaming write finds the client gone.
        self.disconnected = threading.Event()
        # Set at stop(): hung or paused handlers give up.
        self.stopping = threading.Event()
        self._replies: list[Reply] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))

    @property
    def url(self) -> str:
        """The base URL to give the provider."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies; the last one repeats."""
        self._replies = list(replies)

    def start(self) -> FakeOpenAIServer:
        # A short poll interval keeps stop() (and so each test's teardown) quick.
        threading.Thread(target=self._httpd.serve_forever, args=(0.01,), name="fake-openai",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def reply_for(self, request: ReceivedRequest) -> Reply:
        self.requests.append(request)
        return self._replies[min(len(self.requests), len(self._replies)) - 1]


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            reply = server.reply_for(ReceivedRequest(self.path, dict(self.headers), body))
            if isinstance(reply, Hang):
                server.stopping.wait(30)
                self.close_connection = True
            elif isinstance(reply, Status):
                self._status(reply)
            else:
                self._stream(reply)

        def _status(self, reply: Status) -> None:
            data = reply.body.encode("utf-8")
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Stream) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            # One streamed answer per connection keeps the fault cases simple.
            self.close_connection = True
            try:
                for index, piece in enumerate(reply.pieces):
                    if index and reply.pause and self._client_gone(reply.pause):
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                if not reply.drop:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                server.disconnected.set()

        def _client_gone(self, seconds: float) -> bool:
            """Pause; return True early if the client closed the connection or the server stops."""
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0 and not server.stopping.is_set():
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                # A readable socket with nothing to read is one the client has closed.
                if readable and self._peek() == b"":
                    server.disconnected.set()
                    return True
            return server.stopping.is_set()

        def _peek(self) -> bytes:
            try:
                return self.connection.recv(1, socket.MSG_PEEK)
            except ConnectionResetError:
                return b""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test output stays readable

    return Handler
