"""Many sessions at once over real HTTP: every event log is complete, ordered and exact.

Each session is followed by its own thread that polls with random page sizes and, at random
moments, "reloads": it drops everything but the last seq it saw and starts again from there,
as a reloaded page does from localStorage. The randomness comes from one seed, printed;
set BACKCHAT_E2E_SEED to replay a failure.
"""
from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from scripts.loopback import new_http

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("BACKCHAT_E2E_SEED", "20240611"))
SESSION_COUNT = 24
TERMINAL = ("done", "error", "cancelled")
POLL_PAUSE_SECONDS = 0.05
RELOAD_CHANCE = 0.15
FOLLOW_TIMEOUT_SECONDS = 90.0
REQUEST_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Case:
    """A user message and what the demo model must do with it."""

    text: str
    calculation: str | None = None
    asks_time: bool = False


CASES = (
    Case("Привет, как дела?"),
    Case("👩🏽\u200d💻 🎉"),
    Case("你好，世界"),
    Case("e\u0301 a\u0308"),
    Case("what is 17*23?", calculation="391"),
    Case("(2+3)*4", calculation="20"),
    Case("what time is it?", asks_time=True),
    Case("Смесь: 你好 👩🏽\u200d💻 e\u0301 — ok"),
)


@dataclass
class Followed:
    """Everything one follower saw of one session."""

    session_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    polls_while_running: int = 0
    reloads: int = 0


class PagePoller:
    """What a page holds while it follows a session: a connection and the last seq it saw."""

    def __init__(self, api_url: str, session_id: str, after: int) -> None:
        self.url = f"{api_url}/api/chat/session/{session_id}/events"
        self.session_id = session_id
        self.after = after
        self.http = new_http()

    def next_page(self, limit: int) -> dict[str, Any]:
        """Fetch the events after the last seen seq and check the page's own shape."""
        response = self.http.get(
            self.url, params={"after": self.after, "limit": limit}, timeout=REQUEST_TIMEOUT_SECONDS
        )
        assert response.status_code == 200, response.text
        page = response.json()
        events = page["events"]
        seqs = [event["seq"] for event in events]
        assert page["sessionId"] == self.session_id
        assert page["status"] in ("running", *TERMINAL), page
        assert len(events) <= limit, f"asked for {limit}, got {len(events)}"
        assert seqs == list(range(self.after + 1, self.after + 1 + len(events))), (
            f"after={self.after}: seqs {seqs} are not the next ones"
        )
        assert page["lastSeq"] == (seqs[-1] if seqs else self.after), page
        if seqs:
            self.after = seqs[-1]
        return page

    def close(self) -> None:
        self.http.close()


def follow(api_url: str, session_id: str, rng: random.Random) -> Followed:
    """Poll a session to its end with random page sizes and reloads; return what was seen."""
    followed = Followed(session_id)
    poller = PagePoller(api_url, session_id, after=0)
    deadline = time.monotonic() + FOLLOW_TIMEOUT_SECONDS
    try:
        while True:
            if rng.random() < RELOAD_CHANCE:
                poller.close()
                poller = PagePoller(api_url, session_id, after=poller.after)
                followed.reloads += 1
            limit = 200 if rng.random() < 0.15 else rng.randint(1, 7)
            page = poller.next_page(limit)
            followed.requests += 1
            followed.polls_while_running += page["status"] == "running"
            followed.events.extend(page["events"])
            # Per DESIGN: a terminal status with hasMore false means every event was read.
            if page["status"] in TERMINAL and not page["hasMore"]:
                return followed
            assert time.monotonic() < deadline, (
                f"session {session_id} still {page['status']} after {FOLLOW_TIMEOUT_SECONDS} s"
            )
            if not page["hasMore"]:
                time.sleep(POLL_PAUSE_SECONDS)
    finally:
        poller.close()


def start_session(http: requests.Session, api_url: str, message: str) -> str:
    response = http.post(
        f"{api_url}/api/chat/session", json={"message": message}, timeout=REQUEST_TIMEOUT_SECONDS
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) >= {"sessionId", "status", "model", "createdAt"}, body
    return body["sessionId"]


def get_session(http: requests.Session, api_url: str, session_id: str) -> dict[str, Any]:
    response = http.get(f"{api_url}/api/chat/session/{session_id}", timeout=REQUEST_TIMEOUT_SECONDS)
    assert response.status_code == 200, response.text
    return response.json()


def answer_from_deltas(events: list[dict[str, Any]]) -> str:
    return "".join(event["content"] for event in events if event["eventType"] == "delta")


def assert_complete_log(followed: Followed, session: dict[str, Any]) -> dict[str, Any]:
    """Check the invariants every finished log holds; return its terminal event."""
    events = followed.events
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(events) + 1)), f"seqs are not 1..N without repeats: {seqs}"
    assert all(event["sessionId"] == followed.session_id for event in events)
    terminals = [event for event in events if event["eventType"] in TERMINAL]
    assert len(terminals) == 1, f"terminal events: {terminals}"
    assert terminals[0] is events[-1], "the terminal event is not the last one"
    assert session["status"] == terminals[0]["eventType"]
    assert session["lastSeq"] == seqs[-1]
    assert answer_from_deltas(events) == session["answer"]
    return terminals[0]


def tool_calls(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["eventType"] == "tool_call" and e["toolName"] == name]


def tool_result(events: list[dict[str, Any]], call: dict[str, Any]) -> dict[str, Any]:
    results = [
        e for e in events
        if e["eventType"] == "tool_result" and e["toolCallId"] == call["toolCallId"]
    ]
    assert len(results) == 1, f"results for {call}: {results}"
    assert results[0]["seq"] > call["seq"]
    return results[0]


def run_one(api_url: str, index: int, start_together: threading.Barrier) -> tuple[
    str, Case, Followed, dict[str, Any]
]:
    """Start session `index` with the others, follow it to its end, read the session row."""
    rng = random.Random(f"{SEED}:{index}")
    case = CASES[index % len(CASES)]
    # From a tenth of a second to about two: long enough to be polled while running.
    rate, tokens = rng.choice((100, 200, 400)), rng.choice((40, 120, 200))
    message = f"{case.text} [demo rate={rate} tokens={tokens}]"
    with new_http() as http:
        start_together.wait(timeout=30)
        session_id = start_session(http, api_url, message)
        followed = follow(api_url, session_id, rng)
        session = get_session(http, api_url, session_id)
    return message, case, followed, session


def test_concurrent_sessions_have_complete_exact_logs_whatever_the_polling(local_stack) -> None:
    print(f"seed {SEED} (replay: BACKCHAT_E2E_SEED={SEED})")
    start_together = threading.Barrier(SESSION_COUNT)
    with ThreadPoolExecutor(max_workers=SESSION_COUNT) as pool:
        futures = [
            pool.submit(run_one, local_stack.api_url, index, start_together)
            for index in range(SESSION_COUNT)
        ]
        results = [future.result() for future in futures]

    polls = sum(followed.requests for _, _, followed, _ in results)
    live_polls = sum(followed.polls_while_running for _, _, followed, _ in results)
    reloads = sum(followed.reloads for _, _, followed, _ in results)
    print(f"{SESSION_COUNT} sessions: {polls} polls ({live_polls} while running), {reloads} reloads")
    assert len({followed.session_id for _, _, followed, _ in results}) == SESSION_COUNT
    # Otherwise the test only read finished logs and proved nothing about live polling.
    assert live_polls > 0 and reloads > 0
    for index, (message, case, followed, session) in enumerate(results):
        context = f"seed {SEED}, session #{index} {followed.session_id}, message {message!r}"
        try:
            assert_ran_as_asked(case, followed, session)
        except AssertionError as failure:
            raise AssertionError(f"{context}: {failure}") from failure


def assert_ran_as_asked(case: Case, followed: Followed, session: dict[str, Any]) -> None:
    terminal = assert_complete_log(followed, session)
    events = followed.events
    assert terminal["eventType"] == "done", terminal
    assert session["status"] == "done"
    assert case.text in session["answer"], "the answer does not quote the message verbatim"
    usage = terminal["usage"]
    assert usage["totalTokens"] > 0
    assert (session["inputTokens"], session["outputTokens"], session["totalTokens"]) == (
        usage["inputTokens"], usage["outputTokens"], usage["totalTokens"]
    )
    if case.calculation is not None:
        calls = tool_calls(events, "calculator")
        assert calls, "no calculator call"
        assert [tool_result(events, call)["content"] for call in calls] == [case.calculation]
    if case.asks_time:
        calls = tool_calls(events, "clock")
        assert calls, "no clock call"
        assert all(tool_result(events, call)["content"] for call in calls)


def test_provider_failure_ends_the_run_as_error_and_keeps_the_partial_answer(local_stack) -> None:
    rng = random.Random(SEED)
    with new_http() as http:
        session_id = start_session(
            http, local_stack.api_url, "Tell me a long story [demo fail_after=5 rate=400]"
        )
        followed = follow(local_stack.api_url, session_id, rng)
        session = get_session(http, local_stack.api_url, session_id)

    terminal = assert_complete_log(followed, session)
    assert terminal["eventType"] == "error"
    assert session["status"] == "error"
    for message in (terminal["content"], session["error"]):
        assert message and message.strip(), "the error message is empty"
        assert "Traceback" not in message and 'File "' not in message, message
    assert session["answer"], "the partial answer was not kept"
    assert answer_from_deltas(followed.events) == session["answer"]
