"""Opaque list cursors: the position in an owner's sessions, bound to that owner."""
from __future__ import annotations

import base64
import binascii
import json

from chalicelib.errors import InvalidRequest

_VERSION = 1
_BAD_CURSOR = "cursor is not one this server issued; omit it to start from the newest session"


def encode_cursor(key: dict[str, str]) -> str:
    """Return the cursor text for a list position (the owner index key)."""
    payload = {"v": _VERSION, "id": key["id"], "o": key["ownerId"], "c": key["createdAt"]}
    raw = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, owner_id: str) -> dict[str, str]:
    """Return the list position in a cursor; raise InvalidRequest if it is not ours or not the caller's."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidRequest(_BAD_CURSOR) from None
    if (
        not isinstance(payload, dict)
        or set(payload) != {"v", "id", "o", "c"}
        or payload["v"] != _VERSION
        or not all(isinstance(payload[k], str) and payload[k] for k in ("id", "o", "c"))
        or payload["o"] != owner_id
    ):
        raise InvalidRequest(_BAD_CURSOR)
    return {"id": payload["id"], "ownerId": payload["o"], "createdAt": payload["c"]}
