"""The HTTP routes through chalice.test.Client: shapes, validation, errors, ownership."""
from __future__ import annotations

import json
import random

import pytest

from chalicelib.dispatch import InlineDispatcher
from chalicelib.errors import StoreUnavailable
from tests.fakes import RecordingDispatcher

JSON = {"Content-Type": "application/json"}
FAST = " [demo rate=100000]"


def post(client, path: str, body: object = None, raw: str | bytes | None = None,
         headers: dict | None = None):
    payload = raw if raw is not None else json.dumps(body)
    return client.http.post(path, headers=headers or JSON, body=payload)


def start(client, message: str = "what is 17*23?" + FAST, **fields: object) -> str:
    response = post(client, "/api/chat/session", {"message": message, **fields})
    assert response.status_code == 202, response.body
    return response.json_body["sessionId"]


def use_dispatcher(components, monkeypatch, dispatcher) -> None:
    monkeypatch.setattr(components.service, "_dispatcher", dispatcher)


def test_start_answers_202_with_the_session(client) -> None:
    response = post(client, "/api/chat/session", {"message": "hi" + FAST})
    assert response.status_code == 202
    body = response.json_body
    assert set(body) == {"sessionId", "conversationId", "status", "model", "createdAt"}
    assert (body["status"], body["model"]) == ("running", "demo")
    assert len(body["sessionId"]) >= 22 and len(body["conversationId"]) >= 22


def test_start_accepts_a_body_sent_without_json_content_type(client) -> None:
    response = post(client, "/api/chat/session", raw=json.dumps({"message": "hi" + FAST}),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 202


def test_start_returns_before_any_model_work(client, components, monkeypatch) -> None:
    dispatcher = RecordingDispatcher()
    use_dispatcher(components, monkeypatch, dispatcher)
    session_id = start(client)
    assert dispatcher.dispatched == [session_id]
    events = client.http.get(f"/api/chat/session/{session_id}/events").json_body
    assert (events["status"], events["events"]) == ("running", [])


def test_full_run_shows_thinking_tool_call_result_deltas_and_done(client) -> None:
    session_id = start(client)
    page = client.http.get(f"/api/chat/session/{session_id}/events").json_body
    kinds = [e["eventType"] for e in page["events"]]
    assert kinds[0] == "thinking" and kinds[-1] == "done"
    assert {"tool_call", "tool_result", "delta"} <= set(kinds)
    result = next(e for e in page["events"] if e["eventType"] == "tool_result")
    assert result["content"] == "391"
    done = page["events"][-1]
    assert done["usage"]["totalTokens"] == (done["usage"]["inputTokens"]
                                            + done["usage"]["outputTokens"]) > 0
    assert set(done) == {"sessionId", "seq", "eventType", "createdAt", "usage"}
    assert (page["status"], page["hasMore"], page["lastSeq"]) == ("done", False, done["seq"])


def test_session_object_has_every_field(client) -> None:
    started = post(client, "/api/chat/session",
                   {"message": "what is 17*23?" + FAST, "title": "Sums"}).json_body
    session = client.http.get(f"/api/chat/session/{started['sessionId']}").json_body
    assert set(session) == {"id", "status", "model", "title", "conversationId", "createdAt",
                            "updatedAt", "finishedAt", "inputTokens", "outputTokens",
                            "totalTokens", "lastSeq", "error", "answer"}
    assert (session["title"], session["conversationId"], session["status"]) == (
        "Sums", started["conversationId"], "done")
    assert "**391**" in session["answer"]


def test_polling_pages_by_after_and_limit(client) -> None:
    session_id = start(client, message="hello [demo rate=100000 tokens=30]")
    seen, after = [], 0
    while True:
        page = client.http.get(f"/api/chat/session/{session_id}/events?after={after}&limit=1").json_body
        seen += [e["seq"] for e in page["events"]]
        after = page["lastSeq"]
        if not page["hasMore"]:
            break
    assert seen == list(range(1, len(seen) + 1))
    empty = client.http.get(f"/api/chat/session/{session_id}/events?after={after}").json_body
    assert (empty["events"], empty["lastSeq"], empty["hasMore"]) == ([], after, False)


def test_failing_run_ends_error_with_message_and_partial_answer(client) -> None:
    session_id = start(client, message="tell me [demo fail_after=5 rate=100000]")
    session = client.http.get(f"/api/chat/session/{session_id}").json_body
    page = client.http.get(f"/api/chat/session/{session_id}/events").json_body
    deltas = "".join(e["content"] for e in page["events"] if e["eventType"] == "delta")
    assert session["status"] == "error" and page["events"][-1]["eventType"] == "error"
    assert "fail_after" in session["error"] and "Traceback" not in session["error"]
    assert deltas and deltas == session["answer"]


def test_dispatch_failure_answers_503_and_ends_the_session(client, components,
                                                           monkeypatch) -> None:
    use_dispatcher(components, monkeypatch, RecordingDispatcher(fail=True))
    response = post(client, "/api/chat/session", {"message": "hi"})
    assert response.status_code == 503
    assert response.json_body["Code"] == "ServiceUnavailableError"
    (session,) = client.http.get("/api/chat/sessions").json_body["sessions"]
    assert session["status"] == "error"
    page = client.http.get(f"/api/chat/session/{session['id']}/events").json_body
    assert [e["eventType"] for e in page["events"]] == ["error"]


def test_cancel_running_session_answers_202_then_it_ends_cancelled(client, components,
                                                                   monkeypatch) -> None:
    dispatcher = RecordingDispatcher()
    use_dispatcher(components, monkeypatch, dispatcher)
    session_id = start(client)
    components.store.claim_lease(session_id, "the-run")
    response = post(client, f"/api/chat/session/{session_id}/cancel")
    assert (response.status_code, response.json_body) == (202, {"id": session_id,
                                                                "status": "running"})
    assert components.store.get(session_id).cancel_requested


def test_cancel_before_the_run_starts_ends_it_at_once_and_the_model_is_never_called(
        client, components, monkeypatch) -> None:
    dispatcher = RecordingDispatcher()
    use_dispatcher(components, monkeypatch, dispatcher)
    session_id = start(client)
    response = post(client, f"/api/chat/session/{session_id}/cancel")
    assert (response.status_code, response.json_body) == (202, {"id": session_id,
                                                                "status": "cancelled"})
    called = []
    monkeypatch.setattr(components.providers, "provider", lambda ref: called.append(ref))
    components.orchestrator.run(session_id)  # the dispatched run starts late: a no-op
    page = client.http.get(f"/api/chat/session/{session_id}/events").json_body
    assert (page["status"], [e["eventType"] for e in page["events"]]) == (
        "cancelled", ["cancelled"])
    assert called == []


def test_cancel_of_a_finished_session_answers_200_and_changes_nothing(client) -> None:
    session_id = start(client)
    before = client.http.get(f"/api/chat/session/{session_id}").json_body
    for _ in range(2):
        response = post(client, f"/api/chat/session/{session_id}/cancel")
        assert (response.status_code, response.json_body) == (200, {"id": session_id,
                                                                    "status": "done"})
    assert client.http.get(f"/api/chat/session/{session_id}").json_body == before


def test_list_is_newest_first_with_a_working_cursor(client) -> None:
    ids = [start(client, message=f"n{i}" + FAST) for i in range(5)]
    first = client.http.get("/api/chat/sessions?limit=2").json_body
    second = client.http.get(f"/api/chat/sessions?limit=2&cursor={first['nextCursor']}").json_body
    third = client.http.get(f"/api/chat/sessions?limit=2&cursor={second['nextCursor']}").json_body
    listed = [s["id"] for page in (first, second, third) for s in page["sessions"]]
    assert listed == ids[::-1]
    assert third["nextCursor"] is None
    assert "answer" not in first["sessions"][0]


def test_health_is_ok(client) -> None:
    response = client.http.get("/api/health")
    assert (response.status_code, response.json_body) == (200, {"status": "ok"})


def test_health_answers_503_when_the_store_is_down(client, components, monkeypatch) -> None:
    def down() -> None:
        raise StoreUnavailable("The session store is unavailable; try again shortly")

    monkeypatch.setattr(components.store, "ping", down)
    response = client.http.get("/api/health")
    assert response.status_code == 503
    assert "unavailable" in response.json_body["Message"]


@pytest.mark.parametrize("raw, status, words", [
    ("{bad", 400, "not valid JSON"),
    ("", 400, "JSON object"),
    ("[1, 2]", 400, "must be a JSON object, not a list"),
    ('"hello"', 400, "must be a JSON object, not a string"),
    ("null", 400, "must be a JSON object, not null"),
    ("{}", 400, "message is required"),
    ('{"message": ""}', 400, "message must not be empty"),
    ('{"message": "   \\n "}', 400, "message must not be empty"),
    ('{"message": 42}', 400, "message must be a string, not a number"),
    ('{"message": ["hi"]}', 400, "message must be a string, not a list"),
    ('{"message": "\\ud800"}', 400, "message contains invalid Unicode"),
    ('{"message": "hi", "mesage": "typo"}', 400, "unknown field 'mesage'"),
    ('{"message": "hi", "history": "x"}', 400, "history must be a list"),
    ('{"message": "hi", "history": [1]}', 400, "history[0] must be an object"),
    ('{"message": "hi", "history": [{"role": "system", "content": "x"}]}', 400,
     'history[0].role must be "user" or "assistant"'),
    ('{"message": "hi", "history": [{"role": "user"}]}', 400, "history[0].content must be a string"),
    ('{"message": "hi", "history": [{"role": "user", "content": "x", "n": 1}]}', 400,
     "history[0] has an unknown field 'n'"),
    ('{"message": "hi", "model": "gpt-99"}', 400, "demo"),
    ('{"message": "hi", "model": 7}', 400, "model must be a string"),
    ('{"message": "hi", "title": false}', 400, "title must be a string, not a boolean"),
    ('{"message": "hi", "conversationId": {}}', 400, "conversationId must be a string"),
    ('{"message": "hi", "title": ""}', 400, "title must not be empty"),
    ('{"message": "hi", "title": " "}', 400, "title must not be empty"),
    (json.dumps({"message": "hi", "title": "t" * 201}), 400, "title is 201 characters long"),
    ('{"message": "hi", "conversationId": "c", "history": [{"role": "user", "content": "x"}]}',
     400, "history is only for starting a new conversation"),
    ('{"message": "hi", "conversationId": "c", "title": "x"}', 400, "PATCH"),
    (json.dumps({"message": "x" * 32_001}), 413, "message is 32001 characters long"),
    (json.dumps({"message": "hi", "history": [{"role": "user", "content": "x" * 50_000}] * 2}),
     413, "history holds 100000 bytes"),
    (json.dumps({"message": "x" * 1_100_000}), 413, "the limit is 1000000"),
])
def test_bad_start_input_is_a_clear_4xx(client, raw, status, words) -> None:
    response = post(client, "/api/chat/session", raw=raw)
    assert response.status_code == status, response.body
    assert words in response.json_body["Message"]
    assert client.http.get("/api/chat/sessions").json_body["sessions"] == []


def test_message_at_the_limit_is_accepted(client) -> None:
    response = post(client, "/api/chat/session", {"message": "я" * (32_000 - len(FAST)) + FAST})
    assert response.status_code == 202


@pytest.mark.parametrize("query, words", [
    ("after=" + "9" * 5000, "after must be a whole number"),
    ("limit=" + "1" * 4301, "limit must be a whole number"),
    ("wait=" + "0" * 4400, "wait must be a whole number"),
    ("after=-1", "after must be a whole number"),
    ("after=abc", "after must be a whole number"),
    ("after=1.5", "after must be a whole number"),
    ("limit=0", "limit must be from 1 to 1000"),
    ("limit=1001", "limit must be from 1 to 1000"),
    ("limit=", "limit must be a whole number"),
    ("wait=21", "wait must be from 0 to 20"),
    ("wait=x", "wait must be a whole number"),
])
def test_bad_events_query_is_400(client, query, words) -> None:
    session_id = start(client)
    response = client.http.get(f"/api/chat/session/{session_id}/events?{query}")
    assert response.status_code == 400
    assert words in response.json_body["Message"]


@pytest.mark.parametrize("query, words", [
    ("limit=0", "limit must be from 1 to 100"),
    ("limit=101", "limit must be from 1 to 100"),
    ("cursor=not-a-cursor", "cursor is not one this server issued"),
    ("cursor=eyJ2IjoxfQ", "cursor is not one this server issued"),
    ("cursor=", "cursor must not be empty"),
    ("limit=" + "7" * 4301, "limit must be a whole number"),
])
def test_bad_list_query_is_400(client, query, words) -> None:
    response = client.http.get(f"/api/chat/sessions?{query}")
    assert response.status_code == 400
    assert words in response.json_body["Message"]


def test_a_cursor_the_server_did_not_sign_is_rejected(client) -> None:
    from chalicelib.cursor import CursorCodec

    for start_id in range(3):
        start(client, message=f"n{start_id}" + FAST)
    issued = client.http.get("/api/chat/sessions?limit=1").json_body["nextCursor"]
    assert client.http.get(f"/api/chat/sessions?cursor={issued}").status_code == 200
    position = {"id": "x", "ownerId": "local", "createdAt": "2026"}
    forgeries = [
        CursorCodec("another deployment's secret").encode("sessions", "local", position),
        CursorCodec("").encode("sessions", "someone-else", position),
        CursorCodec("").encode("conversations", "local", position),
        issued[:-2] + ("AA" if not issued.endswith("AA") else "BB"),
    ]
    for forged in forgeries:
        response = client.http.get(f"/api/chat/sessions?cursor={forged}")
        assert response.status_code == 400, forged
        assert "cursor is not one this server issued" in response.json_body["Message"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/chat/session/{id}"),
    ("GET", "/api/chat/session/{id}/events"),
    ("POST", "/api/chat/session/{id}/cancel"),
])
@pytest.mark.parametrize("session_id", ["unknown-id", "a" * 300, "%E2%9C%93", "..%2F"])
def test_unknown_session_is_404_naming_it(client, method, path, session_id) -> None:
    response = client.http.request(method, path.format(id=session_id), headers=JSON, body=b"")
    assert response.status_code == 404
    assert response.json_body["Code"] == "NotFoundError"
    assert "not found" in response.json_body["Message"]


def test_another_owners_session_looks_exactly_like_an_unknown_one(client, components,
                                                                  monkeypatch) -> None:
    session_id = start(client)
    monkeypatch.setattr(components.settings.__class__, "local_owner", "mallory")
    import app as app_module

    monkeypatch.setattr(app_module, "owner", lambda: "mallory")
    mine = client.http.get(f"/api/chat/session/{session_id}")
    unknown = client.http.get("/api/chat/session/zzzzzzzzzzzzzzzzzzzzzz")
    assert mine.status_code == unknown.status_code == 404
    assert mine.json_body["Code"] == unknown.json_body["Code"]
    assert client.http.get("/api/chat/sessions").json_body["sessions"] == []


def test_random_bodies_never_answer_5xx(client, components, monkeypatch) -> None:
    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    rng = random.Random(20261124)
    values = [None, True, 0, -1, 1.5, "", "x", "Привет 👩🏽‍💻", [], {}, [{}], {"role": "user"},
              [{"role": "assistant", "content": "ok"}], "demo", "openai:", "a" * 300]
    fields = ["message", "history", "model", "conversationId", "title", "other"]
    for _ in range(300):
        body = {rng.choice(fields): rng.choice(values) for _ in range(rng.randint(0, 4))}
        response = post(client, "/api/chat/session", body)
        assert response.status_code in (202, 400, 413), (body, response.body)


def test_orchestrator_lambda_runs_the_session(client, components, monkeypatch) -> None:
    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    session_id = start(client)
    client.lambda_.invoke("orchestrator", {"sessionId": session_id})
    assert client.http.get(f"/api/chat/session/{session_id}").json_body["status"] == "done"


def test_inline_dispatch_is_what_the_unit_settings_use(components) -> None:
    assert isinstance(components.dispatcher, InlineDispatcher)


def start_with_key(client, key: str, message: str = "hi" + FAST):
    return post(client, "/api/chat/session", {"message": message},
                headers={**JSON, "Idempotency-Key": key})


def test_retried_start_with_the_same_key_returns_the_same_session(client, components,
                                                                  monkeypatch) -> None:
    dispatcher = RecordingDispatcher()
    use_dispatcher(components, monkeypatch, dispatcher)
    first = start_with_key(client, "key-1")
    second = start_with_key(client, "key-1")
    assert first.status_code == second.status_code == 202
    assert first.json_body["sessionId"] == second.json_body["sessionId"]
    assert dispatcher.dispatched == [first.json_body["sessionId"]]
    assert len(client.http.get("/api/chat/sessions").json_body["sessions"]) == 1


def test_concurrent_starts_with_one_key_make_one_session_and_one_dispatch(
        client, components, monkeypatch) -> None:
    import threading

    dispatcher = RecordingDispatcher()
    use_dispatcher(components, monkeypatch, dispatcher)
    service = components.service
    barrier = threading.Barrier(6)
    ids: list[str] = []

    def start_once() -> None:
        barrier.wait()
        ids.append(service.start("local", json.dumps({"message": "hi"}).encode(), "same")["sessionId"])

    threads = [threading.Thread(target=start_once) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1 and len(ids) == 6
    assert dispatcher.dispatched == [ids[0]]


def test_same_key_with_another_body_is_422(client) -> None:
    start_with_key(client, "key-2", "first message" + FAST)
    response = start_with_key(client, "key-2", "another message")
    assert response.status_code == 422
    assert "different request body" in response.json_body["Message"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "ключ"])
def test_malformed_idempotency_key_is_400(client, key) -> None:
    response = start_with_key(client, key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json_body["Message"]


def test_deeply_nested_json_is_a_400_not_a_500(client) -> None:
    response = post(client, "/api/chat/session", raw="[" * 100_000 + "]" * 100_000)
    assert response.status_code in (400, 413)
    response = post(client, "/api/chat/session", raw="[" * 5_000 + "]" * 5_000)
    assert response.status_code == 400
    assert "nested too deeply" in response.json_body["Message"]


@pytest.mark.parametrize("path", ["/api/chat/session//events", "/api/chat/session//cancel"])
def test_empty_session_id_is_404(client, path) -> None:
    method = "POST" if path.endswith("cancel") else "GET"
    response = client.http.request(method, path, headers=JSON, body=b"")
    assert response.status_code == 404


def test_events_page_is_cut_by_size_and_says_there_is_more(client, monkeypatch) -> None:
    from chalicelib import service

    session_id = start(client, message="long [demo rate=100000 tokens=400]")
    total = client.http.get(f"/api/chat/session/{session_id}/events").json_body["events"]
    monkeypatch.setattr(service, "MAX_PAGE_BYTES", 2_000)
    page = client.http.get(f"/api/chat/session/{session_id}/events").json_body
    assert 1 <= len(page["events"]) < len(total)
    assert page["hasMore"] is True
    assert page["lastSeq"] == page["events"][-1]["seq"]


def test_a_throttled_store_answers_503_not_500(client, components, monkeypatch) -> None:
    from chalicelib.dynamo import StoreThrottled

    session_id = start(client)

    def throttled(*args, **kwargs):
        raise StoreThrottled("DynamoDB is throttling; try again shortly")

    monkeypatch.setattr(components.store, "get", throttled)
    for path in (f"/api/chat/session/{session_id}", f"/api/chat/session/{session_id}/events"):
        response = client.http.get(path)
        assert response.status_code == 503, path
        assert response.json_body["Code"] == "ServiceUnavailableError"


def test_an_unexpected_error_answers_503_with_no_detail(client, components, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise KeyError("internal detail")

    monkeypatch.setattr(components.conversations, "list", broken)
    response = client.http.get("/api/chat/conversations")
    assert response.status_code == 503
    assert "internal detail" not in response.json_body["Message"]


@pytest.mark.parametrize("headers, status", [
    ({"Host": "127.0.0.1:8000"}, 200),
    ({"Host": "localhost:8000", "Origin": "http://127.0.0.1:8080"}, 200),
    ({"Host": "attacker.example:8000"}, 403),
    ({"Host": "127.0.0.1:8000", "Origin": "https://attacker.example"}, 403),
    ({"Host": "127.0.0.1:8000", "Origin": "null"}, 403),
])
def test_without_auth_only_loopback_hosts_and_the_pages_origin_are_served(
        client, components, monkeypatch, headers, status) -> None:
    import dataclasses

    import app as app_module
    from chalicelib.auth import Authenticator

    monkeypatch.setattr(app_module, "_components", dataclasses.replace(
        components, authenticator=Authenticator("none", page_origin="http://127.0.0.1:8080")))
    for path in ("/api/health", "/api/chat/sessions"):
        assert client.http.get(path, headers=headers).status_code == status, path
    started = post(client, "/api/chat/session", raw=json.dumps({"message": "hi" + FAST}),
                   headers={**headers, "Content-Type": "text/plain"})
    assert started.status_code == (202 if status == 200 else 403)


def test_an_events_page_of_emoji_stays_under_the_limit_in_its_real_json(
        client, components, monkeypatch) -> None:
    from chalicelib import service
    from chalicelib.store import Fence
    from chalicelib.records import DELTA, EventRecord, TokenUsage
    from chalicelib import clock

    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    session_id = start(client, message="emoji")
    components.store.claim_lease(session_id, "a1")
    components.store.append(session_id, Fence("a1"), [
        EventRecord(session_id, seq, DELTA, clock.now_iso(), content="😀" * 500)
        for seq in range(1, 21)], TokenUsage())
    monkeypatch.setattr(service, "MAX_PAGE_BYTES", 30_000)
    response = client.http.get(f"/api/chat/session/{session_id}/events?limit=1000")
    page = response.json_body
    # Each event is ~6 KB of JSON (an emoji is escaped as 12 bytes), not the 2 KB its
    # characters would suggest.
    assert len(response.body) <= 30_000 + 1_000
    assert 1 <= len(page["events"]) < 20 and page["hasMore"]


def test_allowed_models_limit_what_a_start_may_name_and_the_models_route_lists_them(
        client, components, monkeypatch) -> None:
    from chalicelib.providers import ProviderRegistry
    from chalicelib.providers.demo import DemoProvider

    class NeverCalled:
        def stream(self, request):  # pragma: no cover - a refused start never runs
            raise AssertionError("a refused model was called")

    restricted = ProviderRegistry({"demo": DemoProvider(), "openai": NeverCalled()},
                                  allowed=("demo", "openai:gpt-4o-mini*"))
    monkeypatch.setattr(components.service, "_providers", restricted)
    import dataclasses

    import app as app_module

    monkeypatch.setattr(app_module, "_components", dataclasses.replace(
        components, providers=restricted))
    refused = post(client, "/api/chat/session", {"message": "hi", "model": "openai:gpt-5"})
    assert refused.status_code == 400
    assert "demo, openai:gpt-4o-mini*" in refused.json_body["Message"]
    assert post(client, "/api/chat/session", {"message": "hi" + FAST}).status_code == 202
    listed = client.http.get("/api/models").json_body
    assert listed == {"defaultModel": "demo", "models": ["demo", "openai:gpt-4o-mini*"]}


def test_a_conversation_whose_running_turn_vanished_takes_new_turns(
        client, components, monkeypatch) -> None:
    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    first = post(client, "/api/chat/session", {"message": "set aside forever"}).json_body
    conversation = {"message": "next" + FAST, "conversationId": first["conversationId"]}
    assert post(client, "/api/chat/session", conversation).status_code == 409
    # The reaper set it aside, and its row expired (TTL): nothing will ever end it.
    components.store.models.session(first["sessionId"]).delete()
    use_dispatcher(components, monkeypatch, InlineDispatcher(components.orchestrator.run))
    again = post(client, "/api/chat/session", conversation)
    assert again.status_code == 202, again.body
    assert client.http.get(
        f"/api/chat/session/{again.json_body['sessionId']}").json_body["status"] == "done"


def test_cancel_of_a_run_whose_lease_ran_out_ends_it_at_once(client, components,
                                                              monkeypatch) -> None:
    from chalicelib import clock

    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    session_id = start(client)
    components.store.claim_lease(session_id, "a run that died")
    lease_end = components.store.get(session_id).lease_until_ms
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end + 1)
    response = post(client, f"/api/chat/session/{session_id}/cancel")
    assert (response.status_code, response.json_body["status"]) == (202, "cancelled")
    page = client.http.get(f"/api/chat/session/{session_id}/events").json_body
    assert [e["eventType"] for e in page["events"]] == ["cancelled"]


def test_a_retried_start_whose_conversation_was_deleted_meanwhile_is_422(client) -> None:
    first = start_with_key(client, "key-gone")
    assert first.status_code == 202
    conversation = first.json_body["conversationId"]
    assert client.http.request("DELETE", f"/api/chat/conversations/{conversation}"
                               ).status_code == 204
    again = start_with_key(client, "key-gone")
    assert again.status_code == 422
    assert "deleted" in again.json_body["Message"]


def test_deleting_a_conversation_stops_its_running_turn(client, components, monkeypatch) -> None:
    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    claimed = post(client, "/api/chat/session", {"message": "a run has it"}).json_body
    components.store.claim_lease(claimed["sessionId"], "the-run")
    assert client.http.request(
        "DELETE", f"/api/chat/conversations/{claimed['conversationId']}").status_code == 204
    assert components.store.get(claimed["sessionId"]).cancel_requested  # its run stops
    waiting = post(client, "/api/chat/session", {"message": "no run yet"}).json_body
    assert client.http.request(
        "DELETE", f"/api/chat/conversations/{waiting['conversationId']}").status_code == 204
    assert components.store.get(waiting["sessionId"]).status == "cancelled"  # ended at once
    for session_id in (claimed["sessionId"], waiting["sessionId"]):
        assert client.http.get(f"/api/chat/session/{session_id}").status_code == 404


def test_turns_started_at_once_in_one_conversation_run_one_at_a_time(
        client, components, monkeypatch) -> None:
    import threading

    from chalicelib.store import Fence
    from tests.builders import ending

    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    conversation = post(client, "/api/chat/session", {"message": "first"}).json_body
    components.store.finish(components.store.get(conversation["sessionId"]), Fence.unclaimed(),
                            [], ending(1, session_id=conversation["sessionId"]))
    barrier = threading.Barrier(6)
    outcomes: list[int] = []

    def start_turn() -> None:
        body = json.dumps({"message": "next", "conversationId": conversation["conversationId"]})
        barrier.wait()
        try:
            components.service.start("local", body.encode())
            outcomes.append(202)
        except Exception as error:  # noqa: BLE001 - the status is what the test checks
            import app as app_module

            outcomes.append(app_module.http_error(error).STATUS_CODE)

    threads = [threading.Thread(target=start_turn) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [202] + [409] * 5
    turns = client.http.get(
        f"/api/chat/conversations/{conversation['conversationId']}").json_body["turns"]
    assert [t["status"] for t in turns] == ["done", "running"]


def test_a_retried_delete_still_stops_the_running_turn_and_answers_204(
        client, components, monkeypatch) -> None:
    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    started = post(client, "/api/chat/session", {"message": "a run has it"}).json_body
    components.store.claim_lease(started["sessionId"], "the-run")
    path = f"/api/chat/conversations/{started['conversationId']}"
    # The first delete marked the conversation, then failed before it stopped the turn.
    components.conversation_store.mark_deleted(started["conversationId"], "local")
    assert not components.store.get(started["sessionId"]).cancel_requested
    assert client.http.request("DELETE", path).status_code == 204
    assert components.store.get(started["sessionId"]).cancel_requested
    assert client.http.get(f"/api/chat/session/{started['sessionId']}").status_code == 404
    assert client.http.get(path).status_code == 404
