"""The page as a person signing in sees it, for the sign-in tests (test_sign_in_*.py)."""
from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import Page, Request, expect

from tests.e2e.browser.conftest import ChatPage

# Short runs: these tests are about who is calling, not about streaming.
QUICK_RUN = "[demo tokens=20 rate=100]"
SIGN_IN_AGAIN = "The server no longer accepts your sign-in. Sign in again: unfinished answers carry on."


class SignInPage(ChatPage):
    """The chat page plus its sign-in screen; records every API request it sends, and when."""

    def __init__(self, page: Page, api_url: str, web_url: str) -> None:
        super().__init__(page, api_url, web_url)
        # (time sent, request), OPTIONS preflights left out.
        self.sent: list[tuple[float, Request]] = []
        page.on("request", self._on_request)

    def _on_request(self, request: Request) -> None:
        if request.url.startswith(self.api_url + "/api/") and request.method != "OPTIONS":
            self.sent.append((time.time(), request))

    @property
    def api_requests(self) -> list[Request]:
        return [request for _, request in self.sent]

    def goto(self) -> None:
        self.page.goto(self.web_url)

    def expect_chat(self) -> None:
        expect(self.page.get_by_test_id("message-input")).to_be_editable()
        expect(self.page.get_by_test_id("sign-in")).to_be_hidden()

    def expect_message(self, message: str | None) -> None:
        """The sign-in screen shows `message` (None: no message)."""
        if message is None:
            expect(self.page.get_by_test_id("sign-in-message")).to_be_hidden()
        else:
            expect(self.page.get_by_test_id("sign-in-message")).to_have_text(message)

    def run_turn(self, text: str) -> dict[str, Any]:
        """Send a message and wait until its turn is done; return the start's 202 body."""
        _, started = self.send_and_capture_start(f"{text} {QUICK_RUN}")
        self.wait_for_status(self.page.locator(f'[data-session-id="{started["sessionId"]}"]'), "done")
        return started

    def stored_credentials(self) -> Any:
        return self.page.evaluate("JSON.parse(localStorage.getItem('backchat.v1.auth'))")

    def local_data(self) -> list[str]:
        """Return the page's keys in localStorage."""
        return self.page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('backchat.'))")
