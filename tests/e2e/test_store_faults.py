"""The API on a real `chalice local` whose DynamoDB endpoint is a TCP server that misbehaves:
it drops every connection, or accepts and never answers. Every route answers 503 (never 500)
before API Gateway would have given up, and never hangs.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from scripts.loopback import HOST, free_ports, new_http

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
# API Gateway gives up on a request after 29 s: every answer must come before.
API_GATEWAY_SECONDS = 29
ANY_ID = "AAAAAAAAAAAAAAAAAAAAAA"


class FaultyStore:
    """A TCP server on loopback standing in for DynamoDB: `drop` closes every connection at
    once, `hang` reads the request and never answers."""

    def __init__(self) -> None:
        self.mode = "drop"
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="faulty-store", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except socket.timeout:
                continue
            if self.mode == "drop":
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
                connection.close()
            else:
                self._held.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self._held:
            connection.close()
        self._listener.close()


@pytest.fixture(scope="module")
def faulty_store() -> Iterator[FaultyStore]:
    store = FaultyStore()
    yield store
    store.close()


@pytest.fixture(scope="module")
def api(faulty_store: FaultyStore) -> Iterator[str]:
    """`chalice local` (thread dispatch, no auth) pointed at the faulty store."""
    [port] = free_ports(1)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "DDB_ENDPOINT": f"http://{HOST}:{faulty_store.port}",
        "NO_PROXY": HOST, "no_proxy": HOST, "PYTHONUNBUFFERED": "1",
        # Short, so the test is quick; the defaults (1 s, 3 s, 6 s) keep the same shape.
        "STORE_CONNECT_TIMEOUT": "0.5", "STORE_READ_TIMEOUT": "0.5", "STORE_ROUTE_BUDGET": "1.5",
        "LOCAL_REAPER_SECONDS": "3600",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.chalice_local", "local", "--stage", "local",
         "--host", HOST, "--port", str(port), "--no-autoreload"],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        with new_http() as http:
            while True:
                try:
                    http.get(f"{base}/api/health", timeout=5)
                    break
                except requests.RequestException:
                    assert process.poll() is None, "chalice local exited"
                    assert time.monotonic() < deadline, "chalice local never answered"
                    time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


REQUESTS = [
    ("GET", "/api/health", None),
    ("POST", "/api/chat/session", b'{"message": "hello"}'),
    ("GET", f"/api/chat/session/{ANY_ID}", None),
    ("GET", f"/api/chat/session/{ANY_ID}/events?after=0&wait=2", None),
    ("POST", f"/api/chat/session/{ANY_ID}/cancel", b""),
    ("GET", "/api/chat/sessions", None),
    ("GET", "/api/chat/conversations", None),
    ("GET", f"/api/chat/conversations/{ANY_ID}", None),
    ("PATCH", f"/api/chat/conversations/{ANY_ID}", b'{"title": "x"}'),
    ("DELETE", f"/api/chat/conversations/{ANY_ID}", None),
]


@pytest.mark.parametrize("mode", ["drop", "hang"])
def test_every_route_answers_503_when_the_store_drops_or_hangs(
        faulty_store: FaultyStore, api: str, mode: str) -> None:
    faulty_store.mode = mode
    with new_http() as http:
        for method, path, body in REQUESTS:
            # A request that hangs past API Gateway's limit fails here as a timeout.
            response = http.request(method, api + path, data=body,
                                    headers={"Content-Type": "application/json"},
                                    timeout=API_GATEWAY_SECONDS)
            assert response.status_code == 503, (mode, method, path, response.text)
            assert response.json()["Code"] == "ServiceUnavailableError", (mode, path)
