"""Show a run's events on a terminal: the answer rendered as markdown while it streams."""
from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment, Segments
from rich.text import Text

from backchat_client.markdown_blocks import split_complete
from backchat_client.render import step_line

_STEP_STYLES = {"error": "bold red", "cancelled": "yellow"}


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

    @classmethod
    def on(cls, out: TextIO) -> MarkdownPrinter:
        """Return a printer that writes to the terminal `out`."""
        return cls(Console(file=out, highlight=False))

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
