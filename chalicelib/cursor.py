"""Opaque list cursors: a position in one of an owner's lists, signed so that only the server
can make one.

A cursor is URL-safe base64 of a small JSON document (version, list kind, owner, position)
followed by `.` and an HMAC-SHA256 of it (128 bits) under the deployment's CURSOR_SECRET.
A cursor that does not verify, belongs to another list or another owner, or is malformed is
a 400, whatever it says.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from chalicelib.errors import InvalidRequest

_VERSION = 2
_TAG_BYTES = 16
# Used where no CURSOR_SECRET is configured: the local stack and the tests. Settings refuse
# to run a deployed stage without one.
LOCAL_SECRET = "backchat-local-cursor-secret"


class CursorCodec:
    """Encodes and verifies the cursors of one deployment."""

    def __init__(self, secret: str) -> None:
        self._key = (secret or LOCAL_SECRET).encode("utf-8")

    def encode(self, kind: str, owner_id: str, position: dict[str, str]) -> str:
        """Return the cursor for a position in the owner's list of this kind."""
        payload = json.dumps({"v": _VERSION, "k": kind, "o": owner_id, "p": position},
                             separators=(",", ":"), sort_keys=True).encode("utf-8")
        return f"{_b64(payload)}.{_b64(self._tag(payload))}"

    def decode(self, cursor: str, kind: str, owner_id: str, hint: str) -> dict[str, str]:
        """Return the position in a cursor; raise InvalidRequest (saying `hint`) if it is not
        one this server issued for this list and owner."""
        bad = InvalidRequest(f"cursor is not one this server issued for this list; {hint}")
        body, _, tag = cursor.partition(".")
        try:
            payload, signature = _unb64(body), _unb64(tag)
        except (ValueError, binascii.Error):
            raise bad from None
        if not hmac.compare_digest(signature, self._tag(payload)):
            raise bad
        try:
            document = json.loads(payload)
        except ValueError:
            raise bad from None
        position = document.get("p") if isinstance(document, dict) else None
        if (
            document.get("v") != _VERSION
            or document.get("k") != kind
            or document.get("o") != owner_id
            or not isinstance(position, dict)
            or not all(isinstance(k, str) and isinstance(v, str) and v
                       for k, v in position.items())
        ):
            raise bad
        return position

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
