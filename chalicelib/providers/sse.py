"""An incremental Server-Sent Events parser: bytes in, as the network delivers them; events out.

It follows the WHATWG event-stream rules (UTF-8, CRLF/LF/CR line ends, `data:` lines joined
with "\n", comment lines starting with ":", `event:` and `id:` kept, `retry:` ignored), with one
deliberate leniency: an event left without its closing blank line when the stream ends is still
delivered, because some model servers end their last event at EOF.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

# A line longer than this means the peer is not speaking SSE; stop before memory runs out.
MAX_LINE_CHARS = 4_000_000

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEProtocolError(ValueError):
    """The byte stream cannot be read as Server-Sent Events."""


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its data lines joined with "\\n", its type and the last event id."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Turn chunks of bytes, split anywhere, into events; call finish() at the end of the stream."""

    def __init__(self, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max_line_chars = max_line_chars
        self._buffer = ""
        self._started = False
        # A chunk that ended in "\r" may be half of a "\r\n" pair.
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes from the stream; return the events they complete."""
        return self._consume(self._decoder.decode(chunk))

    def finish(self) -> list[ServerSentEvent]:
        """End the stream: return the events still held, including an unterminated last one."""
        events = self._consume(self._decoder.decode(b"", final=True))
        if self._buffer:
            events.extend(self._line(self._buffer))
            self._buffer = ""
        events.extend(self._dispatch())
        return events

    def _consume(self, text: str) -> list[ServerSentEvent]:
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        # What is already buffered holds no line end, so only the new text needs scanning.
        scan_from = len(self._buffer)
        self._buffer += text
        events: list[ServerSentEvent] = []
        start = 0
        for end in _LINE_END.finditer(self._buffer, scan_from):
            events.extend(self._line(self._buffer[start:end.start()]))
            start = end.end()
            self._skip_lf = end.group() == "\r" and start == len(self._buffer)
        self._buffer = self._buffer[start:]
        if len(self._buffer) > self._max_line_chars:
            raise SSEProtocolError(
                f"an event-stream line is longer than {self._max_line_chars} characters"
            )
        return events

    def _line(self, line: str) -> list[ServerSentEvent]:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return []
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return []

    def _dispatch(self) -> list[ServerSentEvent]:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return []
        return [ServerSentEvent("\n".join(data), event or "message", self._last_id)]


def iter_events(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """Yield the events of a stream given as chunks of bytes, each as soon as it is complete."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.finish()
