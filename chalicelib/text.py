"""Text bounded in UTF-8 bytes: what DynamoDB counts against its item limits."""
from __future__ import annotations

import json
from typing import Iterable


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Return text cut to at most max_bytes of UTF-8, on a character boundary."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


class BoundedText:
    """Text accumulated up to a size in UTF-8 bytes; what comes after is dropped."""

    def __init__(self, max_bytes: int) -> None:
        self._parts: list[str] = []
        self._room = max_bytes

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def add(self, piece: str) -> None:
        """Append a piece, or the part of it that still fits."""
        if self._room <= 0 or not piece:
            return
        piece = truncate_utf8(piece, self._room)
        self._parts.append(piece)
        self._room -= len(piece.encode("utf-8"))

    def with_more(self, pieces: Iterable[str]) -> str:
        """Return the text with more pieces added, leaving this one unchanged."""
        copy = BoundedText(0)
        copy._parts, copy._room = list(self._parts), self._room
        for piece in pieces:
            copy.add(piece)
        return copy.text


def json_text_bytes(text: str) -> int:
    """Return the bytes text takes in a JSON response (ASCII escapes, as Chalice writes it)."""
    return len(json.dumps(text))
