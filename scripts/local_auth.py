"""Who may call the local stack: its AUTH_MODE, the local owner's API key, the page's sign-in.

`make run` reads AUTH_MODE from the environment (default `none`):

- `none`: one local owner (LOCAL_OWNER, default `local`), no credentials.
- `apikey`: the keys in API_KEY_HASHES if the environment sets it; otherwise the key file in the
  data directory. With no key file yet, a key for the local owner is made, only its digest is
  kept, and the key is printed this once. The local owner is the one `none` mode uses, so the
  sessions made without a key are the key's too.
- `cognito`: a real user pool's hosted UI signs the page in (COGNITO_USER_POOL_ARN,
  COGNITO_DOMAIN, COGNITO_CLIENT_ID, optional COGNITO_SCOPES). Cognito accepts plain-http
  callback URLs only for `localhost`, so the page is served and opened as http://localhost:WEB_PORT/.
  `chalice local` reads the ID token's claims without checking its signature or expiry (API
  Gateway checks both when deployed), so local cognito mode is for trying the sign-in, not a
  boundary: the local stack listens on loopback only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from chalicelib.auth import parse_key_hashes
from chalicelib.settings import AUTH_MODES
from scripts.api_key import local_keys
from scripts.page_config import DEFAULT_SCOPES, PageConfigError, UserPoolSignIn

KEY_FILE_NAME = "api-key-hashes"
DEFAULT_LOCAL_OWNER = "local"
LOOPBACK_HOST = "127.0.0.1"
COGNITO_PAGE_HOST = "localhost"


class AuthSetupError(Exception):
    """The environment asks for an auth mode the local stack cannot set up; the message says why."""


@dataclass(frozen=True)
class LocalAuth:
    """The stack's auth: what the API's environment gets, where the page is opened, what to print."""

    mode: str
    # AUTH_MODE and, in apikey mode, API_KEY_HASHES: set for the API, over the environment's.
    variables: dict[str, str]
    page_host: str
    user_pool: UserPoolSignIn | None
    # Printed under the banner: how to sign in (and, once, the new key).
    notice: str


def local_auth(env: Mapping[str, str], api_base: str, web_port: int,
               data_dir: Path | None) -> LocalAuth:
    """Return the auth the environment asks for; raise AuthSetupError naming what is missing or wrong."""
    mode = env.get("AUTH_MODE", "").strip() or "none"
    if mode not in AUTH_MODES:
        raise AuthSetupError(f"AUTH_MODE must be one of {', '.join(AUTH_MODES)}, not {mode!r}")
    if mode == "apikey":
        return _api_keys(env, api_base, web_port, data_dir)
    if mode == "cognito":
        return _user_pool(env, web_port)
    return LocalAuth("none", {"AUTH_MODE": "none"}, LOOPBACK_HOST, None, "")


def page_base(host: str, web_port: int) -> str:
    return f"http://{host}:{web_port}"


def _api_keys(env: Mapping[str, str], api_base: str, web_port: int,
              data_dir: Path | None) -> LocalAuth:
    page = page_base(LOOPBACK_HOST, web_port)
    from_env = env.get("API_KEY_HASHES", "").strip()
    if from_env:
        try:
            count = len(parse_key_hashes(from_env))
        except ValueError as error:
            raise AuthSetupError(str(error)) from None
        notice = (f"AUTH_MODE=apikey: the {count} key(s) in API_KEY_HASHES; sign in on the page "
                  f"({page}/) with one of them")
        return LocalAuth("apikey", {"AUTH_MODE": "apikey", "API_KEY_HASHES": from_env},
                         LOOPBACK_HOST, None, notice)
    owner = env.get("LOCAL_OWNER", "").strip() or DEFAULT_LOCAL_OWNER
    path = None if data_dir is None else data_dir / KEY_FILE_NAME
    try:
        keys = local_keys(path, owner)
    except (OSError, ValueError) as error:
        raise AuthSetupError(f"cannot use the API key file: {error}") from None
    variables = {"AUTH_MODE": "apikey", "API_KEY_HASHES": keys.hashes}
    key = keys.new_key
    if key is None:
        notice = (
            f"AUTH_MODE=apikey: the keys in {path} (digests only: no key is stored, so none is "
            "printed again).\n"
            "  A new key: delete that file and restart (the old key stops working), or add a "
            "line from `python -m scripts.api_key NAME` for another owner."
        )
        return LocalAuth("apikey", variables, LOOPBACK_HOST, None, notice)
    kept = (f"only its SHA-256 digest is kept, in {path}" if path is not None
            else "kept nowhere: the data is in memory only, so each start makes a new key")
    notice = (
        f"AUTH_MODE=apikey: a new API key for owner {owner!r}, shown only this once ({kept}):\n"
        f"\n    {key}\n\n"
        f"  page: open {page}/ and paste it into the sign-in form\n"
        f"  curl: curl -H \"Authorization: Bearer {key}\" {api_base}/api/chat/sessions\n"
        f"  CLI:  BACKCHAT_API_KEY={key} .venv/bin/backchat ask \"what is 17*23?\""
    )
    return LocalAuth("apikey", variables, LOOPBACK_HOST, None, notice)


def _user_pool(env: Mapping[str, str], web_port: int) -> LocalAuth:
    missing = [name for name in ("COGNITO_USER_POOL_ARN", "COGNITO_DOMAIN", "COGNITO_CLIENT_ID")
               if not env.get(name, "").strip()]
    if missing:
        raise AuthSetupError(
            f"AUTH_MODE=cognito needs {', '.join(missing)}: the user pool, its hosted UI "
            "domain and an app client without a secret (infra/cognito.yaml's outputs; see the "
            "README)"
        )
    page = page_base(COGNITO_PAGE_HOST, web_port)
    scopes = env.get("COGNITO_SCOPES", "").split() or list(DEFAULT_SCOPES)
    try:
        user_pool = UserPoolSignIn.checked(env["COGNITO_DOMAIN"], env["COGNITO_CLIENT_ID"],
                                           f"{page}/", scopes)
    except PageConfigError as error:
        raise AuthSetupError(f"AUTH_MODE=cognito: {error}") from None
    notice = (
        f"AUTH_MODE=cognito: the page signs in through {user_pool.domain} (app client "
        f"{user_pool.client_id}).\n"
        f"  Open {page}/ (localhost: Cognito allows plain-http callbacks only there); the app "
        f"client must list {page}/ as a callback and a sign-out URL.\n"
        "  Locally the API reads the ID token without checking its signature or expiry "
        "(API Gateway checks both when deployed)."
    )
    return LocalAuth("cognito", {"AUTH_MODE": "cognito"}, COGNITO_PAGE_HOST, user_pool, notice)
