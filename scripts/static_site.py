"""The local page server: frontend/ read-only, a generated config.js, strict headers."""
from __future__ import annotations

from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from scripts.page_config import UserPoolSignIn, config_module, connect_origins

CONFIG_MODULE_PATH = "/config.js"

# Explicit, so the answer never depends on the machine's mime.types (a `.js` served as
# text/plain is refused as a module script under nosniff).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
    ".woff2": "font/woff2",
    ".webmanifest": "application/manifest+json",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def content_security_policy(api_base: str, *other_origins: str) -> str:
    """Return the page's CSP: its own origin only, plus fetches to the API (and the token endpoint)."""
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src 'self' {' '.join((api_base, *other_origins))}",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ])


class StaticSite(ThreadingHTTPServer):
    """Serve the files under `root` on one address, and `/config.js` naming the API (and user pool)."""

    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a page loads many modules.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        root: Path,
        api_base: str,
        log: Callable[[str], None],
        user_pool: UserPoolSignIn | None = None,
    ) -> None:
        self.root = root.resolve()
        self.log = log
        self.config_module = config_module(api_base, user_pool)
        self.security_headers = {
            "Content-Security-Policy": content_security_policy(*connect_origins(api_base, user_pool)),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        super().__init__(address, StaticSiteHandler)

    def resolve(self, url_path: str) -> Path | None:
        """Return the file a URL path names inside root, or None (missing, hidden or outside)."""
        relative = unquote(url_path)
        if "\x00" in relative or "\\" in relative:
            return None
        if relative.endswith("/"):
            relative += "index.html"
        parts = [part for part in relative.split("/") if part]
        # A part starting with "." is "..", "." or a dotfile: none of them is a page asset.
        if not parts or any(part.startswith(".") for part in parts):
            return None
        candidate = self.root.joinpath(*parts).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate


class StaticSiteHandler(BaseHTTPRequestHandler):
    """GET and HEAD for a StaticSite; one short log line per request."""

    server: StaticSite
    server_version = "backchat-static"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        self._serve(include_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(include_body=False)

    def _serve(self, include_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == CONFIG_MODULE_PATH:
            self._send(HTTPStatus.OK, CONTENT_TYPES[".js"], self.server.config_module, include_body)
            return
        file = self.server.resolve(path)
        body = _read(file) if file is not None else None
        if file is None or body is None:
            self._send(HTTPStatus.NOT_FOUND, CONTENT_TYPES[".txt"], b"Not found\n", include_body)
            return
        content_type = CONTENT_TYPES.get(file.suffix.lower(), DEFAULT_CONTENT_TYPE)
        self._send(HTTPStatus.OK, content_type, body, include_body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, include_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if include_body:
            self.wfile.write(body)

    def end_headers(self) -> None:
        # Every response, errors from http.server included, carries the security headers.
        for name, value in self.server.security_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = code.value if isinstance(code, HTTPStatus) else code
        # A request line that failed to parse leaves command and path unset.
        method = self.command or "-"
        path = getattr(self, "path", "-")
        self.server.log(f"{_printable(method)} {_printable(path)} {status}")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        self.server.log(_printable(format % args))


def _read(file: Path) -> bytes | None:
    try:
        return file.read_bytes()
    except OSError:
        return None


def _printable(text: str) -> str:
    """Escape control characters so a request cannot write escape sequences to the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
