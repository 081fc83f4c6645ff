"""Auth modes and per-owner isolation: 401 without credentials, 404 for another owner's session."""
from __future__ import annotations

import json

import pytest

from chalicelib.auth import Authenticator, hash_api_key, parse_key_hashes
from chalicelib.errors import NotAuthenticated
from chalicelib.settings import Settings, SettingsError
from tests.fakes import RecordingDispatcher

ALICE_KEY = "alice-key-0123456789"
BOB_KEY = "bob-key-9876543210"
HASHES = f"alice:{hash_api_key(ALICE_KEY)},bob:{hash_api_key(BOB_KEY)}"
OWNER_ROUTES = [
    ("GET", "/api/chat/session/{id}"),
    ("GET", "/api/chat/session/{id}/events"),
    ("POST", "/api/chat/session/{id}/cancel"),
]
CONVERSATION_ROUTES = [
    ("GET", "/api/chat/conversations/{id}", b""),
    ("PATCH", "/api/chat/conversations/{id}", b'{"title": "mine now"}'),
    ("DELETE", "/api/chat/conversations/{id}", b""),
    ("POST", "/api/chat/session", None),  # a turn of it: the body names the conversation
]


@pytest.fixture
def settings() -> Settings:
    return Settings(dispatch_mode="inline", flush_interval=0.05, heartbeat_interval=0.2,
                    lease_seconds=5, deadline_margin_seconds=0.5, auth_mode="apikey",
                    api_key_hashes=HASHES)


def as_owner(key: str | None, scheme: str = "bearer") -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if key and scheme == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif key:
        headers["X-Api-Key"] = key
    return headers


def start(client, key: str) -> str:
    return start_turn(client, key)["sessionId"]


def start_turn(client, key: str) -> dict:
    response = client.http.post("/api/chat/session", headers=as_owner(key),
                                body=json.dumps({"message": "hi [demo rate=100000]"}))
    assert response.status_code == 202, response.body
    return response.json_body


@pytest.mark.parametrize("scheme", ["bearer", "x-api-key"])
def test_either_header_authenticates(client, scheme) -> None:
    response = client.http.get("/api/chat/sessions", headers=as_owner(ALICE_KEY, scheme))
    assert response.status_code == 200


ALL_OWNER_ROUTES = OWNER_ROUTES + [(m, p) for m, p, _ in CONVERSATION_ROUTES] + [
    ("GET", "/api/chat/sessions"), ("GET", "/api/chat/conversations"), ("GET", "/api/models")]


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
@pytest.mark.parametrize("method, path", ALL_OWNER_ROUTES)
def test_every_route_but_health_needs_a_valid_key_and_costs_no_read_without_one(
        client, key, method, path, monkeypatch) -> None:
    from botocore.client import BaseClient

    session_id = start(client, ALICE_KEY)
    calls: list[str] = []
    original = BaseClient._make_api_call

    def counting(self, operation, params):
        calls.append(operation)
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    response = client.http.request(method, path.format(id=session_id), headers=as_owner(key),
                                   body=json.dumps({"message": "hi"}).encode())
    assert response.status_code == 401
    assert response.json_body["Code"] == "UnauthorizedError"
    assert "API key" in response.json_body["Message"]
    assert calls == []  # refused before any DynamoDB request


def test_health_needs_no_key(client) -> None:
    assert client.http.get("/api/health").status_code == 200


@pytest.mark.parametrize("method, path", OWNER_ROUTES)
def test_another_owner_gets_404_exactly_like_an_unknown_session(client, method, path) -> None:
    session_id = start(client, ALICE_KEY)
    theirs = client.http.request(method, path.format(id=session_id), headers=as_owner(BOB_KEY),
                                 body=b"")
    unknown = client.http.request(method, path.format(id="x" * 22), headers=as_owner(BOB_KEY),
                                  body=b"")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json_body["Code"] == unknown.json_body["Code"]
    assert theirs.json_body["Message"].replace(session_id, "ID") == \
        unknown.json_body["Message"].replace("x" * 22, "ID")


@pytest.mark.parametrize("method, path, body", CONVERSATION_ROUTES)
def test_another_owners_conversation_is_404_exactly_like_an_unknown_one(
        client, method, path, body) -> None:
    conversation_id = start_turn(client, ALICE_KEY)["conversationId"]

    def ask(target: str):
        payload = body if body is not None else json.dumps(
            {"message": "a turn of yours [demo rate=100000]", "conversationId": target}).encode()
        return client.http.request(method, path.format(id=target), headers=as_owner(BOB_KEY),
                                   body=payload)

    theirs, unknown = ask(conversation_id), ask("y" * 22)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json_body["Message"].replace(conversation_id, "ID") == \
        unknown.json_body["Message"].replace("y" * 22, "ID")
    mine = client.http.get(f"/api/chat/conversations/{conversation_id}",
                           headers=as_owner(ALICE_KEY)).json_body
    assert (mine["title"], mine["turnCount"]) == ("hi [demo rate=100000]", 1)


def test_conversation_lists_show_only_the_callers(client) -> None:
    alice = {start_turn(client, ALICE_KEY)["conversationId"] for _ in range(2)}
    bob = {start_turn(client, BOB_KEY)["conversationId"]}
    listed = lambda key: {c["id"] for c in client.http.get(  # noqa: E731
        "/api/chat/conversations", headers=as_owner(key)).json_body["conversations"]}
    assert (listed(ALICE_KEY), listed(BOB_KEY)) == (alice, bob)


def test_lists_show_only_the_callers_sessions(client) -> None:
    alice = {start(client, ALICE_KEY) for _ in range(3)}
    bob = {start(client, BOB_KEY)}
    listed = lambda key: {s["id"] for s in client.http.get(  # noqa: E731
        "/api/chat/sessions", headers=as_owner(key)).json_body["sessions"]}
    assert (listed(ALICE_KEY), listed(BOB_KEY)) == (alice, bob)


def test_bobs_cancel_does_not_touch_alices_run(client, components, monkeypatch) -> None:
    monkeypatch.setattr(components.service, "_dispatcher", RecordingDispatcher())
    session_id = start(client, ALICE_KEY)
    client.http.post(f"/api/chat/session/{session_id}/cancel", headers=as_owner(BOB_KEY))
    assert components.store.get(session_id).cancel_requested is False


def test_running_cap_answers_429_with_a_message(client, components, monkeypatch) -> None:
    monkeypatch.setattr(components.service, "_dispatcher", RecordingDispatcher())
    monkeypatch.setattr(components.service, "_settings",
                        components.settings.with_overrides(max_running_per_owner=2))
    start(client, ALICE_KEY)
    start(client, ALICE_KEY)
    response = client.http.post("/api/chat/session", headers=as_owner(ALICE_KEY),
                                body=json.dumps({"message": "third"}))
    assert response.status_code == 429
    assert "2 sessions running" in response.json_body["Message"]
    assert start(client, BOB_KEY)  # the cap is per owner


def test_cognito_owner_is_the_token_subject() -> None:
    auth = Authenticator("cognito")
    context = {"authorizer": {"claims": {"sub": "1b2c-uuid", "email": "a@example.org"}}}
    assert auth.owner({}, context) == "1b2c-uuid"
    with pytest.raises(NotAuthenticated):
        auth.owner({}, {})


def test_none_mode_is_one_local_owner() -> None:
    assert Authenticator("none", "local").owner({}, None) == "local"


@pytest.mark.parametrize("text", ["alice", "alice:xyz", ":" + "a" * 64, "a:" + "G" * 64])
def test_malformed_key_hashes_are_refused(text) -> None:
    with pytest.raises(ValueError, match="owner:sha256-hex"):
        parse_key_hashes(text)


def test_settings_demand_what_each_auth_mode_needs() -> None:
    with pytest.raises(SettingsError, match="API_KEY_HASHES"):
        Settings.from_env({"AUTH_MODE": "apikey"})
    with pytest.raises(SettingsError, match="COGNITO_USER_POOL_ARN"):
        Settings.from_env({"AUTH_MODE": "cognito"})
