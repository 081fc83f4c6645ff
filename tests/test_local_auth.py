"""`make run`'s auth (scripts/local_auth.py), its key file (scripts/api_key.py) and the page's config."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.auth import Authenticator, hash_api_key, parse_key_hashes
from scripts import local_stack
from scripts.api_key import hash_entry, local_keys, main, new_api_key
from scripts.local_auth import KEY_FILE_NAME, AuthSetupError, local_auth
from scripts.page_config import PageConfigError, UserPoolSignIn, config_module

API = "http://127.0.0.1:8000"
WEB_PORT = 8080
COGNITO_ENV = {
    "AUTH_MODE": "cognito",
    "COGNITO_USER_POOL_ARN": "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_abc",
    "COGNITO_DOMAIN": "https://backchat-dev.auth.eu-west-1.amazoncognito.com",
    "COGNITO_CLIENT_ID": "1h2g3f4e5d",
}


def owner_of(hashes: str, key: str) -> str:
    return Authenticator("apikey", key_hashes=parse_key_hashes(hashes)).owner(
        {"authorization": f"Bearer {key}"}, None)


def test_none_is_the_default_with_the_page_on_the_loopback_address(tmp_path: Path) -> None:
    auth = local_auth({}, API, WEB_PORT, tmp_path)
    assert (auth.mode, auth.variables, auth.page_host, auth.user_pool, auth.notice) == (
        "none", {"AUTH_MODE": "none"}, "127.0.0.1", None, "")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_mode_is_refused_by_name() -> None:
    with pytest.raises(AuthSetupError, match="AUTH_MODE must be one of none, apikey, cognito, not 'keys'"):
        local_auth({"AUTH_MODE": "keys"}, API, WEB_PORT, None)


def test_apikey_without_keys_makes_one_for_the_local_owner_and_prints_it_once(tmp_path: Path) -> None:
    first = local_auth({"AUTH_MODE": "apikey"}, API, WEB_PORT, tmp_path)
    [key] = [line.strip() for line in first.notice.splitlines() if line.startswith("    bc_")]
    assert owner_of(first.variables["API_KEY_HASHES"], key) == "local"
    assert f'curl -H "Authorization: Bearer {key}" {API}/api/chat/sessions' in first.notice
    assert f"open http://127.0.0.1:{WEB_PORT}/" in first.notice
    stored = (tmp_path / KEY_FILE_NAME).read_text()
    assert key not in stored and hash_api_key(key) in stored

    again = local_auth({"AUTH_MODE": "apikey"}, API, WEB_PORT, tmp_path)
    assert again.variables == first.variables
    assert key not in again.notice and "bc_" not in again.notice
    assert str(tmp_path / KEY_FILE_NAME) in again.notice and "delete that file" in again.notice


def test_a_line_added_to_the_key_file_is_another_owner(tmp_path: Path) -> None:
    local_auth({"AUTH_MODE": "apikey", "LOCAL_OWNER": "me"}, API, WEB_PORT, tmp_path)
    bob_key = new_api_key()
    with (tmp_path / KEY_FILE_NAME).open("a") as file:
        file.write(f"\n# bob's laptop\n{hash_entry('bob', bob_key)}\n")
    hashes = local_auth({"AUTH_MODE": "apikey"}, API, WEB_PORT, tmp_path).variables["API_KEY_HASHES"]
    assert [entry.owner_id for entry in parse_key_hashes(hashes)] == ["me", "bob"]
    assert owner_of(hashes, bob_key) == "bob"


def test_a_broken_key_file_is_named_not_replaced(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("local:not-a-digest\n")
    with pytest.raises(AuthSetupError, match=KEY_FILE_NAME):
        local_auth({"AUTH_MODE": "apikey"}, API, WEB_PORT, tmp_path)
    assert (tmp_path / KEY_FILE_NAME).read_text() == "local:not-a-digest\n"


def test_api_key_hashes_from_the_environment_win_and_nothing_is_written(tmp_path: Path) -> None:
    key = new_api_key()
    env = {"AUTH_MODE": "apikey", "API_KEY_HASHES": hash_entry("alice", key)}
    auth = local_auth(env, API, WEB_PORT, tmp_path)
    assert auth.variables["API_KEY_HASHES"] == env["API_KEY_HASHES"]
    assert "1 key(s) in API_KEY_HASHES" in auth.notice and "bc_" not in auth.notice
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(AuthSetupError, match="owner:sha256-hex"):
        local_auth({"AUTH_MODE": "apikey", "API_KEY_HASHES": "alice:123"}, API, WEB_PORT, tmp_path)


def test_with_the_data_in_memory_the_key_is_kept_nowhere() -> None:
    auth = local_auth({"AUTH_MODE": "apikey"}, API, WEB_PORT, None)
    assert "kept nowhere" in auth.notice
    [key] = [line.strip() for line in auth.notice.splitlines() if line.startswith("    bc_")]
    assert owner_of(auth.variables["API_KEY_HASHES"], key) == "local"


def test_cognito_serves_the_page_on_localhost_with_the_user_pool() -> None:
    auth = local_auth(COGNITO_ENV, API, WEB_PORT, None)
    assert auth.variables == {"AUTH_MODE": "cognito"}
    assert auth.page_host == "localhost"
    assert auth.user_pool == UserPoolSignIn(COGNITO_ENV["COGNITO_DOMAIN"], "1h2g3f4e5d",
                                            f"http://localhost:{WEB_PORT}/")
    assert "signature" in auth.notice  # says what local cognito mode does not check


@pytest.mark.parametrize("missing", ["COGNITO_USER_POOL_ARN", "COGNITO_DOMAIN", "COGNITO_CLIENT_ID"])
def test_cognito_names_what_it_is_missing(missing: str) -> None:
    env = {name: value for name, value in COGNITO_ENV.items() if name != missing}
    with pytest.raises(AuthSetupError, match=f"AUTH_MODE=cognito needs {missing}"):
        local_auth(env, API, WEB_PORT, None)


def test_page_config_names_the_user_pool_only_when_there_is_one() -> None:
    assert config_module(API) == f'export const API_BASE = "{API}";\n'.encode()
    user_pool = UserPoolSignIn.checked("https://id.example.com/", "client", "https://chat.example.com/",
                                       ["openid"])
    module = config_module(API, user_pool).decode().splitlines()
    assert module[0] == f'export const API_BASE = "{API}";'
    prefix = "export const COGNITO = "
    assert module[1].startswith(prefix) and module[1].endswith(";")
    assert json.loads(module[1][len(prefix):-1]) == {
        "domain": "https://id.example.com", "clientId": "client",
        "redirectUri": "https://chat.example.com/", "scopes": ["openid"]}


@pytest.mark.parametrize("domain, client_id, redirect, scopes, complaint", [
    ("http://id.example.com", "c", "https://chat.example.com/", ["openid"], "user pool domain"),
    ("https://id.example.com/path", "c", "https://chat.example.com/", ["openid"], "without a path"),
    ("https://id.example.com", "two words", "https://chat.example.com/", ["openid"], "one word"),
    ("https://id.example.com", "c", "https://chat.example.com/#x", ["openid"], "redirect URI"),
    ("https://id.example.com", "c", "https://chat.example.com/", ["email"], "openid"),
])
def test_page_config_refuses_what_the_page_could_not_sign_in_with(
    domain: str, client_id: str, redirect: str, scopes: list[str], complaint: str,
) -> None:
    with pytest.raises(PageConfigError, match=complaint):
        UserPoolSignIn.checked(domain, client_id, redirect, scopes)


def test_key_command_prints_a_key_and_the_entry_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["carol"]) == 0
    key_line, entry_line = capsys.readouterr().out.splitlines()
    key = key_line.rsplit(" ", 1)[1]
    assert key.startswith("bc_") and len(key) > 40
    assert entry_line == f"API_KEY_HASHES entry: carol:{hash_api_key(key)}"
    for bad in ([], ["a:b"], ["a,b"], ["a", "b"]):
        assert main(bad) == 2


def test_local_keys_never_write_the_key_itself(tmp_path: Path) -> None:
    made = local_keys(tmp_path / "keys", "local")
    assert made.new_key and made.new_key not in (tmp_path / "keys").read_text()
    assert local_keys(tmp_path / "keys", "local").new_key is None
    assert [path.name for path in tmp_path.iterdir()] == ["keys"]  # no partial file left behind


def test_a_local_stage_that_sets_auth_mode_is_refused_since_it_would_override_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps({
        "version": "2.0", "app_name": "backchat",
        "stages": {"local": {"environment_variables": {"AUTH_MODE": "none"}}},
    }))
    monkeypatch.setattr(local_stack, "REPO_ROOT", tmp_path)
    auth = local_auth({"AUTH_MODE": "apikey"}, API, WEB_PORT, tmp_path)
    with pytest.raises(local_stack.StackError, match="sets AUTH_MODE for stage 'local'"):
        local_stack.stage_environment({"AUTH_MODE": "apikey", **auth.variables}, auth.variables)
    # The project's own local stage leaves the mode to the environment.
    monkeypatch.undo()
    app_env = local_stack.stage_environment({"AUTH_MODE": "apikey", **auth.variables}, auth.variables)
    assert app_env["AUTH_MODE"] == "apikey"
    assert app_env["API_KEY_HASHES"] == auth.variables["API_KEY_HASHES"]
