"""How the `backchat` command shows events: markdown blocks, plain text, JSON lines."""
from __future__ import annotations

import io
import json
import random
import re

import pytest
from rich.console import Console
from rich.markdown import Markdown

from backchat_client.markdown_blocks import split_complete
from backchat_client.markdown_printer import MarkdownPrinter
from backchat_client.render import JsonLinesPrinter, PlainPrinter, event_printer, step_line

DOCUMENT = (
    "> what is **17*23**?\n\n"
    "The calculator says `17*23` = **391**.\n\n"
    "- one\n- two\n\n  still two\n\n"
    "```python\nprint(1)\n\nprint(2)\n```\n\n"
    "~~~\n```\nnot a fence end\n~~~\n\n"
    "Привет, 世界 👋🏽 e\u0301 — the end."
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def shown_lines(output: str, from_first_text: bool = False) -> list[str]:
    """Return the lines a terminal shows for this output: no escape codes, no trailing blanks."""
    lines = [line.rstrip() for line in ANSI.sub("", output).splitlines()]
    while from_first_text and lines and not lines[0]:
        lines.pop(0)
    return lines


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("text, complete", [
    ("one\n\ntwo", "one\n\n"),
    ("one\n\ntwo\n\nthr", "one\n\ntwo\n\n"),
    ("one\n\n", ""),
    ("one\ntwo", ""),
    ("- item\n\n  continued", ""),
    ("```\na\n\nb", ""),
    ("```\na\n\nb\n```\n\nafter", "```\na\n\nb\n```\n\n"),
    ("````\n```\n\nx\n````\n\ny", "````\n```\n\nx\n````\n\n"),
    ("~~~\n```\n\nx", ""),
    ("para\n\n```\ncode", "para\n\n"),
])
def test_a_block_is_complete_only_once_text_starts_after_a_blank_line_outside_a_fence(
    text: str, complete: str
) -> None:
    assert split_complete(text) == (complete, text[len(complete):])


def test_splitting_a_stream_anywhere_keeps_every_character_once() -> None:
    rng = random.Random(7)
    for _ in range(50):
        printed, pending, position = [], "", 0
        while position < len(DOCUMENT):
            step = rng.randint(1, 12)
            finished, pending = split_complete(pending + DOCUMENT[position:position + step])
            printed.append(finished)
            position += step
        assert "".join(printed) + pending == DOCUMENT


def test_markdown_printer_renders_the_streamed_answer_as_one_document() -> None:
    out = io.StringIO()
    printer = MarkdownPrinter(Console(file=out, force_terminal=True, force_interactive=False,
                                      width=100, color_system="standard"))
    printer.show({"eventType": "thinking", "content": "Let me "})
    printer.show({"eventType": "thinking", "content": "think."})
    printer.show({"eventType": "tool_call", "toolName": "calculator",
                  "toolInput": {"expression": "17*23"}})
    printer.show({"eventType": "tool_result", "content": "391"})
    for start in range(0, len(DOCUMENT), 9):
        printer.show({"eventType": "delta", "content": DOCUMENT[start:start + 9]})
    printer.show({"eventType": "done"})
    printer.close()

    lines = shown_lines(out.getvalue())
    assert lines[:4] == ["Let me think.", '→ calculator {"expression": "17*23"}', "← 391", ""]
    # Blocks printed as they complete look exactly like the whole answer rendered at once.
    whole = io.StringIO()
    Console(file=whole, force_terminal=True, width=100).print(Markdown(DOCUMENT))
    assert lines[4:] == shown_lines(whole.getvalue(), from_first_text=True)
    assert "The calculator says 17*23 = 391." in lines and "**" not in out.getvalue()
    assert "\x1b[1m" in out.getvalue()


def test_plain_printer_writes_the_answer_verbatim_and_the_steps_apart() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = PlainPrinter(out, err)
    for item in [{"eventType": "thinking", "content": "a"},
                 {"eventType": "thinking", "content": "b"},
                 {"eventType": "tool_call", "toolName": "clock", "toolInput": {}},
                 {"eventType": "tool_result", "content": "12:00\n" + "x" * 500},
                 {"eventType": "delta", "content": "**It is** "},
                 {"eventType": "delta", "content": "noon"},
                 {"eventType": "done"}]:
        printer.show(item)
    printer.close()

    assert out.getvalue() == "**It is** noon\n"
    steps = err.getvalue().splitlines()
    assert steps[:2] == ["ab", "→ clock {}"]
    assert steps[2].startswith("← 12:00 xxx") and steps[2].endswith("…")
    assert len(steps[2]) == 200
    assert "\x1b" not in err.getvalue()


def test_plain_printer_adds_no_newline_to_an_answer_that_ends_with_one() -> None:
    out = io.StringIO()
    printer = PlainPrinter(out, io.StringIO())
    printer.show({"eventType": "delta", "content": "line\n"})
    printer.close()

    assert out.getvalue() == "line\n"


def test_plain_printer_dims_steps_on_a_terminal_and_reports_the_end() -> None:
    err = Terminal()
    printer = PlainPrinter(io.StringIO(), err)
    printer.show({"eventType": "error", "content": "The model failed"})
    printer.close()

    assert err.getvalue() == "\x1b[2merror: The model failed\n\x1b[0m"


def test_json_lines_printer_writes_each_event_as_it_came() -> None:
    out = io.StringIO()
    printer = JsonLinesPrinter(out)
    events = [{"seq": 1, "eventType": "delta", "content": "Привет 👋"},
              {"seq": 2, "eventType": "done", "usage": {"totalTokens": 3}}]
    for item in events:
        printer.show(item)
    printer.close()

    assert [json.loads(line) for line in out.getvalue().splitlines()] == events
    assert "Привет 👋" in out.getvalue()


def test_the_printer_follows_the_output() -> None:
    assert isinstance(event_printer(True, Terminal(), Terminal()), JsonLinesPrinter)
    assert isinstance(event_printer(False, io.StringIO(), Terminal()), PlainPrinter)
    printer = event_printer(False, Terminal(), io.StringIO())
    assert isinstance(printer, MarkdownPrinter)
    printer.close()


@pytest.mark.parametrize("event, line", [
    ({"eventType": "cancelled"}, "cancelled: the run ended cancelled"),
    ({"eventType": "delta", "content": "x"}, None),
    ({"eventType": "done"}, None),
    ({"eventType": "tool_result", "content": "a\n  b"}, "← a b"),
])
def test_step_lines(event: dict, line: str | None) -> None:
    assert step_line(event) == line
