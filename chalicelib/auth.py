"""Who is calling: the owner id every session read and write is checked against.

Modes (AUTH_MODE): `none` — one local owner for every caller (the local stage);
`apikey` — `Authorization: Bearer <key>` or `X-Api-Key: <key>`, checked against SHA-256
hashes of the keys (API_KEY_HASHES = "owner:hexdigest,..."), never the keys themselves;
`cognito` — API Gateway's Cognito authorizer has checked the token; the owner is its `sub`.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Mapping

from chalicelib.errors import Forbidden, NotAuthenticated

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
FOREIGN_ORIGIN = ("This local server answers only its own page and clients on this machine "
                  "(AUTH_MODE=none): the request came from another site")
FOREIGN_HOST = ("This local server answers only requests addressed to the loopback address "
                "(AUTH_MODE=none)")
MAX_OWNER_CHARS = 128
MISSING_CREDENTIALS = "Send an API key as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'"
BAD_CREDENTIALS = "The API key is not valid"
NO_TOKEN = "Sign in: the request carries no valid identity token"


@dataclass(frozen=True)
class ApiKeyHash:
    """One accepted key, stored as the SHA-256 hex digest of the key, with its owner."""

    owner_id: str
    sha256: str


def hash_api_key(key: str) -> str:
    """Return the SHA-256 hex digest stored for a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key_hashes(text: str) -> tuple[ApiKeyHash, ...]:
    """Parse "owner:hexdigest,owner2:hexdigest2"; raise ValueError naming a bad entry."""
    entries = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        owner, _, digest = raw.rpartition(":")
        if (not owner or len(owner) > MAX_OWNER_CHARS or len(digest) != 64
                or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"API_KEY_HASHES entry {raw[:20]!r}… must be owner:sha256-hex")
        entries.append(ApiKeyHash(owner, digest))
    return tuple(entries)


class Authenticator:
    """Turns a request's headers and authorizer context into an owner id."""

    def __init__(self, mode: str, local_owner: str = "local",
                 key_hashes: tuple[ApiKeyHash, ...] = (), page_origin: str = "*") -> None:
        self._mode = mode
        self._local_owner = local_owner
        self._key_hashes = key_hashes
        self._page_origin = page_origin

    def check_origin(self, headers: Mapping[str, str]) -> None:
        """Refuse (Forbidden) what another web site could send a local server with no auth.

        In AUTH_MODE=none anyone who reaches the server is its owner, so it answers only
        requests addressed to the loopback address (a page on another site that rebinds its
        DNS name to 127.0.0.1 still sends its own name as Host) and, when a browser says where
        the request comes from (Origin), only the page's own origin (a loopback one when
        CORS_ORIGIN is `*`).
        """
        if self._mode != "none":
            return
        # Browsers always send Host; only a non-browser HTTP/1.0 client leaves it out.
        host = headers.get("host")
        if host is not None and _hostname(host) not in LOOPBACK_HOSTS:
            raise Forbidden(FOREIGN_HOST)
        origin = headers.get("origin")
        if origin is None:
            return
        if self._page_origin == "*":
            scheme, _, rest = origin.partition("://")
            if scheme in ("http", "https") and _hostname(rest) in LOOPBACK_HOSTS:
                return
        elif origin == self._page_origin:
            return
        raise Forbidden(FOREIGN_ORIGIN)

    def owner(self, headers: Mapping[str, str], context: Mapping[str, Any] | None) -> str:
        """Return the caller's owner id, or raise NotAuthenticated."""
        if self._mode == "none":
            return self._local_owner
        if self._mode == "apikey":
            return self._owner_of_key(_presented_key(headers))
        return _cognito_subject(context)

    def _owner_of_key(self, key: str | None) -> str:
        if not key:
            raise NotAuthenticated(MISSING_CREDENTIALS)
        digest = hash_api_key(key)
        owner = None
        for entry in self._key_hashes:
            # Compare every entry in constant time so timing reveals nothing about the keys.
            if hmac.compare_digest(entry.sha256, digest):
                owner = entry.owner_id
        if owner is None:
            raise NotAuthenticated(BAD_CREDENTIALS)
        return owner


def _hostname(host: str) -> str:
    """Return the host part of a Host header (or of an origin without its scheme)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip() or None


def _cognito_subject(context: Mapping[str, Any] | None) -> str:
    claims = ((context or {}).get("authorizer") or {}).get("claims") or {}
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise NotAuthenticated(NO_TOKEN)
    return subject
