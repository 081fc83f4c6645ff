"""The demo provider: directives, tool calls, the verbatim quote, failure, usage, close."""
from __future__ import annotations

import re
import threading
from datetime import datetime, timezone

import pytest

from chalicelib.errors import ProviderError
from chalicelib.providers.base import (
    Message,
    ModelRequest,
    StreamItem,
    TextChunk,
    ThinkingChunk,
    ToolCall,
    Usage,
)
from chalicelib.providers.demo import DemoDirective, DemoProvider, parse_directive
from chalicelib.tools import CalculatorTool, ClockTool, ToolRegistry, default_tools

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def no_sleep(seconds: float) -> None:
    """Skip pacing so tests run fast."""


def user(text: str) -> Message:
    return Message(role="user", content=text)


def request(*messages: Message) -> ModelRequest:
    return ModelRequest(model="demo", messages=messages, tools=default_tools().specs())


def run(*messages: Message) -> list[StreamItem]:
    return list(DemoProvider(sleep=no_sleep).stream(request(*messages)))


def text_chunks(items: list[StreamItem]) -> list[TextChunk]:
    return [item for item in items if isinstance(item, TextChunk)]


def answer(items: list[StreamItem]) -> str:
    return "".join(chunk.text for chunk in text_chunks(items))


def tool_calls(items: list[StreamItem]) -> list[ToolCall]:
    return [item for item in items if isinstance(item, ToolCall)]


def with_tool_results(message: str) -> tuple[Message, ...]:
    """Return the conversation after the demo's first step and the real tools' results."""
    tools = ToolRegistry([CalculatorTool(), ClockTool(now=lambda: NOON)])
    calls = tuple(tool_calls(run(user(message))))
    results = tuple(
        Message(role="tool", content=tools.run(call.name, call.input), tool_call_id=call.id) for call in calls
    )
    return (user(message), Message(role="assistant", content="", tool_calls=calls), *results)


def quote(message: str) -> str:
    return "\n".join("> " + line for line in message.split("\n"))


@pytest.mark.parametrize(
    ("text", "directive"),
    [
        ("no directive here", DemoDirective()),
        ("[demo]", DemoDirective()),
        ("hi [demo tokens=5 rate=2.5 fail_after=3] there", DemoDirective(tokens=5, rate=2.5, fail_after=3)),
        ("[demo fail_after=0 tokens=7]", DemoDirective(tokens=7, fail_after=0)),
        ("[DEMO RATE=100000]", DemoDirective(rate=100000.0)),
        ("[demo tokens=abc rate=fast fail_after=x]", DemoDirective()),
        ("[demo tokens=-5 rate=-1 fail_after=-2]", DemoDirective()),
        ("[demo rate=0]", DemoDirective()),
        ("[demo rate=nan tokens=1.5]", DemoDirective()),
        ("[demo rate=1e-300]", DemoDirective()),
        ("[demonstration tokens=5]", DemoDirective()),
        ("[demo tokens=4] and later [demo tokens=9]", DemoDirective(tokens=4)),
    ],
)
def test_parse_directive_reads_keys_and_ignores_invalid_values(text: str, directive: DemoDirective) -> None:
    assert parse_directive(text) == directive


@pytest.mark.parametrize(
    "message",
    [
        "Привет, мир! Как дела?",
        "你好世界，今天怎么样？",
        "family 👨‍👩‍👧‍👦 flag 🇺🇦 thumbs 👍🏽",
        "combining e\u0301 a\u0308 n\u0303 Z\u0351\u0352",
        "first line\n\nsecond  line\twith tab\r\nthird ",
    ],
)
def test_answer_quotes_the_message_verbatim(message: str) -> None:
    assert answer(run(user(message))).startswith(quote(message) + "\n\n")


def test_text_chunks_concatenate_to_exactly_the_answer() -> None:
    message = "Ёжик 🦔 says 你好 [demo tokens=1]"
    # Fewer tokens than the quote: the whole answer is the quote.
    assert answer(run(user(message))) == "> Ёжик 🦔 says 你好 [demo tokens=1]"


def test_text_chunks_are_whole_words_with_their_leading_whitespace() -> None:
    for chunk in text_chunks(run(user("combining e\u0301  family 👨‍👩‍👧 [demo tokens=80]"))):
        assert re.fullmatch(r"\s*\S+|\s+", chunk.text)


def test_plain_message_is_answered_in_one_step_without_tools() -> None:
    items = run(user("Tell me about yourself."))
    assert tool_calls(items) == []
    assert len(text_chunks(items)) == 60


def test_thinking_comes_before_the_answer() -> None:
    items = run(user("Hello"))
    kinds = [type(item) for item in items]
    first_text = kinds.index(TextChunk)
    assert kinds[0] is ThinkingChunk
    assert ThinkingChunk not in kinds[first_text:]


@pytest.mark.parametrize(
    ("message", "expression"),
    [
        ("what is 17*23?", "17*23"),
        ("(2+3)*4", "(2+3)*4"),
        ("Compute 2^10 please", "2^10"),
        ("17 x 23", "17 x 23"),
        ("6 × 7 = ?", "6 × 7"),
        ("1.5 + 2.25", "1.5 + 2.25"),
        ("what is 3 * -2", "3 * -2"),
    ],
)
def test_arithmetic_makes_a_calculator_call(message: str, expression: str) -> None:
    assert tool_calls(run(user(message))) == [ToolCall("call_1", "calculator", {"expression": expression})]


def test_tool_step_ends_after_the_call_without_answer_text() -> None:
    items = run(user("what is 17*23?"))
    kinds = [type(item) for item in items]
    assert kinds == [ThinkingChunk] * (len(items) - 2) + [ToolCall, Usage]
    assert "17*23" in "".join(item.text for item in items if isinstance(item, ThinkingChunk))


def test_answer_after_calculator_result_reports_it() -> None:
    text = answer(run(*with_tool_results("what is 17*23?")))
    assert text.startswith("> what is 17*23?\n\nThe calculator says `17*23` = **391**.\n\n")


def test_numbers_without_operators_make_no_tool_call() -> None:
    assert tool_calls(run(user("I have 3 cats and 2 dogs [demo tokens=10 rate=1000]"))) == []


@pytest.mark.parametrize(
    "message", ["What time is it?", "Check the CLOCK", "Который час?", "Сколько времени?", "Скажи время"]
)
def test_asking_for_the_time_makes_a_clock_call(message: str) -> None:
    assert tool_calls(run(user(message))) == [ToolCall("call_1", "clock", {})]


@pytest.mark.parametrize("message", ["Sometimes I wonder", "timeout errors again"])
def test_words_containing_time_make_no_clock_call(message: str) -> None:
    assert tool_calls(run(user(message))) == []


def test_arithmetic_and_time_make_two_calls_in_one_step() -> None:
    assert tool_calls(run(user("what is 2+2 and what time is it?"))) == [
        ToolCall("call_1", "calculator", {"expression": "2+2"}),
        ToolCall("call_2", "clock", {}),
    ]


def test_answer_after_clock_result_tells_the_time() -> None:
    text = answer(run(*with_tool_results("what is 2+2 and what time is it?")))
    assert "The calculator says `2+2` = **4**.\n\nThe clock says it is 2026-11-24T12:00:00Z." in text


def test_failed_tool_is_reported_with_its_error() -> None:
    call = ToolCall("call_1", "calculator", {"expression": "1/0"})
    items = run(
        user("what is 1/0?"),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="error: division by zero", tool_call_id="call_1"),
    )
    assert 'The calculator tool failed: "division by zero".' in answer(items)


def test_tool_call_ids_continue_after_earlier_calls() -> None:
    earlier = ToolCall("call_1", "clock", {})
    items = run(
        user("what time is it?"),
        Message(role="assistant", content="", tool_calls=(earlier,)),
        Message(role="tool", content="2026-11-24T12:00:00Z", tool_call_id="call_1"),
        Message(role="assistant", content="It is noon."),
        user("and what is 6*7?"),
    )
    assert tool_calls(items) == [ToolCall("call_2", "calculator", {"expression": "6*7"})]


@pytest.mark.parametrize("tokens", [61, 200, 1000])
def test_tokens_sets_the_answer_length(tokens: int) -> None:
    assert len(text_chunks(run(user(f"hi [demo tokens={tokens}]")))) == tokens


def test_answer_is_never_shorter_than_the_quote() -> None:
    message = "one two three four five [demo tokens=2]"
    assert answer(run(user(message))) == quote(message)


def test_fail_after_raises_after_exactly_that_many_text_chunks() -> None:
    items: list[StreamItem] = []
    with pytest.raises(ProviderError) as failure:
        for item in DemoProvider(sleep=no_sleep).stream(request(user("hi [demo fail_after=5]"))):
            items.append(item)
    assert len(text_chunks(items)) == 5
    assert not any(isinstance(item, Usage) for item in items)
    assert str(failure.value) == (
        "The demo model failed after 5 tokens, as the message asked ([demo fail_after=5])."
    )


def test_fail_after_beyond_the_answer_length_still_fails() -> None:
    items: list[StreamItem] = []
    with pytest.raises(ProviderError):
        stream = DemoProvider(sleep=no_sleep).stream(request(user("hi [demo tokens=10 fail_after=70]")))
        for item in stream:
            items.append(item)
    assert len(text_chunks(items)) == 70


def test_fail_after_spares_the_tool_step() -> None:
    items = run(user("what is 17*23? [demo fail_after=3]"))
    assert isinstance(items[-1], Usage)
    assert len(tool_calls(items)) == 1


def test_usage_is_the_last_item_and_counts_words_and_output() -> None:
    items = run(user("please say something nice"))
    assert items[-1] == Usage(input_tokens=4, output_tokens=len(items) - 1)
    assert not any(isinstance(item, Usage) for item in items[:-1])


def test_usage_counts_every_message_and_each_tool_call() -> None:
    items = run(user("hi there"), Message(role="assistant", content="hello you"), user("what time is it?"))
    assert items[-1] == Usage(input_tokens=8, output_tokens=len(items) - 1)


def test_usage_input_is_at_least_one_token() -> None:
    items = run(user(""))
    assert items[-1].input_tokens == 1  # type: ignore[union-attr]


def test_two_runs_give_identical_items() -> None:
    for message in ("what is 17*23 and what time is it?", "Привет 👋 [demo tokens=120]"):
        assert run(user(message)) == run(user(message))
    conversation = with_tool_results("what is 17*23?")
    assert run(*conversation) == run(*conversation)


def test_stream_waits_one_over_rate_before_each_token() -> None:
    waits: list[float] = []
    items = list(DemoProvider(sleep=waits.append).stream(request(user("hi [demo rate=4 tokens=10]"))))
    assert waits == [0.25] * (len(items) - 1)


def test_stream_uses_default_rate_when_rate_is_invalid() -> None:
    waits: list[float] = []
    provider = DemoProvider(sleep=waits.append, default_rate=20.0)
    list(provider.stream(request(user("hi [demo rate=0 tokens=10]"))))
    assert set(waits) == {0.05}


def test_high_rate_streams_with_real_waits() -> None:
    items = list(DemoProvider().stream(request(user("hi [demo rate=100000 tokens=300]"))))
    assert len(text_chunks(items)) == 300


def test_close_from_another_thread_ends_a_slow_stream_early() -> None:
    message = "hello [demo rate=5 tokens=100]"
    full_length = len(run(user(message)))
    stream = DemoProvider().stream(request(user(message)))
    closer = threading.Timer(0.3, stream.close)
    closer.start()
    items = list(stream)
    closer.join()
    assert len(items) < full_length
    assert not any(isinstance(item, Usage) for item in items)


def test_closed_stream_yields_nothing_and_close_can_repeat() -> None:
    stream = DemoProvider(sleep=no_sleep).stream(request(user("hello")))
    stream.close()
    stream.close()
    assert list(stream) == []


@pytest.mark.parametrize("value", ["20001", "999999999", "9" * 5000])
def test_directive_counts_are_capped_and_never_overflow(value) -> None:
    from chalicelib.providers.demo import MAX_TOKENS, parse_directive

    directive = parse_directive(f"[demo tokens={value} fail_after={value}]")
    assert directive.tokens == directive.fail_after == MAX_TOKENS


def test_the_first_thinking_names_the_history_it_was_given() -> None:
    from chalicelib.providers.base import Message, ModelRequest, ThinkingChunk
    from chalicelib.providers.demo import DemoProvider

    messages = (Message("user", "a"), Message("assistant", "b"), Message("user", "c"),
                Message("assistant", "d"), Message("user", "next [demo tokens=3 rate=100000]"))
    items = list(DemoProvider(sleep=lambda _: None).stream(ModelRequest("demo", messages)))
    thinking = "".join(i.text for i in items if isinstance(i, ThinkingChunk))
    assert thinking.startswith("history: 4 messages. ")
    alone = list(DemoProvider(sleep=lambda _: None).stream(
        ModelRequest("demo", (Message("user", "hi [demo tokens=3]"),))))
    assert "history:" not in "".join(i.text for i in alone if isinstance(i, ThinkingChunk))
