"""The SSE parser: line endings, multi-line data, comments, fields, and bytes split anywhere."""
from __future__ import annotations

import pytest

from chalicelib.providers.sse import (
    SSEParser,
    SSEProtocolError,
    ServerSentEvent,
    iter_events,
)

STREAM = (
    ": a comment the server sends to keep the connection open\n"
    "data: first\n"
    "\n"
    "event: update\n"
    "id: 7\n"
    "data: line one\n"
    "data:line two without a space\n"
    "data:  two spaces keep one\n"
    "retry: 1000\n"
    "\n"
    "data: Привет, 世界 👋🏽 e\u0301\n"
    "\n"
).encode("utf-8")

EXPECTED = [
    ServerSentEvent("first"),
    ServerSentEvent("line one\nline two without a space\n two spaces keep one", "update", "7"),
    # The id stays the last one seen, as the spec says.
    ServerSentEvent("Привет, 世界 👋🏽 e\u0301", "message", "7"),
]


def parse(*chunks: bytes) -> list[ServerSentEvent]:
    return list(iter_events(chunks))


def test_parses_fields_comments_and_multi_line_data() -> None:
    assert parse(STREAM) == EXPECTED


@pytest.mark.parametrize("ending", ["\r\n", "\r", "\n"], ids=["crlf", "cr", "lf"])
def test_every_line_ending_gives_the_same_events(ending: str) -> None:
    assert parse(STREAM.replace(b"\n", ending.encode())) == EXPECTED


@pytest.mark.parametrize("ending", ["\r\n", "\r", "\n"], ids=["crlf", "cr", "lf"])
def test_bytes_split_at_every_position_give_the_same_events(ending: str) -> None:
    data = STREAM.replace(b"\n", ending.encode())
    for split in range(len(data) + 1):
        assert parse(data[:split], data[split:]) == EXPECTED, f"split at byte {split}"


def test_one_byte_at_a_time_gives_the_same_events() -> None:
    assert parse(*(STREAM[i:i + 1] for i in range(len(STREAM)))) == EXPECTED


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\n") == [ServerSentEvent("a")]
    assert parser.feed(b"data: b\r") == []
    # The "\n" completing "\r\n" must not count as a second, empty line.
    assert parser.feed(b"\ndata: c\n\n") == [ServerSentEvent("b\nc")]


def test_last_event_without_blank_line_is_delivered_at_the_end() -> None:
    assert parse(b"data: a\n\ndata: [DONE]") == [ServerSentEvent("a"), ServerSentEvent("[DONE]")]
    assert parse(b"data: [DONE]\n") == [ServerSentEvent("[DONE]")]


def test_utf8_character_split_across_reads_is_decoded_whole() -> None:
    emoji = "👋".encode("utf-8")
    assert parse(b"data: " + emoji[:1], emoji[1:3], emoji[3:] + b"\n\n") == [ServerSentEvent("👋")]


def test_empty_data_is_an_event_but_no_data_is_none() -> None:
    assert parse(b"data:\n\n") == [ServerSentEvent("")]
    assert parse(b"event: ping\n\n: only a comment\n\n\n\n") == []


def test_a_field_name_alone_has_an_empty_value_and_unknown_fields_are_ignored() -> None:
    assert parse(b"data\ndata: x\nfoo: bar\n\n") == [ServerSentEvent("\nx")]


def test_leading_byte_order_mark_is_dropped() -> None:
    assert parse(b"\xef\xbb\xbfdata: a\n\n") == [ServerSentEvent("a")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert parse(b"data: a\xffb\n\n") == [ServerSentEvent("a\ufffdb")]


def test_a_line_beyond_the_limit_is_a_protocol_error() -> None:
    parser = SSEParser(max_line_chars=10)
    with pytest.raises(SSEProtocolError):
        parser.feed(b"data: " + b"x" * 20)
