"""A data directory kept by an earlier version: `make run` migrates it and serves it."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from scripts.loopback import HOST, free_ports, new_http
from tests.e2e.conftest import REPO_ROOT, RunningStack
from tests.test_migrate_local import write_legacy_data

pytestmark = pytest.mark.e2e


def keep_legacy_data(directory: Path) -> None:
    """Run the embedded DynamoDB alone on the directory and write an earlier version's data."""
    [port] = free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "scripts.embedded_dynamodb", "-H", HOST, "-p", str(port),
         "--data-dir", str(directory)],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = boto3.client(
            "dynamodb", endpoint_url=f"http://{HOST}:{port}", region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 10, "mode": "standard"}))
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_tables()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert time.monotonic() < deadline, "the embedded DynamoDB never answered"
                time.sleep(0.2)
        write_legacy_data(client, "chatSessions")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def test_data_of_an_earlier_version_is_migrated_and_served(launch_stack, tmp_path: Path) -> None:
    directory = tmp_path / "kept"
    keep_legacy_data(directory)
    stack: RunningStack = launch_stack({"BACKCHAT_DATA_DIR": str(directory)})
    banner = stack.banner()
    assert "moved 4 session(s) of an earlier version into 3 conversation(s)" in banner
    assert "ended 1 run(s) cut off" in banner  # the one the old stack left running
    with new_http() as http:
        api = stack.api_url + "/api"
        listed = http.get(f"{api}/chat/conversations", timeout=10).json()["conversations"]
        assert {c["id"] for c in listed} >= {"page-made-id-1"}
        kept = http.get(f"{api}/chat/conversations/page-made-id-1", timeout=10).json()
        assert [(t["message"], t["answer"]) for t in kept["turns"]] == [
            ("Привет 👋", "Здравствуйте"), ("and then?", "partial")]
        assert http.get(f"{api}/chat/session/first", timeout=10).json()["answer"] == "Здравствуйте"
        started = http.post(f"{api}/chat/session", json={
            "message": "still here? [demo tokens=5 rate=1000]", "conversationId": "page-made-id-1"},
            timeout=10)
        assert started.status_code == 202, started.text
        events = http.get(f"{api}/chat/session/{started.json()['sessionId']}/events?wait=10",
                          timeout=30).json()
        assert events["events"][0]["content"].startswith("history")
    assert stack.stop() == 0
    # A second start on the migrated directory has nothing left to migrate.
    again = launch_stack({"BACKCHAT_DATA_DIR": str(directory)})
    assert "of an earlier version" not in again.banner()
    assert again.stop() == 0
