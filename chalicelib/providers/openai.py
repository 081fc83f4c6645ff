"""The `openai:` provider: OpenAI-compatible chat completions, streamed over HTTP with requests.

Works with OpenAI itself and the servers that copy its protocol (vLLM, Ollama, llama.cpp server,
LM Studio, LiteLLM). Needs urllib3 2.3 or later for `read1` and `shutdown`.
"""
from __future__ import annotations

import json
import logging
import random
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from chalicelib.errors import ProviderError
from chalicelib.providers.base import (
    Message,
    ModelRequest,
    Provider,
    ProviderStream,
    StreamItem,
    TextChunk,
    ThinkingChunk,
    ToolCall,
    ToolSpec,
    Usage,
)
from chalicelib.providers.sse import ServerSentEvent, SSEProtocolError, iter_events

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CONNECT_TIMEOUT = 10.0
# Reasoning models can think for a long while before their first token.
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_BACKOFF = 0.5
# A server that asks for a longer pause will not be ready while the user watches.
MAX_RETRY_AFTER = 10.0
MAX_DETAIL_CHARS = 300
READ_SIZE = 64 * 1024

CREDENTIALS_ERROR = "The model provider rejected the credentials (HTTP {status})."
BROKEN_STREAM_ERROR = "The connection to the model provider broke off in the middle of the answer."
MALFORMED_ERROR = "The model provider sent a stream event that is not valid chat-completion JSON."
# OpenAI echoes (masked) keys in some error texts; nothing shaped like one reaches the user.
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_*.\-]{6,}")


class OpenAIProvider(Provider):
    """Streams chat completions from `{base_url}/chat/completions`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        session: requests.Session | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._shown_url = _without_credentials(base_url.rstrip("/"))
        self._api_key = api_key or None
        self._session = session or requests.Session()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._retry = _RetryPolicy(max_retries, backoff, jitter)
        self._sleep = sleep

    def stream(self, request: ModelRequest) -> OpenAIStream:
        """Start one streamed chat completion for request."""
        logger.debug("openai: POST %s/chat/completions model=%s", self._shown_url, request.model)
        return OpenAIStream(self, chat_completion_body(request), self._sleep)

    def send(self, body: Mapping[str, Any]) -> requests.Response:
        """POST one streaming request and return the open response, whatever its status."""
        headers = {"Accept": "text/event-stream"}
        # Local servers take no key; sending an empty bearer token confuses some of them.
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            return self._session.post(
                self._url, json=body, headers=headers, stream=True,
                timeout=(self._connect_timeout, self._read_timeout),
            )
        except requests.ConnectTimeout:
            raise ProviderError(
                f"The model provider did not answer in time (no connection to {self._shown_url} "
                f"within {self._connect_timeout:g} s)."
            ) from None
        except requests.Timeout:
            raise ProviderError(self.timeout_message()) from None
        except requests.RequestException:
            raise ProviderError(
                f"The model provider could not be reached at {self._shown_url}."
            ) from None

    def retry_delay(self, attempt: int, response: requests.Response) -> float | None:
        """Return the pause before repeating a failed attempt, or None if it is not repeated."""
        return self._retry.delay(attempt, response.status_code, response.headers.get("Retry-After"))

    def timeout_message(self) -> str:
        """Return the error text for a response that stopped arriving."""
        return (f"The model provider did not answer in time "
                f"(nothing received for {self._read_timeout:g} s).")

    def redact(self, text: str) -> str:
        """Return text with the API key and anything shaped like a key masked."""
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return _KEY_LIKE.sub("[redacted]", text)


class OpenAIStream(ProviderStream):
    """One streamed chat completion; close() shuts the socket so a blocked read returns at once."""

    def __init__(self, provider: OpenAIProvider, body: Mapping[str, Any],
                 sleep: Callable[[float], object] | None = None) -> None:
        self._provider = provider
        self._body = body
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        # Waiting on the event lets close() cut a backoff pause short.
        self._sleep = sleep or self._closed.wait

    def __iter__(self) -> Iterator[StreamItem]:
        """Yield the answer's items; retry 429/5xx before the first one; end quietly once closed."""
        response = self._open()
        if response is None:
            return
        try:
            chunks = _received(response, self._provider.timeout_message())
            yield from _completion_items(iter_events(chunks), self._provider.redact)
        except Exception:
            if self._closed.is_set():
                return  # the failed read is close() taking effect
            raise
        finally:
            response.close()

    def close(self) -> None:
        """Stop the stream: the server sees the connection close and stops generating."""
        with self._lock:
            self._closed.set()
            response = self._response
        if response is not None:
            _abort(response)

    def _open(self) -> requests.Response | None:
        """Return the 200 response, retrying 429 and 5xx; None if closed meanwhile."""
        attempt = 0
        while not self._closed.is_set():
            attempt += 1
            response = self._provider.send(self._body)
            if response.status_code == 200:
                with self._lock:
                    if not self._closed.is_set():
                        self._response = response
                        return response
                response.close()
                return None
            status = response.status_code
            delay = self._provider.retry_delay(attempt, response)
            detail = _error_detail(response, self._provider.redact)
            response.close()
            if delay is None:
                raise ProviderError(_status_message(status, detail, attempt))
            logger.warning("openai: HTTP %s from the model provider; retry %d in %.1f s",
                           status, attempt, delay)
            self._sleep(delay)
        return None


@dataclass(frozen=True)
class _RetryPolicy:
    """Which failed attempts to repeat (429 and 5xx), how often, and after what pause."""

    max_retries: int
    backoff: float
    jitter: Callable[[], float]

    def delay(self, attempt: int, status: int, retry_after: str | None) -> float | None:
        """Return the pause before the next attempt, or None when there should be none."""
        if not (status == 429 or status >= 500) or attempt > self.max_retries:
            return None
        asked = _seconds(retry_after)
        if asked is not None:
            return asked if asked <= MAX_RETRY_AFTER else None
        # Exponential, with jitter so that throttled clients do not retry in step.
        return self.backoff * 2 ** (attempt - 1) * (0.5 + 0.5 * self.jitter())


def chat_completion_body(request: ModelRequest) -> dict[str, Any]:
    """Return the JSON body of a streamed chat-completions request."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [openai_message(message) for message in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [openai_tool(tool) for tool in request.tools]
    return body


def openai_message(message: Message) -> dict[str, Any]:
    """Return one message in the chat-completions format."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            # The protocol's form for "no text, only tool calls".
            "content": message.content or None,
            "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.name,
                              "arguments": json.dumps(call.input, ensure_ascii=False)}}
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def openai_tool(tool: ToolSpec) -> dict[str, Any]:
    """Return one tool definition in the chat-completions format."""
    return {"type": "function", "function": {
        "name": tool.name, "description": tool.description, "parameters": tool.input_schema,
    }}


@dataclass
class _PartialToolCall:
    """A tool call whose pieces are still arriving."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def add(self, fragment: Mapping[str, Any]) -> None:
        # The id and name come once, in the first fragment; the arguments arrive in pieces.
        self.id = self.id or str(fragment.get("id") or "")
        function = fragment.get("function") or {}
        self.name = self.name or str(function.get("name") or "")
        if function.get("arguments"):
            self.arguments.append(str(function["arguments"]))

    def finished(self) -> ToolCall:
        if not self.name:
            raise ProviderError("The model asked for a tool without naming it.")
        text = "".join(self.arguments).strip() or "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise ProviderError(
                f"The model called the {self.name} tool with arguments that are not a JSON object."
            )
        return ToolCall(self.id or f"call_{uuid.uuid4().hex[:24]}", self.name, arguments)


class _CompletionReader:
    """Turns chat-completion chunks into stream items; tool calls and usage wait for the end."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact
        self._calls: dict[int, _PartialToolCall] = {}
        self._usage: Mapping[str, Any] | None = None
        self.finished = False

    def read(self, chunk: Mapping[str, Any]) -> list[StreamItem]:
        """Return the items in one chunk; raise ProviderError if the server reports an error."""
        if chunk.get("error"):
            detail = _short(self._redact(_message_of(chunk)))
            raise ProviderError(_sentence("The model provider reported an error during the answer",
                                          detail))
        # Servers that report usage on every chunk report running totals: keep the last.
        self._usage = chunk.get("usage") or self._usage
        items: list[StreamItem] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                items.append(ThinkingChunk(str(reasoning)))
            if delta.get("content"):
                items.append(TextChunk(str(delta["content"])))
            for position, fragment in enumerate(delta.get("tool_calls") or ()):
                index = fragment.get("index", position)
                self._calls.setdefault(index, _PartialToolCall()).add(fragment)
            self.finished = self.finished or bool(choice.get("finish_reason"))
        return items

    def end(self) -> list[StreamItem]:
        """Return the assembled tool calls, in the model's order, and the usage."""
        items: list[StreamItem] = [self._calls[index].finished() for index in sorted(self._calls)]
        if self._usage:
            items.append(Usage(_count(self._usage.get("prompt_tokens")),
                               _count(self._usage.get("completion_tokens"))))
        return items


def _completion_items(events: Iterable[ServerSentEvent],
                      redact: Callable[[str], str]) -> Iterator[StreamItem]:
    """Yield the items of a chat-completion stream, which must end with [DONE] or a finish."""
    reader = _CompletionReader(redact)
    try:
        for event in events:
            if event.data.strip() == "[DONE]":
                reader.finished = True
                break
            try:
                items = reader.read(_chunk(event.data))
            except (AttributeError, TypeError, ValueError):
                raise ProviderError(MALFORMED_ERROR) from None
            yield from items
    except SSEProtocolError:
        raise ProviderError(MALFORMED_ERROR) from None
    if not reader.finished:
        raise ProviderError(BROKEN_STREAM_ERROR)
    yield from reader.end()


def _chunk(data: str) -> Mapping[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise ProviderError(MALFORMED_ERROR)
    return chunk


def _received(response: requests.Response, timeout_message: str) -> Iterator[bytes]:
    """Yield the body's bytes as they arrive; network failures become ProviderError."""
    try:
        # read1 returns whatever has arrived, for chunked and close-delimited bodies alike.
        while chunk := response.raw.read1(READ_SIZE, decode_content=True):
            yield chunk
    except ReadTimeoutError:
        raise ProviderError(timeout_message) from None
    except (Urllib3Error, OSError):
        raise ProviderError(BROKEN_STREAM_ERROR) from None


def _abort(response: requests.Response) -> None:
    """Unblock a read in progress on another thread, then close the connection."""
    try:
        # Closing alone does not wake a thread blocked in recv(); shutting the socket down does.
        response.raw.shutdown()
    except (ValueError, RuntimeError, OSError):
        pass  # already released or closed: nothing is blocked on it
    response.close()


def _error_detail(response: requests.Response, redact: Callable[[str], str]) -> str:
    """Return the server's error message, key-free and short; empty if it sent none."""
    try:
        raw = response.raw.read(16 * 1024, decode_content=True) or b""
    except (Urllib3Error, OSError):
        return ""
    text = raw.decode("utf-8", errors="replace")
    try:
        text = _message_of(json.loads(text))
    except ValueError:
        pass
    # Redact before shortening: a key cut in half would no longer be recognised.
    return _short(redact(text))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text[:MAX_DETAIL_CHARS] + ("…" if len(text) > MAX_DETAIL_CHARS else "")


def _message_of(body: Any) -> str:
    """Return the message in the error shapes servers use, or the body as text."""
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if key in body:
                return _message_of(body[key])
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


def _status_message(status: int, detail: str, attempts: int) -> str:
    if status in (401, 403):
        return CREDENTIALS_ERROR.format(status=status)
    if status == 429 or status >= 500:
        tried = f", {attempts} attempts" if attempts > 1 else ""
        what = "is rate limiting requests" if status == 429 else "failed"
        return _sentence(f"The model provider {what} (HTTP {status}{tried})", detail) + (
            " Try again later.")
    return _sentence(f"The model provider refused the request (HTTP {status})", detail)


def _sentence(what: str, detail: str) -> str:
    """Return what, followed by the server's own words if any, as one sentence."""
    text = f"{what}: {detail}" if detail else what
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _seconds(value: str | None) -> float | None:
    """Return a Retry-After given in seconds; None for a date or anything else."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _without_credentials(url: str) -> str:
    """Return url without user:password, query or fragment, for messages and logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
