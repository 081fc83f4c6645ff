"""The built-in demo model: offline, deterministic, steerable by a [demo ...] directive."""
from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

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
    Usage,
)

DEFAULT_TOKENS = 60
# The longest answer (and the latest failure) a directive may ask for: the demo model is on in
# every stage, and a run must stay bounded.
MAX_TOKENS = 20_000
# Slower rates would make a single pause longer than any run may last (and overflow Event.wait).
MIN_RATE = 0.01

_DIRECTIVE = re.compile(r"\[demo(?:\s[^\]]*)?\]", re.IGNORECASE)
_SETTING = re.compile(r"(\w+)=([^\s\]]+)")
_NUMBER = r"\d+(?:\.\d+)?"
_OPEN = r"(?:\(\s*)*"
_CLOSE = r"(?:\s*\))*"
_OPERATOR = r"(?:\*\*|//|[-+*/x×÷^%])"
_ARITHMETIC = re.compile(
    rf"{_OPEN}{_NUMBER}{_CLOSE}(?:\s*{_OPERATOR}\s*{_OPEN}-?{_NUMBER}{_CLOSE})+"
)
_ASKS_TIME = re.compile(r"\b(?:time|clock)\b|\bврем(?:я|ени)\b|\bкоторый\s+час\b", re.IGNORECASE)
# Whitespace belongs to the word after it, and a trailing run of whitespace is a token of its own,
# so joining the tokens gives back the text exactly.
_TOKEN = re.compile(r"\s*\S+|\s+")
# Starts with a paragraph break so that it can follow the header, and itself, seamlessly.
_FILLER = (
    "\n\nThis answer comes from the **demo** model. It runs offline, answers the same way every "
    "time and streams at a steady pace, so you can watch the text arrive.\n\n"
    "- It quotes your message verbatim.\n"
    "- It calls the *calculator* for arithmetic and the *clock* for the time.\n"
    "- It repeats this paragraph until the answer is as long as asked."
)
_FILLER_TOKENS = _TOKEN.findall(_FILLER)


@dataclass(frozen=True)
class DemoDirective:
    """The settings from a [demo tokens=N rate=R fail_after=K] directive; None where absent or invalid."""

    tokens: int | None = None
    rate: float | None = None
    fail_after: int | None = None


def parse_directive(text: str) -> DemoDirective:
    """Return the first [demo ...] directive in text; keys in any order, invalid values ignored."""
    match = _DIRECTIVE.search(text)
    if match is None:
        return DemoDirective()
    settings = {key.lower(): value for key, value in _SETTING.findall(match.group())}
    return DemoDirective(
        tokens=_count(settings.get("tokens")),
        rate=_rate(settings.get("rate")),
        fail_after=_count(settings.get("fail_after")),
    )


class DemoProvider(Provider):
    """A model that thinks, calls the calculator or clock when asked, and quotes the message back."""

    def __init__(self, sleep: Callable[[float], None] | None = None, default_rate: float = 50.0) -> None:
        if not default_rate >= MIN_RATE:
            raise ValueError(f"default_rate must be at least {MIN_RATE}, not {default_rate}")
        self._sleep = sleep
        self._default_rate = default_rate

    def stream(self, request: ModelRequest) -> DemoStream:
        """Start one deterministic model call for request."""
        return DemoStream(request, self._default_rate, self._sleep)


class DemoStream(ProviderStream):
    """One demo response, paced at the directive's rate; close() stops it at once."""

    def __init__(
        self, request: ModelRequest, default_rate: float, sleep: Callable[[float], None] | None
    ) -> None:
        self._request = request
        self._message, self._after = _split_turn(request.messages)
        self._directive = parse_directive(self._message)
        self._delay = 1 / (self._directive.rate or default_rate)
        self._closed = threading.Event()
        # Waiting on the event lets close() from another thread cut a pause short.
        self._sleep: Callable[[float], object] = sleep or self._closed.wait

    def __iter__(self) -> Iterator[StreamItem]:
        """Yield the step's items, one every 1/rate seconds, then Usage; end quietly once closed."""
        output_tokens = 0
        for item in self._script():
            self._sleep(self._delay)
            if self._closed.is_set():
                return
            output_tokens += 1
            yield item
        if self._closed.is_set():
            return
        words = sum(len(message.content.split()) for message in self._request.messages)
        yield Usage(input_tokens=max(1, words), output_tokens=output_tokens)

    def close(self) -> None:
        """Stop the stream; safe from any thread and more than once."""
        self._closed.set()

    def _script(self) -> Iterator[StreamItem]:
        """Yield the step's items unpaced: tool calls on the first step, else the answer."""
        results = [message for message in self._after if message.role == "tool"]
        if results:
            yield from self._answer(_reports(self._after, results), "The tools have answered.")
            return
        calls, reasons = self._tool_calls()
        if not calls:
            yield from self._answer([], self._history_note() + "The message asks for no tool.")
            return
        reasoning = self._history_note() + " ".join(reasons)
        yield from (ThinkingChunk(token) for token in _tokenize(reasoning))
        yield from calls

    def _history_note(self) -> str:
        """Return "history: N messages. " when the input carries earlier messages, else ""."""
        before = len(self._request.messages) - len(self._after) - 1
        earlier = sum(1 for message in self._request.messages[:before]
                      if message.role in ("user", "assistant"))
        return f"history: {earlier} messages. " if earlier else ""

    def _tool_calls(self) -> tuple[list[ToolCall], list[str]]:
        """Return the tool calls the last user message asks for, and the reasoning behind them."""
        # Number the calls after any earlier ones so ids stay unique within the conversation.
        first = 1 + sum(len(message.tool_calls) for message in self._request.messages)
        content = _DIRECTIVE.sub("", self._message)
        calls: list[ToolCall] = []
        reasons: list[str] = []
        arithmetic = _ARITHMETIC.search(content)
        if arithmetic:
            expression = arithmetic.group()
            calls.append(ToolCall(f"call_{first}", "calculator", {"expression": expression}))
            reasons.append(f"The user asks about {expression}. I will use the calculator.")
        if _ASKS_TIME.search(content):
            calls.append(ToolCall(f"call_{first + len(calls)}", "clock", {}))
            reasons.append("The user asks for the time. I will use the clock.")
        return calls, reasons

    def _answer(self, reports: list[str], preface: str) -> Iterator[StreamItem]:
        """Yield thinking, then the answer's tokens: quote, tool reports, filler; fail if asked."""
        header = _tokenize(_header(self._message, reports))
        tokens = self._directive.tokens
        length = max(DEFAULT_TOKENS if tokens is None else tokens, len(header))
        thinking = f"{preface} I will quote the message and answer in {length} tokens."
        yield from (ThinkingChunk(token) for token in _tokenize(thinking))
        # fail_after always fails, after exactly K tokens, so the answer grows with filler if needed.
        fail_after = self._directive.fail_after
        count = length if fail_after is None else fail_after
        filler = itertools.islice(itertools.cycle(_FILLER_TOKENS), max(0, count - len(header)))
        yield from (TextChunk(token) for token in itertools.islice(itertools.chain(header, filler), count))
        if fail_after is not None:
            raise ProviderError(
                f"The demo model failed after {fail_after} tokens, as the message asked "
                f"([demo fail_after={fail_after}])."
            )


def _split_turn(messages: Sequence[Message]) -> tuple[str, Sequence[Message]]:
    """Return the last user message's text and the messages after it."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return messages[index].content, messages[index + 1:]
    return "", messages


def _reports(after: Sequence[Message], results: list[Message]) -> list[str]:
    """Return one markdown sentence per tool result, naming the call it answers."""
    calls = {call.id: call for message in after for call in message.tool_calls}
    return [_report(calls.get(result.tool_call_id or ""), result.content) for result in results]


def _report(call: ToolCall | None, content: str) -> str:
    """Return the sentence that tells the user what one tool returned."""
    name = call.name if call else "requested"
    if content.startswith("error:"):
        return f'The {name} tool failed: "{content[len("error:"):].strip()}".'
    if call and call.name == "calculator":
        return f"The calculator says `{call.input.get('expression', '')}` = **{content}**."
    if call and call.name == "clock":
        return f"The clock says it is {content}."
    return f"The {name} tool returned: {content}"


def _header(message: str, reports: list[str]) -> str:
    """Return the message as a markdown blockquote, followed by the tool reports."""
    quote = "\n".join("> " + line for line in message.split("\n"))
    return quote + "".join("\n\n" + report for report in reports)


def _tokenize(text: str) -> list[str]:
    """Return text's tokens; their concatenation is text."""
    return _TOKEN.findall(text)


def _count(value: str | None) -> int | None:
    """Return value as a count from 0 to MAX_TOKENS (larger ones are capped), or None."""
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    # Checked before int(): Python refuses to read more than 4,300 digits.
    return MAX_TOKENS if len(value) > 6 else min(int(value), MAX_TOKENS)


def _rate(value: str | None) -> float | None:
    """Return value as a rate of at least MIN_RATE tokens per second, or None if it is not one."""
    if value is None:
        return None
    try:
        rate = float(value)
    except ValueError:
        return None
    # Also false for nan.
    return rate if rate >= MIN_RATE else None
