"""The model's input for a turn, built from its conversation's turns."""
from __future__ import annotations

from chalicelib.history import model_messages
from chalicelib.records import HistoryTurn, Turn, TurnEnding, TurnInput


def turn(number: int, answer: str | None, history: tuple[HistoryTurn, ...] = ()) -> Turn:
    ending = None if answer is None else TurnEnding(f"s{number}", "done", "t", answer=answer)
    return Turn(TurnInput(f"s{number}", f"2026-01-0{number}", "demo", f"m{number}", history),
                ending)


def roles_and_texts(messages) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


def test_earlier_turns_come_oldest_first_then_the_new_message() -> None:
    newest_first = [turn(3, None), turn(2, "a2"), turn(1, "a1")]
    assert roles_and_texts(model_messages(newest_first, 1000)) == [
        ("user", "m1"), ("assistant", "a1"), ("user", "m2"), ("assistant", "a2"), ("user", "m3")]


def test_a_turn_without_answer_text_is_left_out() -> None:
    newest_first = [turn(3, None), turn(2, ""), turn(1, "a1")]
    assert roles_and_texts(model_messages(newest_first, 1000)) == [
        ("user", "m1"), ("assistant", "a1"), ("user", "m3")]


def test_only_the_most_recent_whole_turns_that_fit_are_sent() -> None:
    newest_first = [turn(3, None), turn(2, "a2"), turn(1, "a1")]
    assert roles_and_texts(model_messages(newest_first, 4)) == [
        ("user", "m2"), ("assistant", "a2"), ("user", "m3")]


def test_the_input_never_starts_with_the_assistant() -> None:
    imported = (HistoryTurn("assistant", "hello, I am a bot"), HistoryTurn("user", "hi"),
                HistoryTurn("assistant", "how can I help"))
    alone = model_messages([turn(1, None, imported)], 1000)
    assert roles_and_texts(alone) == [("user", "hi"), ("assistant", "how can I help"),
                                      ("user", "m1")]
    # The budget cuts the import between a user message and its answer.
    cut = model_messages([turn(2, None), turn(1, "ans1", (HistoryTurn("user", "q0"),
                                                          HistoryTurn("assistant", "a0")))], 8)
    assert roles_and_texts(cut) == [("user", "m1"), ("assistant", "ans1"), ("user", "m2")]
