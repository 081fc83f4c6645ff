"""Show a run's events as they arrive: JSON lines, plain text when piped, markdown on a terminal."""
from __future__ import annotations

import json
from typing import Any, Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment, Segments
from rich.text import Text

from backchat_client.markdown_blocks import split_complete

# Tool output can be long; a step line shows its start.
STEP_TEXT_CHARS = 200
_STEP_STYLES = {"error": "bold red", "cancelled": "yellow"}
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
        return MarkdownPrinter(Console(file=out, highlight=False))
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
    """The answer text on `out`, verbatim; thinking and tool steps on `err`, dimmed on a terminal."""

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


class MarkdownPrinter:
    """Markdown rendered on a terminal: finished blocks printed once, the block in progress live.

    Thinking and tool steps are dimmed on the same console, so the live area never fights with
    text written to the same terminal through another stream.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._thinking = ""
        self._answer = ""
        # What was printed last ("answer" or "step"), to separate blocks as one document would.
        self._printed: str | None = None
        self._live = Live(console=console, auto_refresh=False, transient=True)
        self._live.start()

    def show(self, event: dict[str, Any]) -> None:
        kind = event["eventType"]
        if kind == "thinking":
            self._thinking += event.get("content", "")
        else:
            self._print_thinking()
            if kind == "delta":
                finished, self._answer = split_complete(self._answer + event.get("content", ""))
                if finished:
                    self._print_markdown(finished)
            else:
                line = step_line(event)
                if line is not None:
                    self._print_answer()
                    self._print("step", Text(line, style=_STEP_STYLES.get(kind, "dim")))
        self._live.update(self._in_progress(), refresh=True)

    def close(self) -> None:
        self._print_thinking()
        self._print_answer()
        self._live.update(Text(""), refresh=True)
        self._live.stop()

    def _in_progress(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self._thinking:
            parts.append(Text(self._thinking, style="dim italic"))
        if self._answer:
            parts.append(Markdown(self._answer))
        return Group(*parts)

    def _print_thinking(self) -> None:
        if self._thinking:
            self._print("step", Text(self._thinking.strip(), style="dim italic"))
            self._thinking = ""

    def _print_answer(self) -> None:
        if self._answer:
            self._print_markdown(self._answer)
            self._answer = ""

    def _print_markdown(self, text: str) -> None:
        segments = list(self._console.render(Markdown(text)))
        # rich opens a document that starts with a list or a quote with a blank line; the blank
        # between blocks printed apart is added by _print, the same for every kind of block.
        if segments[:1] == [Segment.line()]:
            segments = segments[1:]
        self._print("answer", Segments(segments))

    def _print(self, kind: str, renderable: RenderableType) -> None:
        # Markdown blocks printed apart lose the blank line between them; steps stay together.
        if self._printed is not None and (kind == "answer" or self._printed != kind):
            self._console.print()
        self._console.print(renderable)
        self._printed = kind
