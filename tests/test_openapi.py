"""docs/openapi.yaml: valid OpenAPI, in step with app.py's routes, and true to real responses."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

import app as app_module

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
SPEC_URI = "urn:backchat:openapi"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "trace"}
JSON = {"Content-Type": "application/json"}
FAST = " [demo rate=100000]"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def app_operations() -> set[tuple[str, str]]:
    return {
        (path, method.lower())
        for path, entries in app_module.app.routes.items()
        for method in entries
        if method != "OPTIONS"  # CORS preflight, answered by API Gateway
    }


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def pointer(*parts: str) -> str:
    """Return the JSON pointer of a location in the spec (RFC 6901 escaping)."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def resolve(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def response_schema_pointer(spec: dict[str, Any], path: str, method: str, status: int) -> str:
    """Return where the JSON schema of one documented response lives; fail if undocumented."""
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    response = responses[str(status)]
    location = pointer("paths", path, method, "responses", str(status))
    if "$ref" in response:
        location = response["$ref"].removeprefix("#")
        response = resolve(spec, response["$ref"])
    assert "application/json" in response["content"], f"{location} has no JSON body"
    return location + pointer("content", "application/json", "schema")


def assert_matches_spec(spec: dict[str, Any], path: str, method: str, response) -> None:
    """Validate a chalice.test response's status and JSON body against the spec."""
    location = response_schema_pointer(spec, path, method, response.status_code)
    registry = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4)
    )
    validator = OAS30Validator({"$ref": f"{SPEC_URI}#{location}"}, registry=registry,
                               format_checker=oas30_format_checker)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(response.json_body)]
    assert errors == [], f"{method.upper()} {path} {response.status_code}: {errors}"


def test_spec_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate_spec(spec)
    assert spec["openapi"].startswith("3.0.")


def test_spec_documents_exactly_the_routes_of_app_py(spec: dict[str, Any]) -> None:
    assert spec_operations(spec) == app_operations()


@pytest.mark.parametrize("path", sorted(app_module.app.routes))
def test_path_parameters_are_the_route_view_arguments(spec: dict[str, Any], path: str) -> None:
    in_template = re.findall(r"\{([^}]+)\}", path)
    item = spec["paths"][path]
    for method, entry in app_module.app.routes[path].items():
        operation = item[method.lower()]
        declared = [
            resolve(spec, p["$ref"]) if "$ref" in p else p
            for p in [*item.get("parameters", []), *operation.get("parameters", [])]
        ]
        names = sorted(p["name"] for p in declared if p["in"] == "path")
        assert names == sorted(in_template) == sorted(entry.view_args)
        assert all(p["required"] for p in declared if p["in"] == "path")


def test_request_bodies_use_content_types_the_routes_accept(spec: dict[str, Any]) -> None:
    for path, method in spec_operations(spec):
        body = spec["paths"][path][method].get("requestBody")
        if body is not None:
            route = app_module.app.routes[path][method.upper()]
            assert set(body["content"]) <= set(route.content_types), (path, method)


def test_a_finished_session_and_its_pages_match_the_spec(client, spec: dict[str, Any]) -> None:
    started = client.http.post("/api/chat/session", headers=JSON, body=json.dumps(
        {"message": "what is 17*23?" + FAST, "title": "Sums", "history": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}))
    assert started.status_code == 202
    assert_matches_spec(spec, "/api/chat/session", "post", started)
    session_id = started.json_body["sessionId"]

    session = client.http.get(f"/api/chat/session/{session_id}")
    assert session.json_body["status"] == "done"
    assert_matches_spec(spec, "/api/chat/session/{session_id}", "get", session)

    events = client.http.get(f"/api/chat/session/{session_id}/events?limit=1000")
    kinds = {event["eventType"] for event in events.json_body["events"]}
    assert {"thinking", "tool_call", "tool_result", "delta", "done"} <= kinds
    assert_matches_spec(spec, "/api/chat/session/{session_id}/events", "get", events)

    listed = client.http.get("/api/chat/sessions?limit=1")
    assert listed.json_body["sessions"][0]["id"] == session_id
    assert_matches_spec(spec, "/api/chat/sessions", "get", listed)

    cancelled = client.http.post(f"/api/chat/session/{session_id}/cancel")
    assert cancelled.status_code == 200
    assert_matches_spec(spec, "/api/chat/session/{session_id}/cancel", "post", cancelled)

    health = client.http.get("/api/health")
    assert_matches_spec(spec, "/api/health", "get", health)


def test_a_failed_run_matches_the_spec(client, spec: dict[str, Any]) -> None:
    started = client.http.post("/api/chat/session", headers=JSON, body=json.dumps(
        {"message": "[demo tokens=5 fail_after=2]" + FAST}))
    session_id = started.json_body["sessionId"]

    session = client.http.get(f"/api/chat/session/{session_id}")
    assert (session.json_body["status"], session.json_body["finishedAt"] is None) == (
        "error", False)
    assert_matches_spec(spec, "/api/chat/session/{session_id}", "get", session)
    events = client.http.get(f"/api/chat/session/{session_id}/events")
    assert events.json_body["events"][-1]["eventType"] == "error"
    assert_matches_spec(spec, "/api/chat/session/{session_id}/events", "get", events)


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("get", "/api/chat/session/{session_id}", None, 404),
    ("get", "/api/chat/session/{session_id}/events", None, 404),
    ("post", "/api/chat/session/{session_id}/cancel", None, 404),
    ("get", "/api/chat/sessions?cursor=not-ours", None, 400),
    ("get", "/api/chat/session/{session_id}/events?limit=0", None, 400),
    ("post", "/api/chat/session", {"mesage": "typo"}, 400),
    ("post", "/api/chat/session", {"message": "x" * 32_001}, 413),
])
def test_errors_match_the_spec(client, spec: dict[str, Any], method: str, path: str,
                               body: object, status: int) -> None:
    url = path.replace("{session_id}", "unknown-session")
    if method == "get":
        response = client.http.get(url)
    else:
        response = client.http.post(url, headers=JSON,
                                    body=json.dumps(body) if body is not None else None)
    assert response.status_code == status
    assert_matches_spec(spec, path.partition("?")[0], method, response)


def test_conversations_and_models_match_the_spec(client, spec: dict[str, Any]) -> None:
    first = client.http.post("/api/chat/session", headers=JSON, body=json.dumps(
        {"message": "first" + FAST, "title": "Два хода"})).json_body
    conversation_id = first["conversationId"]
    second = client.http.post("/api/chat/session", headers=JSON, body=json.dumps(
        {"message": "second" + FAST, "conversationId": conversation_id}))
    assert second.status_code == 202
    assert_matches_spec(spec, "/api/chat/session", "post", second)

    listed = client.http.get("/api/chat/conversations?limit=5")
    assert listed.json_body["conversations"][0]["id"] == conversation_id
    assert_matches_spec(spec, "/api/chat/conversations", "get", listed)

    path = "/api/chat/conversations/{conversation_id}"
    read = client.http.get(f"/api/chat/conversations/{conversation_id}?limit=1")
    assert len(read.json_body["turns"]) == 1 and read.json_body["nextCursor"]
    assert_matches_spec(spec, path, "get", read)

    renamed = client.http.request("PATCH", f"/api/chat/conversations/{conversation_id}",
                                  headers=JSON, body=json.dumps({"title": "Renamed"}))
    assert renamed.json_body["title"] == "Renamed"
    assert_matches_spec(spec, path, "patch", renamed)

    models = client.http.get("/api/models")
    assert "demo" in models.json_body["models"]
    assert_matches_spec(spec, "/api/models", "get", models)

    deleted = client.http.request("DELETE", f"/api/chat/conversations/{conversation_id}")
    assert deleted.status_code == 204
    gone = client.http.get(f"/api/chat/conversations/{conversation_id}")
    assert gone.status_code == 404
    assert_matches_spec(spec, path, "get", gone)


def test_a_turn_while_another_runs_matches_the_spec(client, components, monkeypatch,
                                                    spec: dict[str, Any]) -> None:
    from tests.fakes import RecordingDispatcher

    monkeypatch.setattr(components.service, "_dispatcher", RecordingDispatcher())
    first = client.http.post("/api/chat/session", headers=JSON,
                             body=json.dumps({"message": "slow"})).json_body
    busy = client.http.post("/api/chat/session", headers=JSON, body=json.dumps(
        {"message": "next", "conversationId": first["conversationId"]}))
    assert busy.status_code == 409
    assert_matches_spec(spec, "/api/chat/session", "post", busy)
    unknown = client.http.post("/api/chat/session", headers=JSON, body=json.dumps(
        {"message": "next", "conversationId": "no-such-conversation"}))
    assert unknown.status_code == 404
    assert_matches_spec(spec, "/api/chat/session", "post", unknown)
