"""The model's input for a turn: the conversation so far, newest turns first until the budget.

Each earlier turn contributes its message and its answer (the partial answer of a cancelled or
failed turn too). A turn that ended without any answer text is left out: the user saw no
answer there either, and the model would otherwise see a question it never answered. An
imported history (the `history` of a conversation's first start) comes before the first turn.
Only whole turns are sent, the most recent that fit in `max_bytes` (UTF-8 bytes of the texts);
older ones stay in the conversation, just not in the model's input. The input always starts
with a user message (Bedrock's Converse refuses one that starts with the assistant), so
assistant messages at the very start of what fits are left out.
"""
from __future__ import annotations

from typing import Iterable

from chalicelib.providers.base import Message
from chalicelib.records import HistoryTurn, Turn


def model_messages(turns_newest_first: Iterable[Turn], max_bytes: int) -> list[Message]:
    """Return the messages for the first turn given (the one to run), oldest first.

    `turns_newest_first` starts with the turn to run and goes back in time; it is read only
    as far as the budget reaches.
    """
    turns = iter(turns_newest_first)
    current = next(turns)
    earlier: list[HistoryTurn] = []  # newest first
    used = 0
    imported = current.input.history
    for turn in turns:
        answer = turn.ending.answer if turn.ending is not None else ""
        if answer:
            size = _size(turn.input.message) + _size(answer)
            if used + size > max_bytes:
                imported = ()
                break
            earlier += [HistoryTurn("assistant", answer), HistoryTurn("user", turn.input.message)]
            used += size
        imported = turn.input.history
    for entry in reversed(imported):
        if used + _size(entry.content) > max_bytes:
            break
        earlier.append(entry)
        used += _size(entry.content)
    oldest_first = list(reversed(earlier))
    while oldest_first and oldest_first[0].role != "user":
        oldest_first.pop(0)
    messages = [Message(entry.role, entry.content) for entry in oldest_first]  # type: ignore[arg-type]
    messages.append(Message("user", current.input.message))
    return messages


def _size(text: str) -> int:
    return len(text.encode("utf-8"))
