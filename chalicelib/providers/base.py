"""The one streaming interface every model provider implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Union


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool to run with a JSON-object input."""

    id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """One turn of the conversation in a provider-neutral form."""

    role: Literal["user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    # Set on role "tool": the call this message answers.
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about a tool: its name, purpose and JSON Schema input."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    """One call to the model: the model name within its provider, the messages, the tools."""

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()


@dataclass(frozen=True)
class ThinkingChunk:
    """A piece of the model's reasoning text."""

    text: str


@dataclass(frozen=True)
class TextChunk:
    """A piece of the answer text."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Tokens the provider billed for one model call."""

    input_tokens: int
    output_tokens: int


StreamItem = Union[ThinkingChunk, TextChunk, ToolCall, Usage]


class ProviderStream(ABC):
    """An open model response: iterate for items, close to stop paying for tokens."""

    @abstractmethod
    def __iter__(self) -> Iterator[StreamItem]:
        """Yield items until the model has finished; raise ProviderError on failure."""

    @abstractmethod
    def close(self) -> None:
        """Stop the stream; safe to call from another thread, and more than once."""


class Provider(ABC):
    """A source of model responses, e.g. the offline demo or an OpenAI-compatible server."""

    @abstractmethod
    def stream(self, request: ModelRequest) -> ProviderStream:
        """Start one model call and return its stream."""
