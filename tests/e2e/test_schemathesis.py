"""schemathesis fuzzes the live local stack with docs/openapi.yaml: no 5xx, nothing off spec."""
from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
import requests
import schemathesis
from hypothesis import settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import REPO_ROOT, new_http

# serial: schemathesis reports each API operation as a subtest of one test, and under
# pytest-xdist a failing subtest is not reported; `make test` runs these on their own.
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

SPEC = REPO_ROOT / "docs" / "openapi.yaml"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
# Per operation, for the fuzzing phase; the examples and coverage phases add their own
# (bounded) cases. Both tests together take about half a minute against the local stack.
MAX_EXAMPLES = 30
# Long enough for a long-poll of the maximum `wait` (20 s), so a slow answer fails as a
# check, not as a transport error.
REQUEST_TIMEOUT_SECONDS = 30
RUN_TIMEOUT_SECONDS = 30.0
# The stack's own http.server answers 501 to TRACE (and QUERY) before the app sees them;
# API Gateway answers those itself when deployed. The other undeclared methods must be 405.
UNEXPECTED_METHODS = {"get", "put", "post", "delete", "options", "patch"}
# Runs that end in each terminal status, with every event type between them.
FINISHED_RUNS = {
    "done": "what is 17*23? [demo tokens=8 rate=1000]",
    "error": "fail early [demo tokens=8 rate=1000 fail_after=3]",
    "cancelled": "a long one [demo tokens=5000 rate=5]",
}


def keep_runs_offline(case: schemathesis.Case) -> None:
    """Make a fuzzed `openai:...` or `bedrock:...` model an unknown one (400).

    Hypothesis also draws strings from the project's own constants (MODEL_FORMS, say), and a
    run on a remote provider would call out of the machine.
    """
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str) and ":" in body["model"]:
        case.body = {**body, "model": body["model"].replace(":", "_")}


def wait_for_status(http: requests.Session, api_url: str, session_id: str,
                    statuses: tuple[str, ...]) -> dict[str, Any]:
    """Return the session once its status is one of statuses; fail after RUN_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        session = http.get(f"{api_url}/api/chat/session/{session_id}", timeout=10).json()
        if session["status"] in statuses:
            return session
        if time.monotonic() > deadline:
            pytest.fail(f"session {session_id} is still {session['status']!r}: {session}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def api_http() -> Iterator[requests.Session]:
    """One requests session for the module (hypothesis reruns a test body, not its fixtures)."""
    with new_http() as http:
        yield http


@pytest.fixture(scope="module")
def finished_sessions(local_stack, api_http: requests.Session) -> dict[str, str]:
    """Session ids of runs that ended done, error and cancelled, by status."""
    api_url = local_stack.api_url
    ids = {}
    for status, message in FINISHED_RUNS.items():
        response = api_http.post(f"{api_url}/api/chat/session", json={"message": message},
                                 timeout=10)
        assert response.status_code == 202, response.text
        ids[status] = response.json()["sessionId"]
    # Cancel once the run has written an event, so the cancelled session has a history.
    cancelled = ids["cancelled"]
    api_http.get(f"{api_url}/api/chat/session/{cancelled}/events?wait=10", timeout=20)
    response = api_http.post(f"{api_url}/api/chat/session/{cancelled}/cancel", timeout=10)
    assert response.status_code == 202, response.text
    for status, session_id in ids.items():
        ended = wait_for_status(api_http, api_url, session_id, ("done", "error", "cancelled"))
        assert ended["status"] == status, ended
    return ids


def load_spec(config: dict[str, Any]) -> schemathesis.BaseSchema:
    """Return the spec with deterministic generation: the same cases on every run."""
    spec = schemathesis.openapi.from_path(SPEC, config=schemathesis.Config.from_dict(config))
    spec.config.update(request_timeout=REQUEST_TIMEOUT_SECONDS)
    # No example database: no failure found by an earlier run is replayed first.
    spec.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    return spec


schema = load_spec({"phases": {"coverage": {"unexpected-methods": sorted(UNEXPECTED_METHODS)}}})
# The routes of one session, fuzzed with the ids of real sessions (only the fuzzing phase
# takes extra strategies); the examples and coverage phases run above, with unknown ids.
session_routes = load_spec(
    {"phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}}}
).include(path_regex=r"\{session_id\}")


@schema.parametrize()
@settings(deadline=None)
def test_live_server_answers_every_request_as_the_openapi_spec_says(
    case: schemathesis.Case, local_stack, api_http: requests.Session
) -> None:
    keep_runs_offline(case)
    case.call_and_validate(base_url=local_stack.api_url, session=api_http, checks=CHECKS)


@session_routes.parametrize()
@session_routes.given(data=st.data())
@settings(deadline=None)
def test_real_sessions_are_answered_as_the_openapi_spec_says(
    case: schemathesis.Case, data: st.DataObject, local_stack,
    finished_sessions: dict[str, str], api_http: requests.Session,
) -> None:
    session_ids = st.sampled_from(sorted(finished_sessions.values()))
    case.path_parameters["session_id"] = data.draw(session_ids, label="session_id")
    case.call_and_validate(base_url=local_stack.api_url, session=api_http, checks=CHECKS)


# The routes of one conversation, fuzzed with the ids of real conversations (a fuzzed DELETE
# may remove one: later cases then check its 404s).
conversation_routes = load_spec(
    {"phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}}}
).include(path_regex=r"\{conversation_id\}")


@pytest.fixture(scope="module")
def finished_conversations(local_stack, api_http: requests.Session,
                           finished_sessions: dict[str, str]) -> list[str]:
    """The conversations of the finished sessions."""
    return sorted(api_http.get(f"{local_stack.api_url}/api/chat/session/{session_id}",
                               timeout=10).json()["conversationId"]
                  for session_id in finished_sessions.values())


@conversation_routes.parametrize()
@conversation_routes.given(data=st.data())
@settings(deadline=None)
def test_real_conversations_are_answered_as_the_openapi_spec_says(
    case: schemathesis.Case, data: st.DataObject, local_stack,
    finished_conversations: list[str], api_http: requests.Session,
) -> None:
    ids = st.sampled_from(finished_conversations)
    case.path_parameters["conversation_id"] = data.draw(ids, label="conversation_id")
    case.call_and_validate(base_url=local_stack.api_url, session=api_http, checks=CHECKS)
