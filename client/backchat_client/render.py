"""Show a run's events as they arrive: JSON lines or plain text (a terminal: markdown_printer)."""
from __future__ import annotations

import json
from typing import Any, Protocol, TextIO

# Tool output can be long; a step line shows its start.
STEP_TEXT_CHARS = 200
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


class EventPrinter(Protocol):
    """Shows events one by one; `close` finishes the output (also after Ctrl-C)."""

    def show(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def event_printer(as_json: bool, out: TextIO, err: TextIO) -> EventPrinter:
    """Return the printer for this output: JSON lines, markdown on a terminal, else plain text."""
    if as_json:
        return JsonLinesPrinter(out)
    if out.isatty():
        # rich takes a quarter of a second to import: only a terminal needs it.
        from backchat_client.markdown_printer import MarkdownPrinter

        return MarkdownPrinter.on(out)
    return PlainPrinter(out, err)


def step_line(event: dict[str, Any]) -> str | None:
    """Return the one-line description of a step that is not answer text, or None for none."""
    kind = event["eventType"]
    if kind == "tool_call":
        arguments = json.dumps(event.get("toolInput") or {}, ensure_ascii=False)
        return _shorten(f"→ {event.get('toolName', '?')} {arguments}")
    if kind == "tool_result":
        return _shorten(f"← {event.get('content', '')}")
    if kind in ("error", "cancelled"):
        return f"{kind}: {event.get('content') or 'the run ended ' + kind}"
    return None


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= STEP_TEXT_CHARS else flat[:STEP_TEXT_CHARS - 1] + "…"


class JsonLinesPrinter:
    """One JSON object per event and line, exactly as the API sent it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def show(self, event: dict[str, Any]) -> None:
        self._out.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.flush()


class PlainPrinter:
    """The answer on `out`, verbatim; thinking and tool steps on `err`, dimmed on a terminal."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out = out
        self._err = err
        self._dim = err.isatty()
        self._thinking = False
        self._answer_line_open = False

    def show(self, event: dict[str, Any]) -> None:
        kind = event["eventType"]
        if kind == "thinking":
            self._write_step(event.get("content", ""), continued=True)
        elif kind == "delta":
            self._end_thinking()
            text = event.get("content", "")
            self._out.write(text)
            self._out.flush()
            if text:
                self._answer_line_open = not text.endswith("\n")
        else:
            line = step_line(event)
            if line is not None:
                self._write_step(line + "\n", continued=False)

    def close(self) -> None:
        self._end_thinking()
        if self._answer_line_open:
            self._out.write("\n")
            self._answer_line_open = False
        self._out.flush()

    def _write_step(self, text: str, continued: bool) -> None:
        if not continued:
            self._end_thinking()
        self._thinking = continued
        self._err.write(f"{_DIM}{text}{_RESET}" if self._dim else text)
        self._err.flush()

    def _end_thinking(self) -> None:
        if self._thinking:
            self._thinking = False
            self._err.write("\n")
            self._err.flush()
