"""Client: backchat's HTTP API from Python, with retries and resumable event streams."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import quote, urlsplit

import requests

from backchat_client.errors import ApiError, BackchatError, ConnectionFailed, RunFailed
from backchat_client.retry import RetryPolicy, is_retryable_status

logger = logging.getLogger(__name__)

__version__ = "0.1.0"

DEFAULT_API = "http://127.0.0.1:8000"
TERMINAL_STATUSES = frozenset({"done", "error", "cancelled"})
# The API holds a long-poll at most 20 s; 15 stays well inside API Gateway's 29 s.
LONG_POLL_SECONDS = 15
EVENTS_PAGE_SIZE = 200
CONNECT_TIMEOUT = 5.0
# A pause after an empty page, so that a server which does not hold long-polls is not hammered.
EMPTY_PAGE_PAUSE = 0.1
# A proxy from the environment cannot reach this machine's loopback: never send those there.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

Event = dict[str, Any]


class Client:
    """backchat's API: start runs, follow their events, read and cancel sessions and conversations.

    `api_url` is the part before `/api/...` (a trailing `/api` is tolerated). A request that gets
    no usable answer (no connection, a cut or timed-out answer, 408, 429, 5xx) is retried with
    backoff; other error answers raise ApiError at once.
    """

    def __init__(self, api_url: str = DEFAULT_API, api_key: str | None = None, *,
                 timeout: float = 30.0, long_poll: int = LONG_POLL_SECONDS,
                 retry: RetryPolicy = RetryPolicy(), http: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api_url = _api_base(api_url)
        self._timeout = timeout
        self._long_poll = long_poll
        self._retry = retry
        self._sleep = sleep
        self._http = http if http is not None else _new_http(self.api_url)
        self._headers = {"Accept": "application/json",
                         "User-Agent": f"backchat-client/{__version__}"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept connections."""
        self._http.close()

    def start(self, message: str, conversation_id: str | None = None,
              model: str | None = None, title: str | None = None,
              idempotency_key: str | None = None,
              history: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
        """Start a run; return the 202 body (sessionId, conversationId, status, model, createdAt).

        Without `conversation_id` the run begins a new conversation. Every start carries an
        Idempotency-Key (a new uuid4 unless given), so a start whose answer was lost is retried
        without starting a second run.
        """
        body: dict[str, Any] = {"message": message}
        optional = {"conversationId": conversation_id, "model": model, "title": title,
                    "history": None if history is None else [dict(item) for item in history]}
        body.update({name: value for name, value in optional.items() if value is not None})
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/api/chat/session", json=body,
                          headers={"Idempotency-Key": key})

    def events(self, session_id: str, after: int = 0) -> Iterator[Event]:
        """Yield each event after seq `after` once, oldest first, until the log is complete.

        Long-polls while the run goes on and ends after the terminal event (done, error or
        cancelled). A dropped connection, a timeout or a 5xx is retried from the same seq, so
        no event is lost or repeated.
        """
        path = f"{_session_path(session_id)}/events"
        while True:
            page = self._call("GET", path, read_timeout=self._long_poll + self._timeout,
                              params={"after": after, "limit": EVENTS_PAGE_SIZE,
                                      "wait": self._long_poll})
            for event in page["events"]:
                if event["seq"] > after:
                    after = event["seq"]
                    yield event
            after = max(after, page["lastSeq"])
            if page["status"] in TERMINAL_STATUSES and not page["hasMore"]:
                return
            if not page["events"]:
                self._sleep(EMPTY_PAGE_PAUSE)

    def answer(self, session_id: str) -> str:
        """Wait for the run to end and return its answer (the deltas joined, in order).

        Raise RunFailed, with the partial answer, if the run ended `error` or `cancelled`.
        """
        parts: list[str] = []
        for event in self.events(session_id):
            kind = event["eventType"]
            if kind == "delta":
                parts.append(event.get("content", ""))
            elif kind in ("error", "cancelled"):
                raise RunFailed(session_id, kind, event.get("content") or f"the run was {kind}",
                                "".join(parts))
        return "".join(parts)

    def cancel(self, session_id: str) -> dict[str, Any]:
        """Ask the run to stop (idempotent); return {id, status}: still `running` while it stops."""
        return self._call("POST", f"{_session_path(session_id)}/cancel")

    def session(self, session_id: str) -> dict[str, Any]:
        """Return the session: status, model, times, token counts and, once ended, its answer."""
        return self._call("GET", _session_path(session_id))

    def sessions(self, page_size: int = 20) -> Iterator[dict[str, Any]]:
        """Yield the caller's sessions, newest first, over every page (lists omit the answer)."""
        return self._pages("/api/chat/sessions", "sessions", page_size)

    def conversations(self, page_size: int = 20) -> Iterator[dict[str, Any]]:
        """Yield the caller's conversations, most recently active first, over every page."""
        return self._pages("/api/chat/conversations", "conversations", page_size)

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """Return one conversation with every turn, oldest first (all pages of turns read)."""
        path = _conversation_path(conversation_id)
        conversation = self._call("GET", path)
        turns = list(conversation["turns"])
        cursor = conversation.pop("nextCursor", None)
        while cursor:
            page = self._call("GET", path, params={"cursor": cursor})
            turns.extend(page["turns"])
            cursor = page.get("nextCursor")
        conversation["turns"] = turns
        return conversation

    def rename_conversation(self, conversation_id: str, title: str) -> dict[str, Any]:
        """Give a conversation a new title (1-200 characters); return the conversation."""
        return self._call("PATCH", _conversation_path(conversation_id), json={"title": title})

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation, its turns and their events (a running turn is cancelled)."""
        self._call("DELETE", _conversation_path(conversation_id), gone_after_retry_ok=True)

    def _pages(self, path: str, key: str, page_size: int) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"limit": page_size}
        while True:
            page = self._call("GET", path, params=params)
            yield from page[key]
            if not page.get("nextCursor"):
                return
            params = {"limit": page_size, "cursor": page["nextCursor"]}

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              json: Any = None, headers: Mapping[str, str] | None = None,
              read_timeout: float | None = None,
              gone_after_retry_ok: bool = False) -> dict[str, Any]:
        """Send a request, retrying failures that may pass; return the JSON object ({} for 204).

        With `gone_after_retry_ok`, a 404 to a retry is success: the try whose answer was lost
        did the deletion.
        """
        failures = 0
        while True:
            failure: BackchatError
            retry_after = None
            try:
                response = self._http.request(
                    method, self.api_url + path, params=params, json=json,
                    headers={**self._headers, **(headers or {})},
                    timeout=(CONNECT_TIMEOUT, read_timeout or self._timeout),
                )
                return _payload(response)
            except ApiError as error:
                if gone_after_retry_ok and failures and error.status == 404:
                    return {}
                if not is_retryable_status(error.status):
                    raise
                failure = error
                retry_after = _retry_after(response)
            except requests.RequestException as error:
                failure = ConnectionFailed(f"{method} {path}: {_reason(error)}")
            failures += 1
            if failures >= self._retry.attempts:
                raise failure
            pause = self._retry.delay(failures, retry_after)
            logger.warning("%s; retrying in %.1f s", failure, pause)
            self._sleep(pause)


def _payload(response: requests.Response) -> dict[str, Any]:
    """Return a success's JSON object ({} for 204); raise ApiError for an error answer."""
    if response.status_code >= 400:
        raise _api_error(response)
    if response.status_code == 204:
        return {}
    body = response.json()
    if not isinstance(body, dict):
        # Every answer of the API is an object; anything else is some other server's.
        raise requests.exceptions.InvalidJSONError("the answer is not a JSON object")
    return body


def _api_error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("Message"), str):
        return ApiError(response.status_code, str(body.get("Code") or "HttpError"),
                        body["Message"])
    # Not the API's own answer (a proxy's or gateway's page): its status line still says what.
    return ApiError(response.status_code, "HttpError",
                    response.reason or f"HTTP {response.status_code}")


def _reason(error: requests.RequestException) -> str:
    """Return why a request got no usable answer, in a few words."""
    if isinstance(error, requests.Timeout):
        return "no answer in time"
    if isinstance(error, requests.exceptions.InvalidJSONError):
        return "the answer was not a JSON object"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    if isinstance(error, requests.ConnectionError) and "refused" in str(error).lower():
        return "connection refused"
    if isinstance(error, requests.ConnectionError):
        return "the connection failed or was cut off"
    return str(error)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _api_base(api_url: str) -> str:
    base = api_url.rstrip("/")
    return base[:-len("/api")] if base.endswith("/api") else base


def _new_http(api_url: str) -> requests.Session:
    http = requests.Session()
    http.trust_env = urlsplit(api_url).hostname not in LOOPBACK_HOSTS
    return http


def _session_path(session_id: str) -> str:
    return f"/api/chat/session/{quote(session_id, safe='')}"


def _conversation_path(conversation_id: str) -> str:
    return f"/api/chat/conversations/{quote(conversation_id, safe='')}"
