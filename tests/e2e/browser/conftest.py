"""Fixtures for the page's tests: the system's Chromium, driven by Playwright, against the local stack.

browser -> context (locale, viewport) -> page (screenshot on failure) -> chat (the app, loaded).
`local_stack` comes from tests/e2e/conftest.py. A failing test leaves a full-page screenshot in
test-artifacts/ (or $BACKCHAT_TEST_ARTIFACTS), named after the test.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Request, expect, sync_playwright

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningStack

CHROMIUM = os.environ.get("BACKCHAT_CHROMIUM", "/usr/bin/chromium")
# No sandbox: tests run as root in containers. The rest keeps Chromium from phoning home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS_VARIABLE = "BACKCHAT_TEST_ARTIFACTS"
START_PATH = "/api/chat/session"
# A run lasts a few seconds and the page long-polls; this leaves room for a slow machine.
RUN_TIMEOUT_MS = 30_000

# Loopback traffic must not go through a proxy named in the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the test item, so the page fixture knows whether the test failed."""
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


def artifacts_dir(config: pytest.Config) -> Path:
    return Path(os.environ.get(ARTIFACTS_VARIABLE) or config.rootpath / "test-artifacts")


def screenshot_path(config: pytest.Config, nodeid: str) -> Path:
    """Return where the failure screenshot of a test goes: its node id made into a file name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")
    return artifacts_dir(config) / f"{name}.png"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: `make chromium` installs Debian's chromium "
                    f"(or set BACKCHAT_CHROMIUM to another Chromium binary)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def locale() -> str:
    """The browser's language; override with @pytest.mark.parametrize or a module fixture."""
    return "en-US"


@pytest.fixture
def viewport() -> dict[str, int]:
    return {"width": 1280, "height": 800}


@pytest.fixture
def context(browser: Browser, locale: str, viewport: dict[str, int]) -> Iterator[BrowserContext]:
    context = browser.new_context(locale=locale, viewport=viewport)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab; if the test fails, a screenshot of it is saved before it closes."""
    page = context.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    yield page
    report = request.node.stash.get(PHASE_REPORTS, {}).get("call")
    if report is not None and report.failed and not page.is_closed():
        path = screenshot_path(request.config, request.node.nodeid)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failed page: {path}")


class ChatPage:
    """The chat page as a test sees it: actions, and what the page and the API say."""

    def __init__(self, page: Page, api_url: str, web_url: str) -> None:
        self.page = page
        self.api_url = api_url.rstrip("/")
        self.web_url = web_url
        self.dialogs: list[str] = []
        # What the page's confirm() gets: dismissed unless a test accepts it.
        self.accept_dialogs = False
        self.console_errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if self.accept_dialogs:
            dialog.accept()
        else:
            dialog.dismiss()

    def open(self) -> None:
        self.page.goto(self.web_url)
        expect(self.page.get_by_test_id("message-input")).to_be_editable()

    def send(self, text: str) -> None:
        """Type a message and press Enter."""
        self.page.get_by_test_id("message-input").fill(text)
        self.page.get_by_test_id("message-input").press("Enter")

    def send_and_capture_start(self, text: str) -> tuple[Request, dict[str, Any]]:
        """Send a message; return the start request and the API's answer to it."""
        with self.page.expect_response(self.is_start) as response_info:
            self.send(text)
        response = response_info.value
        return response.request, response.json()

    @property
    def start_url(self) -> str:
        return self.api_url + START_PATH

    def is_start(self, response: Any) -> bool:
        return response.request.method == "POST" and response.url == self.start_url

    @property
    def turns(self) -> Locator:
        return self.page.get_by_test_id("turn")

    def wait_for_status(self, turn: Locator, status: str) -> None:
        expect(turn).to_have_attribute("data-status", status, timeout=RUN_TIMEOUT_MS)

    def wait_until_nothing_runs(self) -> None:
        """Wait until no conversation in the sidebar has a run going."""
        expect(self.page.get_by_test_id("conversation-running")).to_have_count(0, timeout=RUN_TIMEOUT_MS)

    def wait_for_partial_answer(self, turn: Locator) -> None:
        """Wait until some of the answer is shown while the run is still going."""
        turn.get_by_test_id("answer").wait_for(state="attached")
        self.page.wait_for_function(
            """turn => turn.dataset.status === "running"
                && turn.querySelector('[data-testid="answer"]').textContent.length > 0""",
            arg=turn.element_handle(),
        )

    def api(self, path: str) -> dict[str, Any]:
        """GET a path of the API, as the page would, and return the JSON answer."""
        with NO_PROXY.open(self.api_url + path, timeout=10) as response:
            return json.load(response)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send a request to the API as another client would; return its status and JSON body."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with NO_PROXY.open(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def session(self, session_id: str) -> dict[str, Any]:
        return self.api(f"/api/chat/session/{session_id}")

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return self.api(f"/api/chat/conversations/{conversation_id}")

    def cached_conversations(self) -> list[dict[str, Any]]:
        """Return the conversations the page keeps in localStorage (its cache)."""
        return self.page.evaluate("JSON.parse(localStorage.getItem('backchat.v2.conversations')) || []")

    def stored_turn(self, turn_id: str) -> dict[str, Any]:
        """Return a turn as the page keeps it in localStorage."""
        for conversation in self.cached_conversations():
            for turn in conversation["turns"] or []:
                if turn["id"] == turn_id:
                    return turn
        raise AssertionError(f"turn {turn_id} is not in localStorage")

    def conversation_item(self, title: str) -> Locator:
        """The sidebar's entry of the conversation with exactly this title."""
        return self.page.get_by_test_id("conversation-item").filter(
            has=self.page.locator(".conversation-title", has_text=re.compile(f"^{re.escape(title)}$")))

    def refocus(self) -> None:
        """Give the window the focus again, as coming back to it from another one does."""
        self.page.evaluate("window.dispatchEvent(new Event('focus'))")

    def rendered_markdown_text(self, markdown: str) -> str:
        """Return the text the page's own renderer makes of markdown (to compare with what it shows)."""
        return self.page.evaluate(
            """async (markdown) => {
                const { renderMarkdown } = await import(new URL("view.js", location.href));
                const box = document.createElement("div");
                box.append(renderMarkdown(markdown));
                return box.textContent;
            }""",
            markdown,
        )

    def hrefs(self) -> list[str]:
        """Return every href attribute in the document."""
        return self.page.eval_on_selector_all("[href]", "nodes => nodes.map(n => n.getAttribute('href'))")


@pytest.fixture
def chat(page: Page, local_stack: RunningStack) -> ChatPage:
    """The page, loaded from the local stack with nothing stored yet (each test has a new context)."""
    chat = ChatPage(page, local_stack.api_url, local_stack.web_url)
    chat.open()
    return chat
