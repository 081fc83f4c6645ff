"""EventWriter: seq numbering, delta merging, flush order, answer and usage, cancel."""
from __future__ import annotations

import pytest

from chalicelib.errors import CancelRequested
from chalicelib.records import CANCELLED, DELTA, DONE, THINKING, TOOL_CALL, TOOL_RESULT, TokenUsage
from chalicelib.store import SessionStore
from chalicelib.writer import EventWriter, FlushPolicy
from tests.builders import log, start, stored_answer


class FakeMonotonic:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def ticks() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def writer(store: SessionStore, ticks: FakeMonotonic) -> EventWriter:
    start(store)
    session = store.claim_lease("s1", "a1")
    return EventWriter(store, session, "a1", policy=FlushPolicy(0.2, 50, 1.0, index_interval=5.0),
                       monotonic=ticks)


def events(store: SessionStore) -> list[tuple[int, str, str | None]]:
    return [(e.seq, e.event_type, e.content) for e in log(store)]


def test_chunks_within_the_interval_merge_into_one_event(writer, store, ticks) -> None:
    ticks.advance(1)  # a quiet spell: the first chunk goes out at once
    writer.append_delta("Hel")
    for chunk in ("lo", ", ", "wor"):
        ticks.advance(0.05)
        writer.append_delta(chunk)
    ticks.advance(0.1)
    writer.append_delta("ld")
    assert events(store) == [(1, DELTA, "Hel"), (2, DELTA, "lo, world")]


def test_merged_text_waits_for_tick_when_the_model_pauses(writer, store, ticks) -> None:
    ticks.advance(1)
    writer.append_delta("a")
    ticks.advance(0.01)
    writer.append_delta("b")
    writer.tick()
    assert events(store) == [(1, DELTA, "a")]
    ticks.advance(0.2)
    writer.tick()
    assert events(store) == [(1, DELTA, "a"), (2, DELTA, "b")]


def test_size_cap_flushes_before_the_interval(writer, store, ticks) -> None:
    ticks.advance(1)
    writer.append_delta("x")
    writer.append_delta("y" * 60)
    # The cap (50) is also the most one event holds: the rest waits for the interval.
    assert events(store) == [(1, DELTA, "x"), (2, DELTA, "y" * 50)]


def test_switching_between_thinking_and_delta_flushes(writer, store, ticks) -> None:
    writer.append_thinking("hmm ")
    writer.append_thinking("ok")
    writer.append_delta("Answer")
    writer.finish_done()
    assert events(store) == [(1, THINKING, "hmm ok"), (2, DELTA, "Answer"), (3, DONE, None)]


def test_tool_call_flushes_pending_text_first(writer, store) -> None:
    writer.append_delta("Let me compute. ")
    writer.append_tool_call("c1", "calculator", {"expression": "1+1"})
    writer.append_tool_result("c1", "2")
    page = log(store)
    assert [(e.seq, e.event_type) for e in page] == [(1, DELTA), (2, TOOL_CALL), (3, TOOL_RESULT)]
    assert (page[1].tool_name, page[1].tool_input, page[2].content) == (
        "calculator", {"expression": "1+1"}, "2")


def test_answer_is_the_exact_concatenation_of_deltas(writer, store, ticks) -> None:
    chunks = ["При", "вет", " e", "\u0301", " 👩🏽", "\u200d💻", " 你", "好", "!"]
    for chunk in chunks:
        ticks.advance(0.07)
        writer.append_delta(chunk)
    writer.finish_done()
    text = "".join(c for _, kind, c in events(store) if kind == DELTA)
    assert text == "".join(chunks) == writer.answer
    assert stored_answer(store) == "".join(chunks)


def test_done_carries_summed_usage(writer, store) -> None:
    writer.add_usage(TokenUsage(10, 5))
    writer.add_usage(TokenUsage(12, 7))
    writer.finish_done()
    done = log(store)[-1]
    assert done.usage == TokenUsage(22, 12)
    assert store.get("s1").usage.total_tokens == 34


def test_delta_created_at_is_the_first_merged_chunk(writer, store, ticks, monkeypatch) -> None:
    from chalicelib import clock

    wall = [clock.now_ms()]
    start = wall[0]
    monkeypatch.setattr(clock, "now_ms", lambda: wall[0])
    writer.append_delta("first")  # merged: the lease claim counts as a recent write
    wall[0] += 150
    writer.append_delta(" second")
    ticks.advance(0.3)
    writer.tick()
    (event,) = log(store)
    assert event.created_at == clock.iso_from_ms(start)


def test_quiet_run_renews_the_lease_on_tick(writer, store, ticks) -> None:
    before = store.get("s1").updated_at
    ticks.advance(1.0)
    writer.tick()
    assert store.get("s1").updated_at >= before
    assert events(store) == []


def test_cancel_keeps_the_unwritten_text_in_the_cancelled_ending(writer, store, ticks) -> None:
    ticks.advance(1)
    writer.append_delta("partial ")
    store.request_cancel("s1")
    writer.append_delta("more")
    ticks.advance(0.3)
    with pytest.raises(CancelRequested):
        writer.tick()
    writer.finish_cancelled()
    assert events(store) == [(1, DELTA, "partial "), (2, DELTA, "more"), (3, CANCELLED, None)]
    assert stored_answer(store) == "partial more"


def test_size_cap_splits_one_huge_chunk_over_several_events(writer, store, ticks) -> None:
    ticks.advance(1)
    writer.append_delta("x")
    writer.append_delta("😀" * 120)
    writer.finish_done()
    deltas = [c for _, kind, c in events(store) if kind == DELTA]
    assert deltas == ["x", "😀" * 50, "😀" * 50, "😀" * 20]
    assert stored_answer(store) == "x" + "😀" * 120


def test_the_reaper_index_moves_only_every_index_interval(writer, store, ticks) -> None:
    def reap_at() -> int:
        return store.models.session.get("s1", consistent_read=True).reapAt

    claimed_at = reap_at()
    for _ in range(4):
        ticks.advance(1.0)
        writer.tick()
    assert reap_at() == claimed_at
    ticks.advance(1.5)
    writer.tick()
    assert reap_at() > claimed_at


def test_the_answer_kept_for_the_ending_is_capped_but_the_events_hold_it_all(
        store, ticks) -> None:
    start(store)
    session = store.claim_lease("s1", "a1")
    writer = EventWriter(store, session, "a1", monotonic=ticks,
                         policy=FlushPolicy(0.2, 50, 1.0, max_answer_bytes=10))
    writer.append_delta("Жужжащий жук")  # 23 bytes in UTF-8
    writer.finish_done()
    assert stored_answer(store) == "Жужжа"
    assert "".join(c for _, kind, c in events(store) if kind == DELTA) == "Жужжащий жук"
