"""Signing in with a Cognito user pool's hosted UI, in real Chromium (issue 12).

The real local stack runs in AUTH_MODE=cognito; tests/oauth_server.py stands in for the hosted
UI (authorization code + PKCE, refresh, revoke, logout). `chalice local` reads an ID token's
claims without checking its signature, so the API's owner is the `sub` of whatever ID token the
page sends, as it is behind API Gateway's Cognito authorizer once deployed.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from scripts.loopback import free_ports, new_http
from tests.e2e.browser.sign_in_page import QUICK_RUN, SIGN_IN_AGAIN, SignInPage
from tests.e2e.conftest import RunningStack, start_stack, stop_cleanly
from tests.oauth_server import OAuthServer, jwt_claims

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CLIENT_ID = "backchat-page-test"
USER_POOL_ARN = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_PageTest"
# Short, so that a test sees the page refresh; the page refreshes a quarter of it (2 s) early.
TOKEN_LIFETIME_SECONDS = 8
REFRESH_DUE_SECONDS = TOKEN_LIFETIME_SECONDS * 3 / 4 + 0.5


@dataclass
class UserPoolStack:
    """The local stack in cognito mode, the stand-in hosted UI, and where the page is opened."""

    stack: RunningStack
    server: OAuthServer
    page_url: str


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserPoolStack]:
    api_port, web_port, ddb_port = free_ports(3)
    # Cognito allows plain-http callbacks only for localhost: the local stack serves the page there.
    page_url = f"http://localhost:{web_port}/"
    server = OAuthServer(CLIENT_ID, page_url, TOKEN_LIFETIME_SECONDS).start()
    try:
        stack = start_stack({
            "AUTH_MODE": "cognito",
            "COGNITO_USER_POOL_ARN": USER_POOL_ARN,
            "COGNITO_DOMAIN": server.url,
            "COGNITO_CLIENT_ID": CLIENT_ID,
            "BACKCHAT_DATA_DIR": str(tmp_path_factory.mktemp("cognito-data")),
        }, (api_port, web_port, ddb_port))
        try:
            yield UserPoolStack(stack, server, page_url)
        finally:
            stop_cleanly(stack)
    finally:
        server.close()


class UserPoolSignInPage(SignInPage):
    """The page whose sign-in goes through the (stand-in) hosted UI."""

    def __init__(self, page: Page, pool: UserPoolStack) -> None:
        super().__init__(page, pool.stack.api_url, pool.page_url)
        self.server = pool.server

    def expect_sign_in_screen(self, message: str | None = None) -> None:
        expect(self.page.get_by_test_id("user-pool-button")).to_be_visible()
        expect(self.page.get_by_test_id("api-key-form")).to_be_hidden()
        expect(self.page.get_by_test_id("app")).to_be_hidden()
        self.expect_message(message)

    def go_to_hosted_ui(self) -> dict[str, list[str]]:
        """Click Sign in; return the authorize request's query once the hosted UI's form shows."""
        self.page.get_by_test_id("user-pool-button").click()
        self.page.wait_for_url(f"{self.server.url}/oauth2/authorize?*")
        expect(self.page.get_by_test_id("hosted-username")).to_be_visible()
        return parse_qs(urlsplit(self.page.url).query)

    def sign_in_as(self, username: str) -> dict[str, list[str]]:
        query = self.go_to_hosted_ui()
        self.page.get_by_test_id("hosted-username").fill(username)
        self.page.get_by_test_id("hosted-sign-in").click()
        self.page.wait_for_url(self.web_url)
        self.expect_chat()
        return query

    def grants(self, username: str) -> list[tuple[str, bool]]:
        return [(g.grant_type, g.ok) for g in self.server.record.grants if g.username == username]


@pytest.fixture
def signin(page: Page, pool: UserPoolStack) -> UserPoolSignInPage:
    return UserPoolSignInPage(page, pool)


def test_signing_in_goes_through_the_hosted_ui_with_pkce_and_the_api_gets_the_id_token(
    signin: UserPoolSignInPage, pool: UserPoolStack,
) -> None:
    signin.goto()
    signin.expect_sign_in_screen()
    assert signin.api_requests == []  # nothing is asked of the API before signing in

    query = signin.sign_in_as("ada")
    assert {name: values[0] for name, values in query.items() if name != "state" and name != "code_challenge"} == {
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": pool.page_url,
        "scope": "openid email profile", "code_challenge_method": "S256",
    }
    assert len(query["code_challenge"][0]) == 43 and len(query["state"][0]) >= 16
    # The code and state are gone from the address: a reload cannot send the code again.
    assert signin.page.url == pool.page_url
    [exchange] = [g for g in pool.server.record.grants if g.username == "ada"]
    assert exchange.grant_type == "authorization_code" and exchange.ok and exchange.pkce_verified
    stored = signin.stored_credentials()
    assert stored["kind"] == "cognito" and stored["idToken"] in pool.server.record.id_tokens
    assert stored["refreshToken"]

    signin.run_turn("Signed in through the hosted UI.")
    signin.page.reload()
    signin.expect_chat()
    expect(signin.turns).to_have_count(1)
    signin.run_turn("Still signed in after a reload.")

    assert signin.grants("ada") == [("authorization_code", True)]
    tokens = {request.headers.get("authorization") for request in signin.api_requests}
    assert tokens == {stored["idToken"]}  # the ID token itself, no "Bearer": as the authorizer wants
    assert jwt_claims(stored["idToken"])["sub"] == pool.server.subject("ada")


def test_tokens_are_refreshed_before_they_expire_and_a_refused_refresh_asks_again(
    signin: UserPoolSignInPage, pool: UserPoolStack,
) -> None:
    signin.goto()
    signin.sign_in_as("grace")
    signed_in_at = time.monotonic()
    first_token = signin.stored_credentials()["idToken"]
    signin.run_turn("Before the refresh.")

    time.sleep(max(0.0, signed_in_at + REFRESH_DUE_SECONDS - time.monotonic()))
    signin.run_turn("After the refresh.")
    refreshed_at = time.monotonic()
    assert signin.grants("grace") == [("authorization_code", True), ("refresh_token", True)]
    stored = signin.stored_credentials()
    assert stored["idToken"] != first_token
    # Every request carried an ID token that had not expired when it was sent.
    for sent_at, request in signin.sent:
        claims = jwt_claims(request.headers["authorization"])
        assert claims["cognito:username"] == "grace"
        assert sent_at < claims["exp"], request.url
    assert signin.sent[-1][1].headers["authorization"] == stored["idToken"]

    # Revoked meanwhile (an admin's global sign-out): the next refresh is refused, the page asks again.
    pool.server.revoke_refresh_tokens("grace")
    time.sleep(max(0.0, refreshed_at + REFRESH_DUE_SECONDS - time.monotonic()))
    signin.send(f"Sent after the refresh token was revoked. {QUICK_RUN}")
    signin.expect_sign_in_screen(SIGN_IN_AGAIN)
    turn = signin.turns.last
    assert signin.stored_credentials() is None

    signin.sign_in_as("grace")
    signin.wait_for_status(turn, "done")
    assert signin.grants("grace")[-2:] == [("refresh_token", False), ("authorization_code", True)]


def test_an_answer_to_another_request_is_refused_and_a_cancelled_sign_in_says_so(
    signin: UserPoolSignInPage, pool: UserPoolStack,
) -> None:
    grants_before = len(pool.server.record.grants)
    signin.page.goto(f"{pool.page_url}?code=stolen-code&state=forged-state")
    signin.expect_sign_in_screen(
        "Sign-in did not complete: the answer was not for this browser's request. Try again.")
    assert signin.page.url == pool.page_url
    assert len(pool.server.record.grants) == grants_before  # the code was never sent anywhere

    signin.go_to_hosted_ui()
    signin.page.get_by_test_id("hosted-cancel").click()
    signin.page.wait_for_url(f"{pool.page_url}*")
    signin.expect_sign_in_screen("Sign-in did not complete: The user cancelled the sign-in")
    assert signin.page.url == pool.page_url
    assert len(pool.server.record.grants) == grants_before
    assert signin.stored_credentials() is None


def test_sign_out_revokes_the_refresh_token_ends_the_hosted_ui_session_and_forgets_this_browsers_copy(
    signin: UserPoolSignInPage, pool: UserPoolStack,
) -> None:
    signin.goto()
    signin.sign_in_as("linus")
    refresh_token = signin.stored_credentials()["refreshToken"]
    signin.run_turn("Forgotten at sign-out.")
    assert "backchat.v2.conversations" in signin.local_data()

    signin.page.get_by_test_id("sign-out").click()
    signin.page.wait_for_url(pool.page_url)
    signin.expect_sign_in_screen()
    assert pool.server.record.logouts[-1] == {"client_id": CLIENT_ID, "logout_uri": pool.page_url}
    assert refresh_token in pool.server.record.revoked
    assert signin.local_data() == []

    # Signed in again: a new chat, and the conversation is listed again from the server.
    signin.sign_in_as("linus")
    expect(signin.turns).to_have_count(0)
    expect(signin.conversation_item(f"Forgotten at sign-out. {QUICK_RUN}")).to_have_count(1)


def test_the_api_owner_is_the_id_tokens_sub(pool: UserPoolStack) -> None:
    api = pool.stack.api_url
    server = pool.server
    alice = server.id_token("alice")
    same_sub_other_name = server.id_token("not-alice", sub=server.subject("alice"))
    same_name_other_sub = server.id_token("alice", sub=str(uuid.uuid4()))
    with new_http() as http:
        started = http.post(f"{api}/api/chat/session", headers={"Authorization": alice},
                            json={"message": f"Whose is this? {QUICK_RUN}"}, timeout=10)
        assert started.status_code == 202, started.text
        session = f"{api}/api/chat/session/{started.json()['sessionId']}"
        assert http.get(session, headers={"Authorization": same_sub_other_name}, timeout=10).status_code == 200
        assert http.get(session, headers={"Authorization": same_name_other_sub}, timeout=10).status_code == 404
        assert http.get(session, timeout=10).status_code == 401


def test_make_run_in_cognito_mode_serves_the_page_on_localhost_with_the_user_pool_in_its_config(
    pool: UserPoolStack,
) -> None:
    with new_http() as http:
        config = http.get(f"{pool.page_url}config.js", timeout=10)
    assert f'export const COGNITO = {{"domain": "{pool.server.url}", "clientId": "{CLIENT_ID}", ' \
           f'"redirectUri": "{pool.page_url}", "scopes": ["openid", "email", "profile"]}};' in config.text
    csp = config.headers["Content-Security-Policy"]
    assert f"connect-src 'self' {pool.stack.api_url} {pool.server.url};" in csp
    assert f"page: {pool.page_url}" in pool.stack.banner()
