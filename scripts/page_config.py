"""The page's config.js: where the API is and, optionally, which Cognito user pool signs in.

The local page server (scripts/static_site.py) and scripts/upload_site.py both write it from
here, so the page reads the same shape wherever it is served. The page's Content-Security-Policy
must let it fetch from the API and, with a user pool, from the hosted UI's token endpoint:
`connect_origins` says which origins those are.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_SCOPES = ("openid", "email", "profile")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


class PageConfigError(ValueError):
    """A value the page's config cannot hold; the message names it."""


@dataclass(frozen=True)
class UserPoolSignIn:
    """A Cognito user pool's hosted UI, as the page signs in with it (authorization code + PKCE)."""

    domain: str  # an origin: https://<prefix>.auth.<region>.amazoncognito.com, or a custom domain
    client_id: str  # an app client without a secret
    redirect_uri: str  # the page's address, registered as a callback and a sign-out URL
    scopes: tuple[str, ...] = field(default=DEFAULT_SCOPES)

    @classmethod
    def checked(cls, domain: str, client_id: str, redirect_uri: str,
                scopes: tuple[str, ...] | list[str] = DEFAULT_SCOPES) -> "UserPoolSignIn":
        """Return the config with a clean domain; raise PageConfigError naming a bad value."""
        domain_origin = _origin("the user pool domain", domain)
        _origin("the redirect URI", redirect_uri, path_allowed=True)
        if not client_id.strip() or any(c.isspace() for c in client_id.strip()):
            raise PageConfigError(f"the app client id must be one word, not {client_id!r}")
        scope_list = tuple(scope for scope in scopes if scope)
        if "openid" not in scope_list:
            raise PageConfigError("the scopes must include openid: the page sends the ID token")
        return cls(domain_origin, client_id.strip(), redirect_uri, scope_list)

    def as_module_value(self) -> dict[str, object]:
        return {"domain": self.domain, "clientId": self.client_id,
                "redirectUri": self.redirect_uri, "scopes": list(self.scopes)}


def _origin(what: str, url: str, path_allowed: bool = False) -> str:
    """Return url's origin; it must be https, or http on a loopback host (the tests' stand-in)."""
    parts = urlsplit(url.strip())
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
    extra = parts.query or parts.fragment or (parts.path not in ("", "/") and not path_allowed)
    if not secure or not parts.netloc or extra:
        suffix = "" if path_allowed else " and without a path"
        raise PageConfigError(f"{what} must be an https URL without query{suffix}, not {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def config_module(api_base: str, user_pool: UserPoolSignIn | None = None) -> bytes:
    """Return config.js: `API_BASE`, and `COGNITO` when a user pool signs the page in."""
    lines = [f"export const API_BASE = {json.dumps(api_base)};"]
    if user_pool is not None:
        lines.append(f"export const COGNITO = {json.dumps(user_pool.as_module_value())};")
    return ("\n".join(lines) + "\n").encode()


def connect_origins(api_base: str, user_pool: UserPoolSignIn | None = None) -> tuple[str, ...]:
    """Return what the page's CSP `connect-src` needs besides 'self': the API and the token endpoint."""
    return (api_base,) if user_pool is None else (api_base, user_pool.domain)
