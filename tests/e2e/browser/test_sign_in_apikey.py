"""Signing in with an API key: `AUTH_MODE=apikey make run` and the page, in real Chromium (issue 12).

Every stack here is the real local stack in apikey mode; keys are the ones it prints or the ones
given to it in API_KEY_HASHES, as a person running it would have them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from chalicelib.auth import hash_api_key
from scripts.api_key import new_api_key
from scripts.local_auth import KEY_FILE_NAME
from scripts.loopback import new_http
from tests.e2e.browser.conftest import RUN_TIMEOUT_MS
from tests.e2e.browser.sign_in_page import QUICK_RUN, SIGN_IN_AGAIN, SignInPage
from tests.e2e.conftest import RunningStack, start_stack, stop_cleanly

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# The key the stack prints on a line of its own, indented.
PRINTED_KEY = re.compile(r"^ {4}(bc_[A-Za-z0-9_-]{40,})$", re.MULTILINE)
KEY_REJECTED = "That key was not accepted. Check it and try again."


def apikey_env(data_dir: Path, **more: str) -> dict[str, str]:
    """The environment of `AUTH_MODE=apikey make run`, keeping its data (and key file) in data_dir."""
    # API_KEY_HASHES="" : a value from the test runner's own environment must not leak in.
    return {"AUTH_MODE": "apikey", "API_KEY_HASHES": "", "BACKCHAT_DATA_DIR": str(data_dir), **more}


def printed_keys(stack: RunningStack) -> list[str]:
    return PRINTED_KEY.findall(stack.banner())


def sessions(stack: RunningStack, key: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with new_http() as http:
        return http.get(f"{stack.api_url}/api/chat/sessions", headers=headers, timeout=10)


class KeySignInPage(SignInPage):
    """The page with the API key form."""

    def __init__(self, page: Page, stack: RunningStack) -> None:
        super().__init__(page, stack.api_url, stack.web_url)

    def expect_form(self, message: str | None = None) -> None:
        expect(self.page.get_by_test_id("api-key-form")).to_be_visible()
        expect(self.page.get_by_test_id("app")).to_be_hidden()
        expect(self.page.get_by_test_id("api-key-input")).to_be_focused()
        expect(self.page.get_by_test_id("api-key-input")).to_have_attribute("type", "password")
        self.expect_message(message)

    def sign_in(self, key: str) -> None:
        self.page.get_by_test_id("api-key-input").fill(key)
        self.page.get_by_test_id("api-key-input").press("Enter")


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, str, Path]]:
    """`AUTH_MODE=apikey make run` with no keys given: the stack, the key it printed, its data dir."""
    data_dir = tmp_path_factory.mktemp("apikey-data")
    stack = start_stack(apikey_env(data_dir))
    try:
        [key] = printed_keys(stack)
        yield stack, key, data_dir
    finally:
        stop_cleanly(stack)


@pytest.fixture
def signin(page: Page, keyed_stack: tuple[RunningStack, str, Path]) -> KeySignInPage:
    return KeySignInPage(page, keyed_stack[0])


def test_make_run_in_apikey_mode_prints_a_new_key_once_and_keeps_only_its_digest(
    keyed_stack: tuple[RunningStack, str, Path],
) -> None:
    stack, key, data_dir = keyed_stack
    output = stack.banner()
    assert f'curl -H "Authorization: Bearer {key}" {stack.api_url}/api/chat/sessions' in output
    assert f"BACKCHAT_API_KEY={key}" in output
    assert f"open {stack.web_url}/ and paste it" in output
    key_file = (data_dir / KEY_FILE_NAME).read_text()
    assert key not in key_file
    assert f"local:{hash_api_key(key)}" in key_file.splitlines()
    assert (data_dir / KEY_FILE_NAME).stat().st_mode & 0o077 == 0

    assert sessions(stack, None).status_code == 401
    assert sessions(stack, key + "x").status_code == 401
    assert sessions(stack, key).status_code == 200


def test_the_page_asks_for_a_key_and_a_wrong_one_gets_a_message_and_the_form_again(
    signin: KeySignInPage,
) -> None:
    signin.goto()
    signin.expect_form()
    expect(signin.page.get_by_test_id("sign-in-title")).to_have_text("Sign in to backchat")

    signin.sign_in("bc_not-the-key")
    signin.expect_form(KEY_REJECTED)
    expect(signin.page.get_by_test_id("api-key-input")).to_have_value("")
    assert signin.stored_credentials() is None
    # Chromium logs each 401 as a failed resource load; nothing else may go wrong.
    assert [error for error in signin.console_errors if "status of 401" not in error] == []


def test_the_right_key_is_kept_sent_on_every_call_and_survives_a_reload(
    signin: KeySignInPage, keyed_stack: tuple[RunningStack, str, Path],
) -> None:
    _, key, _ = keyed_stack
    signin.goto()
    signin.expect_form()
    before = len(signin.api_requests)
    signin.sign_in(key)
    signin.expect_chat()
    assert signin.stored_credentials() == {"kind": "apikey", "key": key}
    expect(signin.page.get_by_test_id("sign-out")).to_be_visible()
    first = signin.run_turn("Signed in with the printed key.")

    signin.page.reload()
    signin.expect_chat()
    expect(signin.turns).to_have_count(1)
    expect(signin.turns.first).to_have_attribute("data-session-id", first["sessionId"])
    signin.run_turn("Still signed in after a reload.")

    sent = signin.api_requests[before:]
    assert {request.method for request in sent} == {"GET", "POST"}
    assert any("/events" in request.url for request in sent)
    assert [r.url for r in sent if r.headers.get("authorization") != f"Bearer {key}"] == []


def test_sign_out_forgets_the_key_and_this_browsers_copy_of_the_conversations(
    signin: KeySignInPage, keyed_stack: tuple[RunningStack, str, Path],
) -> None:
    _, key, _ = keyed_stack
    signin.goto()
    signin.sign_in(key)
    signin.expect_chat()
    signin.run_turn("Soon forgotten here.")
    assert "backchat.v2.conversations" in signin.local_data()

    signin.page.get_by_test_id("sign-out").click()
    signin.expect_form()
    assert signin.local_data() == []
    assert "#" not in signin.page.url

    # Signed in again: a new chat, and the conversation is listed again from the server.
    signin.sign_in(key)
    signin.expect_chat()
    expect(signin.turns).to_have_count(0)
    expect(signin.conversation_item(f"Soon forgotten here. {QUICK_RUN}")).to_have_count(1)


def test_restart_keeps_the_key_and_a_replaced_key_brings_the_form_back_and_the_turn_resumes(
    page: Page, launch_stack: Callable[..., RunningStack], tmp_path: Path,
) -> None:
    first = launch_stack(apikey_env(tmp_path))
    [key] = printed_keys(first)
    ports = (first.api_port, int(first.web_url.rsplit(":", 1)[1]), int(first.ddb_url.rsplit(":", 1)[1]))
    signin = KeySignInPage(page, first)
    signin.goto()
    signin.sign_in(key)
    signin.expect_chat()
    signin.run_turn("Before the restart.")
    stop_cleanly(first)

    # A later start finds the key file: it says so and prints no key (it has none to print).
    second = launch_stack(apikey_env(tmp_path), ports)
    output = second.banner()
    assert printed_keys(second) == [] and key not in output
    assert f"the keys in {tmp_path / KEY_FILE_NAME}" in output
    signin.page.reload()
    signin.expect_chat()
    signin.run_turn("After the restart, same key.")
    stop_cleanly(second)

    # Reconfigured with another key for the same owner: the old one is revoked.
    new_key = new_api_key()
    third = launch_stack(apikey_env(tmp_path, API_KEY_HASHES=f"local:{hash_api_key(new_key)}"), ports)
    assert "the 1 key(s) in API_KEY_HASHES" in third.banner()
    assert printed_keys(third) == []
    signin.send(f"Sent with a revoked key. {QUICK_RUN}")
    signin.expect_form(SIGN_IN_AGAIN)
    turn = signin.turns.last
    expect(turn).to_have_attribute("data-status", "sending")

    signin.sign_in(key)
    signin.expect_form(KEY_REJECTED)
    with signin.page.expect_response(signin.is_start, timeout=RUN_TIMEOUT_MS) as started:
        signin.sign_in(new_key)
    signin.expect_chat()
    assert started.value.status == 202
    assert started.value.request.headers["authorization"] == f"Bearer {new_key}"
    signin.wait_for_status(turn, "done")
    expect(turn.get_by_test_id("user-text")).to_have_text(f"Sent with a revoked key. {QUICK_RUN}")
    assert signin.stored_credentials() == {"kind": "apikey", "key": new_key}
    stop_cleanly(third)


def test_two_owners_in_two_browsers_each_see_only_their_own_sessions(
    browser: Browser, launch_stack: Callable[..., RunningStack], tmp_path: Path,
) -> None:
    keys = {"alice": new_api_key(), "bob": new_api_key()}
    hashes = ",".join(f"{owner}:{hash_api_key(key)}" for owner, key in keys.items())
    stack = launch_stack(apikey_env(tmp_path, API_KEY_HASHES=hashes))
    assert "the 2 key(s) in API_KEY_HASHES" in stack.banner() and printed_keys(stack) == []

    started: dict[str, dict[str, Any]] = {}
    pages: dict[str, KeySignInPage] = {}
    for owner, key in keys.items():
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(RUN_TIMEOUT_MS)
        pages[owner] = KeySignInPage(page, stack)
        pages[owner].goto()
        pages[owner].sign_in(key)
        pages[owner].expect_chat()
        started[owner] = pages[owner].run_turn(f"A message from {owner}.")
    try:
        for owner, other in (("alice", "bob"), ("bob", "alice")):
            signin = pages[owner]
            expect(signin.turns).to_have_count(1)
            expect(signin.page.get_by_test_id("user-text")).to_have_text(f"A message from {owner}. {QUICK_RUN}")
            # With the key this page keeps: its own session is there, the other owner's is not.
            listed = signin.page.evaluate(
                """async (api) => {
                    const { key } = JSON.parse(localStorage.getItem("backchat.v1.auth"));
                    const headers = { Authorization: `Bearer ${key}` };
                    const list = await (await fetch(`${api}/api/chat/sessions`, { headers })).json();
                    return list.sessions.map((session) => session.id);
                }""",
                stack.api_url,
            )
            assert listed == [started[owner]["sessionId"]]
            status = signin.page.evaluate(
                """async ([api, id]) => {
                    const { key } = JSON.parse(localStorage.getItem("backchat.v1.auth"));
                    const response = await fetch(`${api}/api/chat/session/${id}`,
                                                 { headers: { Authorization: `Bearer ${key}` } });
                    return response.status;
                }""",
                [stack.api_url, started[other]["sessionId"]],
            )
            assert status == 404
    finally:
        for signin in pages.values():
            signin.page.context.close()
    stop_cleanly(stack)
