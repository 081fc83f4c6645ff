"""The client resumes across connections that a proxy cuts mid-run, losing and repeating nothing."""
from __future__ import annotations

import itertools
import socket
import subprocess
import threading
from typing import Iterator, Sequence

import pytest

from backchat_client import Client, RetryPolicy
from scripts.loopback import HOST
from tests.e2e.test_client_cli import BACKCHAT, assert_complete_log, cli_env, deltas, json_lines

pytestmark = pytest.mark.e2e

# Bytes each new connection may carry from the API before the proxy cuts it; None: no limit
# (until the test drops every connection). A few hundred bytes end inside the first response.
CUT_PLAN = (350, None, 900, 200, None, 2500)
# Quick retries: the proxy cuts far more often than a real network fails.
QUICK_RETRIES = RetryPolicy(attempts=10, base_delay=0.05, max_delay=0.5)


class CuttingProxy:
    """A TCP proxy on the loopback that forwards to the API and cuts connections mid-response."""

    def __init__(self, upstream_port: int, plan: Sequence[int | None]) -> None:
        self._upstream_port = upstream_port
        self._plan = itertools.cycle(plan)
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        # The local API answers only requests for its own address (DESIGN.md, Who is calling).
        self._host_seen = f"Host: {HOST}:{self.port}\r\n".encode()
        self._host_sent = f"Host: {HOST}:{upstream_port}\r\n".encode()
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self.cuts = 0
        self.drops = 0
        self._acceptor = threading.Thread(target=self._accept, name="cutting-proxy", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def drop_all(self) -> None:
        """Close every open connection now, whatever it is doing."""
        with self._lock:
            connections, self._connections = self._connections, []
            self.drops += len(connections)
        for pair in connections:
            _close(pair)

    def close(self) -> None:
        # shutdown, unlike close, wakes the accept() waiting in the acceptor thread.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.drop_all()
        self._acceptor.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection((HOST, self._upstream_port), timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                self._connections.append(pair)
                budget = next(self._plan)
            threading.Thread(target=self._forward_requests, args=(pair,), daemon=True).start()
            threading.Thread(target=self._forward_answers, args=(pair, budget),
                             daemon=True).start()

    def _forward_requests(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        try:
            while data := client.recv(65536):
                upstream.sendall(data.replace(self._host_seen, self._host_sent))
        except OSError:
            pass
        finally:
            self._forget(pair)

    def _forward_answers(self, pair: tuple[socket.socket, socket.socket],
                         budget: int | None) -> None:
        client, upstream = pair
        sent = 0
        try:
            while data := upstream.recv(65536):
                if budget is not None and sent + len(data) > budget:
                    client.sendall(data[:budget - sent])
                    with self._lock:
                        self.cuts += 1
                    return
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            self._forget(pair)

    def _forget(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Close both ends of a connection once either direction has ended."""
        with self._lock:
            if pair in self._connections:
                self._connections.remove(pair)
        _close(pair)


def _close(pair: tuple[socket.socket, socket.socket]) -> None:
    for sock in pair:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.fixture
def proxy(local_stack) -> Iterator[CuttingProxy]:
    cutting = CuttingProxy(local_stack.api_port, CUT_PLAN)
    yield cutting
    cutting.close()


class Dropper:
    """Drops every connection of the proxy every `interval` seconds until stopped."""

    def __init__(self, proxy: CuttingProxy, interval: float = 0.4) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(proxy, interval), daemon=True)

    def __enter__(self) -> Dropper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self, proxy: CuttingProxy, interval: float) -> None:
        while not self._stop.wait(interval):
            proxy.drop_all()


def test_events_through_a_cutting_proxy_are_each_seen_once(
    local_stack, proxy: CuttingProxy
) -> None:
    with Client(local_stack.api_url) as direct, \
            Client(proxy.url, retry=QUICK_RETRIES) as cut_off:
        session_id = direct.start("cut me off [demo tokens=240 rate=120]")["sessionId"]
        with Dropper(proxy):
            events = list(cut_off.events(session_id))
        session = direct.session(session_id)

    assert_complete_log(events)
    assert deltas(events) == session["answer"]
    assert len(events) >= 8
    assert proxy.cuts >= 3 and proxy.drops >= 3


def test_a_start_whose_answer_is_cut_off_starts_one_run(local_stack) -> None:
    # Only the first connection is cut, 30 bytes into its answer: after the server acted on it.
    proxy = CuttingProxy(local_stack.api_port, (30, None))
    try:
        with Client(local_stack.api_url) as direct, \
                Client(proxy.url, retry=QUICK_RETRIES) as cut_off:
            before = {s["id"] for s in direct.sessions(page_size=100)}
            started = cut_off.start("started once [demo tokens=20 rate=400]")
            answer = direct.answer(started["sessionId"])
            after = {s["id"] for s in direct.sessions(page_size=100)}
    finally:
        proxy.close()

    assert proxy.cuts == 1
    assert after - before == {started["sessionId"]}
    assert answer.startswith("> started once")


def test_follow_through_a_cutting_proxy_prints_every_event_once(
    local_stack, proxy: CuttingProxy
) -> None:
    with Client(local_stack.api_url) as direct:
        session_id = direct.start("follow me [demo tokens=200 rate=100]")["sessionId"]
        with Dropper(proxy):
            followed = subprocess.run(
                [str(BACKCHAT), "follow", "--json", session_id], capture_output=True, text=True,
                encoding="utf-8", timeout=90, env=cli_env(proxy.url),
            )
        answer = direct.session(session_id)["answer"]

    assert followed.returncode == 0, followed.stderr
    events = json_lines(followed.stdout)
    assert_complete_log(events)
    assert deltas(events) == answer
    assert proxy.cuts + proxy.drops >= 3
    # Each retry is reported on stderr, one line each, without a traceback.
    assert "retrying in" in followed.stderr and "Traceback" not in followed.stderr
