"""The `bedrock:` provider: Amazon Bedrock's ConverseStream through an injected boto3 client."""
from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

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

logger = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2
DEFAULT_BACKOFF = 0.5
MAX_DETAIL_CHARS = 300

# Error codes compared in lower case: the same error is "ThrottlingException" when the call
# fails and "throttlingException" when it arrives inside the event stream.
RETRYABLE_CODES = frozenset({
    "throttlingexception", "serviceunavailableexception", "serviceunavailable",
    "internalserverexception", "modelnotreadyexception",
})
CREDENTIAL_CODES = frozenset({
    "accessdeniedexception", "unrecognizedclientexception", "unrecognizedclient",
    "invalidsignatureexception", "expiredtokenexception",
})
# Exceptions the stream can carry as events (when a client hands them over instead of raising).
STREAM_EXCEPTIONS = (
    "internalServerException", "modelStreamErrorException", "validationException",
    "throttlingException", "serviceUnavailableException",
)
CREDENTIALS_ERROR = (
    "The model provider rejected the credentials ({code}); check the AWS credentials, the IAM "
    "permission bedrock:InvokeModelWithResponseStream and the model's access in Bedrock."
)
TIMEOUT_ERROR = "The model provider did not answer in time (Amazon Bedrock)."
BROKEN_STREAM_ERROR = "The connection to the model provider broke off in the middle of the answer."
# Bedrock rejects empty text blocks.
EMPTY_TOOL_OUTPUT = "(no output)"


class BedrockProvider(Provider):
    """Streams answers from Bedrock models with converse_stream."""

    def __init__(
        self,
        client: Any,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._max_retries = max_retries
        self._backoff = backoff
        self._sleep = sleep
        self._jitter = jitter

    def stream(self, request: ModelRequest) -> BedrockStream:
        """Start one converse_stream call for request."""
        logger.debug("bedrock: converse_stream modelId=%s", request.model)
        return BedrockStream(self, converse_arguments(request), self._sleep)

    def call(self, arguments: Mapping[str, Any]) -> Any:
        """Call converse_stream once and return its event stream; errors propagate."""
        return self._client.converse_stream(**arguments)["stream"]

    def retry_delay(self, attempt: int, code: str) -> float | None:
        """Return the pause before repeating a failed call, or None if it is not repeated."""
        if code.lower() not in RETRYABLE_CODES or attempt > self._max_retries:
            return None
        # Exponential, with jitter so that throttled clients do not retry in step.
        return self._backoff * 2 ** (attempt - 1) * (0.5 + 0.5 * self._jitter())


class BedrockStream(ProviderStream):
    """One converse_stream answer; close() closes the event stream."""

    def __init__(self, provider: BedrockProvider, arguments: Mapping[str, Any],
                 sleep: Callable[[float], object] | None = None) -> None:
        self._provider = provider
        self._arguments = arguments
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._events: Any = None
        # Waiting on the event lets close() cut a backoff pause short.
        self._sleep = sleep or self._closed.wait

    def __iter__(self) -> Iterator[StreamItem]:
        """Yield the answer's items; retry throttling before the first; end quietly once closed."""
        events = self._open()
        if events is None:
            return
        try:
            yield from _converse_items(events)
        except Exception as error:
            if self._closed.is_set():
                return  # the failed read is close() taking effect
            # botocore raises an exception event in the stream as a ClientError.
            if isinstance(error, ClientError):
                raise ProviderError(_stream_error_message(_code(error), _message(error))) from None
            if isinstance(error, (BotoCoreError, Urllib3Error, OSError)):
                raise ProviderError(TIMEOUT_ERROR if _is_timeout(error)
                                    else BROKEN_STREAM_ERROR) from None
            raise
        finally:
            events.close()

    def close(self) -> None:
        """Stop the stream: close the event stream's connection so no more tokens are made."""
        with self._lock:
            self._closed.set()
            events = self._events
        if events is not None:
            _abort(events)

    def _open(self) -> Any:
        """Return the event stream, retrying throttling and outages; None if closed meanwhile."""
        attempt = 0
        while not self._closed.is_set():
            attempt += 1
            try:
                events = self._provider.call(self._arguments)
            except ClientError as error:
                code = _code(error)
                delay = self._provider.retry_delay(attempt, code)
                if delay is None:
                    message = _call_error_message(code, _message(error), attempt)
                    raise ProviderError(message) from None
                logger.warning("bedrock: %s from converse_stream; retry %d in %.1f s",
                               code, attempt, delay)
                self._sleep(delay)
                continue
            except BotoCoreError as error:
                if _is_timeout(error):
                    raise ProviderError(TIMEOUT_ERROR) from None
                raise ProviderError(
                    f"The model provider (Amazon Bedrock) could not be called: {error}"
                ) from None
            with self._lock:
                if not self._closed.is_set():
                    self._events = events
                    return events
            events.close()
        return None


def converse_arguments(request: ModelRequest) -> dict[str, Any]:
    """Return the keyword arguments of a converse_stream call for request."""
    arguments: dict[str, Any] = {
        "modelId": request.model,
        "messages": bedrock_messages(request.messages),
    }
    if request.tools:
        arguments["toolConfig"] = {"tools": [bedrock_tool(tool) for tool in request.tools]}
    return arguments


def bedrock_messages(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Return messages in Bedrock's format: roles alternate, tool results are user content."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue  # an empty turn is invalid in Bedrock and says nothing to the model
        # Bedrock requires alternating roles, so consecutive tool results (and any other
        # same-role neighbours) become one message.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def bedrock_tool(tool: ToolSpec) -> dict[str, Any]:
    """Return one tool definition in Bedrock's toolConfig format."""
    return {"toolSpec": {"name": tool.name, "description": tool.description,
                         "inputSchema": {"json": tool.input_schema}}}


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        # No "status": Bedrock accepts it only for some models; the text says "error: ..." anyway.
        return [{"toolResult": {"toolUseId": message.tool_call_id,
                                "content": [{"text": message.content or EMPTY_TOOL_OUTPUT}]}}]
    blocks: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    blocks += [{"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.input}}
               for call in message.tool_calls]
    return blocks


@dataclass
class _PartialToolUse:
    """A toolUse block whose input is still arriving."""

    id: str
    name: str
    input: list[str] = field(default_factory=list)

    def finished(self) -> ToolCall:
        text = "".join(self.input).strip() or "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise ProviderError(
                f"The model called the {self.name} tool with input that is not a JSON object."
            )
        return ToolCall(self.id, self.name, arguments)


def _converse_items(events: Iterable[Mapping[str, Any]]) -> Iterator[StreamItem]:
    """Turn ConverseStream events into stream items; a tool call is yielded when its block stops."""
    tools: dict[int, _PartialToolUse] = {}
    stopped = False
    for event in events:
        if "contentBlockStart" in event:
            block = event["contentBlockStart"]
            tool = block.get("start", {}).get("toolUse")
            if tool:
                tools[block.get("contentBlockIndex", 0)] = _PartialToolUse(tool["toolUseId"],
                                                                           tool["name"])
        elif "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta", {})
            if delta.get("text"):
                yield TextChunk(delta["text"])
            reasoning = delta.get("reasoningContent") or {}
            if reasoning.get("text"):
                yield ThinkingChunk(reasoning["text"])
            if "toolUse" in delta:
                tool_use = tools.get(block.get("contentBlockIndex", 0))
                if tool_use is None:
                    raise ProviderError("The model provider sent tool input for a tool call "
                                        "it never started.")
                tool_use.input.append(delta["toolUse"].get("input", ""))
        elif "contentBlockStop" in event:
            tool_use = tools.pop(event["contentBlockStop"].get("contentBlockIndex", 0), None)
            if tool_use:
                yield tool_use.finished()
        elif "messageStop" in event:
            stopped = True
        elif "metadata" in event:
            usage = event["metadata"].get("usage") or {}
            yield Usage(usage.get("inputTokens", 0), usage.get("outputTokens", 0))
        else:
            for name in STREAM_EXCEPTIONS:
                if name in event:
                    raise ProviderError(_stream_error_message(name, event[name].get("message", "")))
    if not stopped:
        raise ProviderError(BROKEN_STREAM_ERROR)


def _abort(events: Any) -> None:
    """Unblock a read in progress on another thread, then close the event stream."""
    # EventStream.close() alone does not wake a thread blocked in recv(); shutting the socket
    # down does. EventStream offers no public handle on its HTTP response, hence _raw_stream.
    raw = getattr(events, "_raw_stream", None)
    try:
        if raw is not None:
            raw.shutdown()
    except (AttributeError, ValueError, RuntimeError, OSError):
        pass  # released, closed, or an HTTP response without shutdown: close() still applies
    events.close()


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "")) or "UnknownError"


def _message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", ""))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text[:MAX_DETAIL_CHARS] + ("…" if len(text) > MAX_DETAIL_CHARS else "")


def _call_error_message(code: str, message: str, attempts: int) -> str:
    if code.lower() in CREDENTIAL_CODES:
        # AWS's own text names the account and role; the person chatting needs neither.
        return CREDENTIALS_ERROR.format(code=code)
    if code.lower() in RETRYABLE_CODES:
        tried = f", {attempts} attempts" if attempts > 1 else ""
        return _sentence(f"The model provider is busy or failing ({code}{tried})", message) + (
            " Try again later.")
    return _sentence(f"The model provider refused the request ({code})", message)


def _stream_error_message(code: str, message: str) -> str:
    return _sentence(f"The model provider failed during the answer ({code})", message)


def _sentence(what: str, detail: str) -> str:
    """Return what, followed by the provider's own words if any, as one sentence."""
    text = f"{what}: {_short(detail)}" if detail.strip() else what
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _is_timeout(error: Exception) -> bool:
    # The event stream reads urllib3's response directly, so its timeouts arrive unwrapped.
    return isinstance(error, (ReadTimeoutError, ConnectTimeoutError, Urllib3ReadTimeoutError))
