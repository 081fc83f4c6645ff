"""Local durability (issue 5, acceptance 8): the local stack keeps its data across `kill -9`.

Killing every process of the stack is what a laptop crash does; the next stack on the same
data directory must show every session and event acknowledged before the kill, and end the
runs the kill cut off as `error` by itself. A kept directory of many stored sessions (restored
lazily, issue 13) is served as it was written.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
import requests

from bench.seed_data import seed
from chalicelib import clock
from chalicelib.reaper import STOPPED_RESPONDING
from chalicelib.records import DELTA, EventRecord, RunEnding, TokenUsage
from chalicelib.store import Fence, SessionStore
from scripts.local_stack import end_interrupted_runs
from tests.e2e.conftest import HOST, REPO_ROOT, RunningStack, free_ports

SLOW_MESSAGE = "[demo rate=5 tokens=200] Tell me a long story."
QUICK_MESSAGE = "[demo tokens=20 rate=400] What is 17*23?"
TERMINAL = {"done", "error", "cancelled"}
# The cut-off run ends at the new stack's start; the lease (30 s) plus the reaper's period
# (5 s) bound it even if that start-up step did not.
CUT_OFF_RUN_ENDS_WITHIN_SECONDS = 35.0
WAIT_SECONDS = 30.0


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory for the stacks this test launches (they inherit os.environ)."""
    path = tmp_path / "dynamodb"
    monkeypatch.setenv("BACKCHAT_DATA_DIR", str(path))
    return path


def wait_for(ready: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := ready()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(0.2)
    return result


def start_session(http: requests.Session, stack: RunningStack, message: str) -> str:
    response = http.post(f"{stack.api_url}/api/chat/session", json={"message": message},
                         timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["sessionId"]


def session(http: requests.Session, stack: RunningStack, session_id: str) -> dict[str, Any]:
    response = http.get(f"{stack.api_url}/api/chat/session/{session_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def events(http: requests.Session, stack: RunningStack, session_id: str) -> list[dict[str, Any]]:
    response = http.get(f"{stack.api_url}/api/chat/session/{session_id}/events",
                        params={"after": 0, "limit": 1000}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["hasMore"] is False
    return response.json()["events"]


def printed(stack: RunningStack, text: str) -> None:
    """Wait for the stack to print text (health answers a moment before the banner)."""
    wait_for(lambda: text in stack.output.text(), 10, f"the stack printing {text!r}")


def kill_everything(stack: RunningStack) -> None:
    """SIGKILL the supervisor and every process it started, as a power cut would."""
    stack.kill()
    wait_for(lambda: not stack.leftovers(), 10, "the killed stack's processes exiting")


@pytest.mark.e2e
def test_kill_9_keeps_sessions_and_events_and_the_cut_off_run_ends_error(
    launch_stack: Callable[[], RunningStack], http: requests.Session, data_dir: Path
) -> None:
    first = launch_stack()
    printed(first, f"data: {data_dir} (kept across restarts")
    finished_id = start_session(http, first, QUICK_MESSAGE)
    wait_for(lambda: session(http, first, finished_id)["status"] == "done", WAIT_SECONDS,
             "the quick run finishing")
    finished_before = session(http, first, finished_id)
    finished_events_before = events(http, first, finished_id)
    cut_off_id = start_session(http, first, SLOW_MESSAGE)
    wait_for(lambda: sum(e["eventType"] == DELTA for e in events(http, first, cut_off_id)) >= 3,
             WAIT_SECONDS, "the slow run writing three deltas")
    cut_off_events_before = events(http, first, cut_off_id)

    kill_everything(first)
    second = launch_stack()

    assert session(http, second, finished_id) == finished_before
    assert events(http, second, finished_id) == finished_events_before
    ended = wait_for(
        lambda: (s := session(http, second, cut_off_id))["status"] != "running" and s,
        CUT_OFF_RUN_ENDS_WITHIN_SECONDS, "the cut-off run ending",
    )
    after = events(http, second, cut_off_id)
    # Everything seen before the kill is still there; the run may have written a little more.
    assert after[:len(cut_off_events_before)] == cut_off_events_before
    assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
    assert [e["eventType"] for e in after if e["eventType"] in TERMINAL] == ["error"]
    assert after[-1]["eventType"] == "error"
    assert after[-1]["content"] == STOPPED_RESPONDING
    assert ended["status"] == "error"
    assert ended["error"] == STOPPED_RESPONDING
    assert ended["lastSeq"] == after[-1]["seq"]
    assert ended["answer"] == "".join(e["content"] for e in after if e["eventType"] == DELTA)
    printed(second, "ended 1 run(s) cut off when the stack last stopped")
    assert second.stop(signal.SIGTERM) == 0, second.output.text()


@pytest.mark.e2e
def test_a_stack_on_a_kept_directory_of_stored_sessions_serves_them_and_keeps_new_ones(
    launch_stack: Callable[[], RunningStack], http: requests.Session, data_dir: Path
) -> None:
    # Stored as bench/seed_data.py stores them: one snapshot, partitions kept as text at start.
    seeded = seed(data_dir, 40 * 50)
    first = launch_stack()
    stored_id = seeded.session_ids[7]

    listed = sessions(http, first)
    stored_events = events(http, first, stored_id)
    new_id = start_session(http, first, QUICK_MESSAGE)
    wait_for(lambda: session(http, first, new_id)["status"] == "done", WAIT_SECONDS,
             "the new run finishing")
    new_events = events(http, first, new_id)
    kill_everything(first)
    second = launch_stack()

    assert sorted(s["id"] for s in listed) == sorted(seeded.session_ids)
    assert [e["seq"] for e in stored_events] == list(range(1, 51))
    assert stored_events[-1]["eventType"] == "done"
    assert events(http, second, stored_id) == stored_events
    assert events(http, second, new_id) == new_events
    assert [s["id"] for s in sessions(http, second)] == [new_id] + [s["id"] for s in listed]
    assert second.stop(signal.SIGTERM) == 0, second.output.text()


def sessions(http: requests.Session, stack: RunningStack) -> list[dict[str, Any]]:
    """Every session of the local owner, newest first."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = http.get(f"{stack.api_url}/api/chat/sessions",
                            params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                            timeout=10)
        assert response.status_code == 200, response.text
        found += response.json()["sessions"]
        cursor = response.json()["nextCursor"]
        if not cursor:
            return found


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free loopback port for an embedded DynamoDB server, and credentials moto accepts."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    (free,) = free_ports(1)
    return free


def dynamodb_client(port: int) -> Any:
    return boto3.client("dynamodb", endpoint_url=f"http://{HOST}:{port}", region_name="us-east-1")


def create_events_table(client: Any) -> None:
    client.create_table(
        TableName="events", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )


@pytest.mark.e2e
def test_every_write_acknowledged_before_kill_9_is_there_after_a_restart(
    tmp_path: Path, port: int
) -> None:
    endpoint = f"http://{HOST}:{port}"
    server = start_embedded_dynamodb(port, tmp_path)
    try:
        create_events_table(dynamodb_client(port))
        acknowledged: list[str] = []
        writers = [threading.Thread(target=write_until_refused, args=(endpoint, w, acknowledged))
                   for w in range(4)]
        for writer in writers:
            writer.start()
        wait_for(lambda: len(acknowledged) >= 200, WAIT_SECONDS, "200 acknowledged writes")
        server.kill()
        server.wait()
        for writer in writers:
            writer.join(timeout=30)
    finally:
        server.kill()
        server.wait()

    server = start_embedded_dynamodb(port, tmp_path)
    try:
        stored = {item["id"]["S"] for page in dynamodb_client(port).get_paginator("scan").paginate(
            TableName="events", ConsistentRead=True) for item in page["Items"]}
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert set(acknowledged) <= stored


@pytest.mark.e2e
def test_the_embedded_dynamodb_deletes_expired_items_and_the_deletion_is_kept(
    tmp_path: Path, port: int
) -> None:
    server = start_embedded_dynamodb(port, tmp_path)
    try:
        client = dynamodb_client(port)
        create_events_table(client)
        client.update_time_to_live(TableName="events", TimeToLiveSpecification={
            "Enabled": True, "AttributeName": "expiresAt"})
        for item_id, expires in (("old", time.time() - 60), ("new", time.time() + 3600)):
            client.put_item(TableName="events", Item={"id": {"S": item_id},
                                                      "expiresAt": {"N": str(int(expires))}})

        wait_for(lambda: stored_ids(client) == {"new"}, WAIT_SECONDS, "the expired item's deletion")
        server.kill()
        server.wait()

        server = start_embedded_dynamodb(port, tmp_path)
        assert stored_ids(dynamodb_client(port)) == {"new"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def stored_ids(client: Any) -> set[str]:
    return {item["id"]["S"] for item in client.scan(TableName="events", ConsistentRead=True)["Items"]}


def write_until_refused(endpoint: str, writer: int, acknowledged: list[str]) -> None:
    from botocore.config import Config

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2,
                                        read_timeout=5))
    for number in range(100_000):
        item_id = f"{writer}-{number}"
        try:
            client.put_item(TableName="events", Item={"id": {"S": item_id}})
        except Exception:
            return  # the server was killed
        acknowledged.append(item_id)


def start_embedded_dynamodb(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "scripts.embedded_dynamodb", "-H", HOST, "-p", str(port),
         "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def answering() -> bool:
        assert server.poll() is None, "the embedded DynamoDB exited at start"
        with socket.socket() as probe:
            return probe.connect_ex((HOST, port)) == 0

    wait_for(answering, WAIT_SECONDS, "the embedded DynamoDB answering")
    return server


def test_runs_left_running_are_ended_before_the_next_stack_serves(store: SessionStore,
                                                                  settings) -> None:
    from tests.builders import log, start, stored_answer

    start(store, "claimed")
    store.claim_lease("claimed", "attempt-of-the-killed-stack")
    store.append("claimed", Fence("attempt-of-the-killed-stack"),
                 [EventRecord("claimed", 1, DELTA, clock.now_iso(), content="Hal")],
                 TokenUsage(3, 1))
    # Dispatched, never claimed: its lease is the claim timeout, minutes away.
    start(store, "unclaimed")
    start(store, "finished")
    store.claim_lease("finished", "a")
    store.finish(store.get("finished"), Fence("a"), [], RunEnding(
        status="done", terminal_event=EventRecord("finished", 1, "done", clock.now_iso()),
        answer="", usage=TokenUsage(1, 0)))
    finished_before = store.get("finished")

    ended = end_interrupted_runs(settings)

    assert sorted(ended) == ["claimed", "unclaimed"]
    claimed = store.get("claimed")
    assert (claimed.status, claimed.error, stored_answer(store, "claimed")) == (
        "error", STOPPED_RESPONDING, "Hal")
    assert [(e.seq, e.event_type) for e in log(store, "claimed")] == [(1, "delta"), (2, "error")]
    assert [(e.seq, e.event_type) for e in log(store, "unclaimed")] == [(1, "error")]
    assert store.get("finished") == finished_before
