"""A small OAuth 2.0 authorization server for the page's tests: a stand-in for Cognito's hosted UI.

Not shipped. It implements what the page uses, as Cognito does, and checks it strictly:

- `GET /oauth2/authorize`: authorization code flow only, PKCE with S256 required, the client and
  the exact redirect URI registered; it answers with a sign-in form (a user name, no password),
  whose POST to `/login` redirects back with `code` and `state` (or, on Cancel, with
  `error=access_denied`).
- `POST /oauth2/token`: `authorization_code` (single-use code, same client and redirect URI, the
  verifier must hash to the challenge) and `refresh_token` (new ID and access tokens, no new
  refresh token, as Cognito); failures are 400 with an OAuth `error`.
- `POST /oauth2/revoke` and `GET /logout`, as Cognito's.

Tokens are JWTs shaped like Cognito's (`sub`, `cognito:username`, `aud`, `iss`, `token_use`,
`iat`, `exp`), signed HS256 with a secret of this server: `chalice local` reads the claims of a
Cognito user pool token without checking its signature. Everything is recorded for the tests.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CODE_LIFETIME_SECONDS = 60
VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_claims(token: str) -> dict[str, Any]:
    """Return a JWT's claims (unverified): what the tests read from the page's requests."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@dataclass
class Grant:
    """One token request: what was asked, and whether it was granted."""

    grant_type: str
    ok: bool
    error: str = ""
    username: str = ""
    pkce_verified: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    username: str
    scope: str
    expires_at: float
    used: bool = False


@dataclass
class _PendingSignIn:
    redirect_uri: str
    state: str
    challenge: str
    scope: str


@dataclass
class OAuthRecord:
    """What happened at the server, for assertions."""

    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    logouts: list[dict[str, str]] = field(default_factory=list)
    id_tokens: list[str] = field(default_factory=list)


class OAuthServer(ThreadingHTTPServer):
    """The authorization server, on 127.0.0.1; `start()` serves it on a thread, `close()` stops it."""

    daemon_threads = True

    def __init__(self, client_id: str, redirect_uri: str, token_lifetime_seconds: int,
                 port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        page = urlsplit(redirect_uri)
        self.page_origin = f"{page.scheme}://{page.netloc}"
        self.token_lifetime_seconds = token_lifetime_seconds
        self.record = OAuthRecord()
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._subjects: dict[str, str] = {}
        self._pending: dict[str, _PendingSignIn] = {}
        self._codes: dict[str, _Code] = {}
        # refresh token -> username, while it is valid; and once revoked (to say whose was refused)
        self._refresh_tokens: dict[str, str] = {}
        self._revoked: dict[str, str] = {}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "OAuthServer":
        self._thread = threading.Thread(target=self.serve_forever, name="oauth-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- users and tokens -------------------------------------------------------------

    def subject(self, username: str) -> str:
        """Return the user's `sub`: stable per user name, as a user pool's."""
        with self._lock:
            return self._subjects.setdefault(username, str(uuid.uuid4()))

    def id_token(self, username: str, sub: str | None = None) -> str:
        """Mint an ID token for a user (or any `sub`), as the token endpoint would."""
        now = int(time.time())
        claims = {
            "sub": sub or self.subject(username),
            "cognito:username": username,
            "email": f"{username}@example.com",
            "aud": self.client_id,
            "iss": self.url,
            "token_use": "id",
            "auth_time": now,
            "iat": now,
            "exp": now + self.token_lifetime_seconds,
        }
        token = self._sign(claims)
        with self._lock:
            self.record.id_tokens.append(token)
        return token

    def revoke_refresh_tokens(self, username: str) -> None:
        """Make every refresh token of a user invalid (as an admin's global sign-out would)."""
        with self._lock:
            for token in [t for t, user in self._refresh_tokens.items() if user == username]:
                self._revoked[token] = self._refresh_tokens.pop(token)
                self.record.revoked.append(token)

    def _sign(self, claims: dict[str, Any]) -> str:
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "test"}).encode())
        payload = b64url(json.dumps(claims).encode())
        signature = hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64url(signature)}"

    def _tokens(self, username: str, scope: str, with_refresh: bool) -> dict[str, Any]:
        now = int(time.time())
        answer: dict[str, Any] = {
            "id_token": self.id_token(username),
            "access_token": self._sign({"sub": self.subject(username), "username": username,
                                        "client_id": self.client_id, "scope": scope,
                                        "token_use": "access", "iat": now,
                                        "exp": now + self.token_lifetime_seconds}),
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_seconds,
        }
        if with_refresh:
            refresh_token = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh_tokens[refresh_token] = username
            answer["refresh_token"] = refresh_token
        return answer

    # -- endpoints --------------------------------------------------------------------

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], str]:
        """Return (status, headers, html) for GET /oauth2/authorize."""
        self.record.authorize_requests.append(query)
        if query.get("client_id") != self.client_id or query.get("redirect_uri") != self.redirect_uri:
            # Never redirect to a URI that is not registered: say so on the server's own page.
            return 400, {}, "<h1>unknown client or redirect_uri</h1>"
        state = query.get("state", "")
        if query.get("response_type") != "code":
            return self._redirect_error("unsupported_response_type", state)
        challenge = query.get("code_challenge", "")
        if query.get("code_challenge_method") != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge):
            return self._redirect_error("invalid_request", state)
        request_id = secrets.token_urlsafe(16)
        with self._lock:
            self._pending[request_id] = _PendingSignIn(self.redirect_uri, state, challenge,
                                                       query.get("scope", ""))
        page = f"""<!doctype html><title>Sign in (test hosted UI)</title>
<form method="post" action="/login">
  <input type="hidden" name="request" value="{html.escape(request_id)}">
  <label>User name <input name="username" data-testid="hosted-username" required></label>
  <button type="submit" name="action" value="sign-in" data-testid="hosted-sign-in">Sign in</button>
  <button type="submit" name="action" value="cancel" data-testid="hosted-cancel" formnovalidate>Cancel</button>
</form>"""
        return 200, {}, page

    def login(self, form: dict[str, str]) -> tuple[int, dict[str, str], str]:
        """Return the redirect back to the page for POST /login (the form above)."""
        with self._lock:
            pending = self._pending.pop(form.get("request", ""), None)
        if pending is None:
            return 400, {}, "<h1>unknown sign-in request</h1>"
        if form.get("action") == "cancel":
            return self._redirect_error("access_denied", pending.state, "The user cancelled the sign-in")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(self.client_id, pending.redirect_uri, pending.challenge,
                                      form.get("username", "") or "anonymous", pending.scope,
                                      time.time() + CODE_LIFETIME_SECONDS)
        return self._redirect({"code": code, "state": pending.state})

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Return (status, JSON) for POST /oauth2/token."""
        grant_type = form.get("grant_type", "")
        if form.get("client_id") != self.client_id or "client_secret" in form:
            return self._refuse(grant_type, "invalid_client")
        if grant_type == "authorization_code":
            return self._exchange_code(form)
        if grant_type == "refresh_token":
            refresh_token = form.get("refresh_token", "")
            with self._lock:
                username = self._refresh_tokens.get(refresh_token)
                revoked_from = self._revoked.get(refresh_token, "")
            if username is None:
                return self._refuse(grant_type, "invalid_grant", revoked_from)
            self.record.grants.append(Grant(grant_type, True, username=username))
            return 200, self._tokens(username, "openid", with_refresh=False)
        return self._refuse(grant_type, "unsupported_grant_type")

    def _exchange_code(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            code = self._codes.get(form.get("code", ""))
            valid = code is not None and not code.used and code.expires_at > time.time()
            if code is not None:
                code.used = True  # single use, even when this exchange fails
        if not valid or form.get("redirect_uri") != code.redirect_uri:
            return self._refuse("authorization_code", "invalid_grant")
        verifier = form.get("code_verifier", "")
        if not VERIFIER.match(verifier) or b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
            return self._refuse("authorization_code", "invalid_grant")
        self.record.grants.append(Grant("authorization_code", True, username=code.username,
                                        pkce_verified=True))
        return 200, self._tokens(code.username, code.scope, with_refresh=True)

    def revoke(self, form: dict[str, str]) -> int:
        """Revoke a refresh token (POST /oauth2/revoke); 200 whether or not it was known, as RFC 7009."""
        if form.get("client_id") != self.client_id:
            return 400
        with self._lock:
            username = self._refresh_tokens.pop(form.get("token", ""), None)
            if username is not None:
                self._revoked[form["token"]] = username
                self.record.revoked.append(form["token"])
        return 200

    def logout(self, query: dict[str, str]) -> tuple[int, dict[str, str], str]:
        self.record.logouts.append(query)
        if query.get("client_id") != self.client_id or query.get("logout_uri") != self.redirect_uri:
            return 400, {}, "<h1>unknown client or logout_uri</h1>"
        return 302, {"Location": self.redirect_uri}, ""

    def _refuse(self, grant_type: str, error: str, username: str = "") -> tuple[int, dict[str, Any]]:
        self.record.grants.append(Grant(grant_type, False, error=error, username=username))
        return 400, {"error": error}

    def _redirect(self, params: dict[str, str]) -> tuple[int, dict[str, str], str]:
        return 302, {"Location": f"{self.redirect_uri}?{urlencode(params)}"}, ""

    def _redirect_error(self, error: str, state: str, description: str = "") -> tuple[int, dict[str, str], str]:
        params = {"error": error, "state": state}
        if description:
            params["error_description"] = description
        return self._redirect(params)


class _Handler(BaseHTTPRequestHandler):
    server: OAuthServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        if parts.path == "/oauth2/authorize":
            self._page(*self.server.authorize(query))
        elif parts.path == "/logout":
            self._page(*self.server.logout(query))
        else:
            self._page(404, {}, "<h1>not found</h1>")

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8")
        form = {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}
        if path == "/login":
            self._page(*self.server.login(form))
        elif path == "/oauth2/token":
            status, payload = self.server.token(form)
            self._send(status, "application/json", json.dumps(payload).encode(), cors=True)
        elif path == "/oauth2/revoke":
            self._send(self.server.revoke(form), "application/json", b"", cors=True)
        else:
            self._page(404, {}, "<h1>not found</h1>")

    def _page(self, status: int, headers: dict[str, str], text: str) -> None:
        self._send(status, "text/html; charset=utf-8", text.encode(), extra=headers)

    def _send(self, status: int, content_type: str, body: bytes, extra: dict[str, str] | None = None,
              cors: bool = False) -> None:
        self.send_response(HTTPStatus(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if cors and self.headers.get("Origin") == self.server.page_origin:
            # As Cognito's token endpoint: the page calls it from its own origin.
            self.send_header("Access-Control-Allow-Origin", self.server.page_origin)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
