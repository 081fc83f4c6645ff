"""backchat_client.Client over a scripted transport: retries, backoff, error mapping, paging."""
from __future__ import annotations

import http.client
import json
import uuid
from typing import Any, Callable, Union
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import requests.adapters

from backchat_client import ApiError, Client, ConnectionFailed, RetryPolicy, RunFailed

API = "http://api.test"
Reply = Union[tuple, Exception, Callable[[requests.PreparedRequest], tuple]]


class ScriptedAdapter(requests.adapters.BaseAdapter):
    """A transport that answers each request with the next scripted reply and records them.

    A reply is (status, body[, headers]) with body a JSON value or raw bytes, an exception to
    raise, or a function of the request that returns such a tuple.
    """

    def __init__(self, *replies: Reply) -> None:
        super().__init__()
        self.replies = list(replies)
        self.requests: list[requests.PreparedRequest] = []
        self.timeouts: list[Any] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        self.timeouts.append(kwargs.get("timeout"))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            reply = reply(request)
        status, body, *rest = reply
        response = requests.Response()
        response.status_code = status
        response.reason = http.client.responses.get(status, "")
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response.headers.update(rest[0] if rest else {})
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass

    def query(self, index: int) -> dict[str, str]:
        query = parse_qs(urlsplit(self.requests[index].url).query)
        return {key: values[0] for key, values in query.items()}


def make_client(*replies: Reply, api_key: str | None = None,
                retry: RetryPolicy = RetryPolicy()) -> tuple[Client, ScriptedAdapter, list[float]]:
    adapter = ScriptedAdapter(*replies)
    http = requests.Session()
    http.mount("http://", adapter)
    sleeps: list[float] = []
    client = Client(API, api_key, http=http, retry=retry, sleep=sleeps.append)
    return client, adapter, sleeps


def event(seq: int, kind: str = "delta", content: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionId": "s1", "seq": seq, "eventType": kind, "createdAt": "t"}
    if content is not None:
        body["content"] = content
    return body


def page(status: str, events: list[dict[str, Any]], last_seq: int, has_more: bool = False) -> tuple:
    return (200, {"sessionId": "s1", "status": status, "events": events, "lastSeq": last_seq,
                  "hasMore": has_more})


def test_events_resume_from_the_same_seq_after_dropped_connections_and_5xx() -> None:
    client, adapter, sleeps = make_client(
        page("running", [event(1, "thinking", "hm"), event(2, content="Hel")], 2),
        requests.ConnectionError("connection reset"),
        (503, {"Code": "ServiceUnavailableError", "Message": "the store is slow"}),
        requests.exceptions.ChunkedEncodingError("the body was cut"),
        page("done", [event(3, content="lo"), event(4, "done")], 4),
    )

    events = list(client.events("s1"))

    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [adapter.query(i)["after"] for i in range(5)] == ["0", "2", "2", "2", "2"]
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]


def test_events_long_poll_with_a_read_timeout_longer_than_the_wait() -> None:
    client, adapter, _ = make_client(page("done", [event(1, "done")], 1))

    list(client.events("s1"))

    wait = int(adapter.query(0)["wait"])
    connect_timeout, read_timeout = adapter.timeouts[0]
    assert 0 < wait <= 20
    assert read_timeout > wait


def test_events_continue_until_a_terminal_page_has_no_more() -> None:
    client, adapter, _ = make_client(
        page("done", [event(1), event(2)], 2, has_more=True),
        page("done", [event(3, "done")], 3),
    )

    assert [e["seq"] for e in client.events("s1")] == [1, 2, 3]
    assert adapter.query(1)["after"] == "2"


def test_events_keep_polling_a_running_session_through_empty_pages() -> None:
    client, adapter, _ = make_client(
        page("running", [], 5),
        page("running", [event(6)], 6),
        page("error", [event(7, "error", "boom")], 7),
    )

    assert [e["seq"] for e in client.events("s1", after=5)] == [6, 7]
    assert [adapter.query(i)["after"] for i in range(3)] == ["5", "5", "6"]


def test_events_never_yield_an_event_at_or_before_the_seq_already_seen() -> None:
    client, _, _ = make_client(page("done", [event(2), event(3), event(4, "done")], 4))

    assert [e["seq"] for e in client.events("s1", after=3)] == [4]


def test_error_answers_raise_api_error_at_once_with_status_code_and_message() -> None:
    client, adapter, sleeps = make_client(
        (404, {"Code": "NotFoundError", "Message": "Session nope not found"}))

    with pytest.raises(ApiError) as raised:
        client.session("nope")

    assert (raised.value.status, raised.value.code, raised.value.message) == (
        404, "NotFoundError", "Session nope not found")
    assert len(adapter.requests) == 1 and sleeps == []


@pytest.mark.parametrize("status", [400, 401, 403, 409, 413, 422])
def test_client_errors_are_final(status: int) -> None:
    client, adapter, _ = make_client((status, {"Code": "X", "Message": "no"}))

    with pytest.raises(ApiError):
        client.cancel("s1")

    assert len(adapter.requests) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_answers_that_may_change_are_retried(status: int) -> None:
    client, adapter, sleeps = make_client(
        (status, {"Code": "X", "Message": "later"}), (200, {"id": "s1", "status": "done"}))

    assert client.session("s1") == {"id": "s1", "status": "done"}
    assert len(adapter.requests) == 2 and len(sleeps) == 1


def test_retry_after_is_honoured_up_to_the_longest_pause() -> None:
    client, _, sleeps = make_client(
        (429, {"Code": "TooManyRequestsError", "Message": "slow down"}, {"Retry-After": "7"}),
        (429, {"Code": "TooManyRequestsError", "Message": "slow down"}, {"Retry-After": "600"}),
        (200, {"id": "s1"}),
        retry=RetryPolicy(base_delay=0.1, max_delay=30),
    )

    client.session("s1")

    assert sleeps == [7, 30]


def test_a_failure_that_lasts_raises_the_last_one_after_the_allowed_attempts() -> None:
    client, adapter, sleeps = make_client(
        requests.ConnectionError("refused"), requests.Timeout("slow"),
        requests.ConnectionError("Connection refused"),
        retry=RetryPolicy(attempts=3),
    )

    with pytest.raises(ConnectionFailed, match="connection refused"):
        client.session("s1")

    assert len(adapter.requests) == 3 and len(sleeps) == 2


def test_an_answer_that_is_not_the_apis_keeps_its_status_line() -> None:
    client, _, _ = make_client((502, b"<html>bad gateway</html>"), retry=RetryPolicy(attempts=1))

    with pytest.raises(ApiError) as raised:
        client.session("s1")

    assert (raised.value.status, raised.value.code, raised.value.message) == (
        502, "HttpError", "Bad Gateway")


@pytest.mark.parametrize("body", [b'{"id": "s1", "sta', b"<html>", b"[1, 2]"])
def test_a_success_whose_body_is_not_a_whole_json_object_is_retried(body: bytes) -> None:
    client, adapter, _ = make_client((200, body), (200, {"id": "s1"}))

    assert client.session("s1") == {"id": "s1"}
    assert len(adapter.requests) == 2


def test_start_sends_one_idempotency_key_and_the_same_one_when_it_retries() -> None:
    accepted = {"sessionId": "s1", "conversationId": "c1", "status": "running"}
    client, adapter, _ = make_client(
        requests.ConnectionError("reset"), (503, {"Code": "X", "Message": "busy"}),
        (202, accepted))

    assert client.start("hi", model="demo", title="T") == accepted

    keys = {request.headers["Idempotency-Key"] for request in adapter.requests}
    assert len(keys) == 1 and uuid.UUID(keys.pop()).version == 4
    assert json.loads(adapter.requests[0].body) == {"message": "hi", "model": "demo", "title": "T"}


def test_each_start_gets_its_own_key_unless_one_is_given() -> None:
    client, adapter, _ = make_client((202, {}), (202, {}), (202, {}))

    client.start("a")
    client.start("a")
    client.start("a", conversation_id="c1", idempotency_key="mine",
                 history=[{"role": "user", "content": "x"}])

    first, second, third = (request.headers["Idempotency-Key"] for request in adapter.requests)
    assert first != second and third == "mine"
    assert json.loads(adapter.requests[2].body) == {
        "message": "a", "conversationId": "c1", "history": [{"role": "user", "content": "x"}]}


def test_an_api_key_is_sent_as_a_bearer_token() -> None:
    client, adapter, _ = make_client((200, {"id": "s1"}), api_key="k-123")

    client.session("s1")

    assert adapter.requests[0].headers["Authorization"] == "Bearer k-123"


def test_ids_are_escaped_in_paths() -> None:
    client, adapter, _ = make_client((200, {"id": "a/b"}))

    client.session("a/b?c")

    assert adapter.requests[0].url == f"{API}/api/chat/session/a%2Fb%3Fc"


def test_sessions_follow_the_cursor_over_every_page() -> None:
    client, adapter, _ = make_client(
        (200, {"sessions": [{"id": "3"}, {"id": "2"}], "nextCursor": "abc"}),
        (200, {"sessions": [{"id": "1"}], "nextCursor": None}),
    )

    assert [s["id"] for s in client.sessions(page_size=2)] == ["3", "2", "1"]
    assert adapter.query(0) == {"limit": "2"}
    assert adapter.query(1) == {"limit": "2", "cursor": "abc"}


def test_conversations_are_read_page_by_page() -> None:
    client, adapter, _ = make_client(
        (200, {"conversations": [{"id": "c2"}], "nextCursor": "n"}),
        (200, {"conversations": [{"id": "c1"}], "nextCursor": None}),
    )

    conversations = client.conversations(page_size=1)

    assert next(conversations)["id"] == "c2"
    assert len(adapter.requests) == 1
    assert [c["id"] for c in conversations] == ["c1"]
    assert urlsplit(adapter.requests[0].url).path == "/api/chat/conversations"


def test_conversation_gathers_every_page_of_turns() -> None:
    client, adapter, _ = make_client(
        (200, {"id": "c1", "title": "T", "turns": [{"sessionId": "a"}], "nextCursor": "n"}),
        (200, {"id": "c1", "title": "T", "turns": [{"sessionId": "b"}], "nextCursor": None}),
    )

    conversation = client.conversation("c1")

    assert [t["sessionId"] for t in conversation["turns"]] == ["a", "b"]
    assert "nextCursor" not in conversation
    assert adapter.query(1) == {"cursor": "n"}


def test_answer_joins_the_deltas_in_order() -> None:
    client, _, _ = make_client(
        page("running", [event(1, "thinking", "x"), event(2, content="Привет, ")], 2),
        page("done", [event(3, content="世界 👋"), event(4, "done")], 4),
    )

    assert client.answer("s1") == "Привет, 世界 👋"


@pytest.mark.parametrize("kind", ["error", "cancelled"])
def test_answer_of_a_run_that_did_not_finish_raises_with_the_partial_answer(kind: str) -> None:
    client, _, _ = make_client(page(kind, [event(1, content="part"), event(2, kind, "why")], 2))

    with pytest.raises(RunFailed) as raised:
        client.answer("s1")

    assert (raised.value.status, raised.value.message, raised.value.answer) == (kind, "why", "part")


def test_a_delete_whose_answer_was_lost_is_done_when_the_retry_finds_nothing() -> None:
    client, adapter, _ = make_client(
        requests.ConnectionError("reset"),
        (404, {"Code": "NotFoundError", "Message": "Conversation c1 not found"}),
    )

    assert client.delete_conversation("c1") is None
    assert [r.method for r in adapter.requests] == ["DELETE", "DELETE"]


def test_a_delete_of_an_unknown_conversation_is_an_error() -> None:
    client, _, _ = make_client((404, {"Code": "NotFoundError", "Message": "not found"}))

    with pytest.raises(ApiError):
        client.delete_conversation("c1")


def test_rename_sends_the_title() -> None:
    client, adapter, _ = make_client((200, {"id": "c1", "title": "New"}))

    assert client.rename_conversation("c1", "New")["title"] == "New"
    assert adapter.requests[0].method == "PATCH"
    assert json.loads(adapter.requests[0].body) == {"title": "New"}


@pytest.mark.parametrize("given", [API, f"{API}/", f"{API}/api", f"{API}/api/"])
def test_the_api_address_may_end_in_api(given: str) -> None:
    assert Client(given).api_url == API


@pytest.mark.parametrize("url, uses_proxies", [
    ("http://127.0.0.1:8000", False), ("http://localhost:8000", False),
    ("https://chat.example.com", True),
])
def test_proxies_from_the_environment_are_never_used_for_loopback(
    url: str, uses_proxies: bool
) -> None:
    with Client(url) as client:
        assert client._http.trust_env is uses_proxies


def test_backoff_doubles_up_to_the_cap_within_the_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)

    lowest = [policy.delay(n, jitter=lambda: 0.0) for n in range(1, 7)]
    highest = [policy.delay(n, jitter=lambda: 1.0) for n in range(1, 7)]

    assert lowest == pytest.approx([0.8, 1.6, 3.2, 6.4, 8.0, 8.0])
    assert highest == pytest.approx([1.2, 2.4, 4.8, 9.6, 12.0, 12.0])


def test_a_retry_policy_needs_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
