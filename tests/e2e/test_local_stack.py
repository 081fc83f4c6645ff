"""The local stack behind `make run`: it answers, serves the page safely, and stops cleanly."""
from __future__ import annotations

import http.client
import signal
from typing import Callable
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.e2e


def expected_csp(api_url: str) -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {api_url}; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )


def assert_strict_headers(response: requests.Response, api_url: str) -> None:
    assert response.headers["Content-Security-Policy"] == expected_csp(api_url)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def test_health_answers_ok_through_the_real_stack(local_stack, http: requests.Session) -> None:
    response = http.get(f"{local_stack.api_url}/api/health", timeout=10)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_page_is_served_with_a_strict_content_security_policy(
    local_stack, http: requests.Session
) -> None:
    response = http.get(f"{local_stack.web_url}/", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<html" in response.text.lower()
    assert_strict_headers(response, local_stack.api_url)


def test_config_module_points_the_page_at_the_api_port(
    local_stack, http: requests.Session
) -> None:
    response = http.get(f"{local_stack.web_url}/config.js", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert response.text.strip() == (
        f'export const API_BASE = "http://127.0.0.1:{local_stack.api_port}";'
    )
    assert_strict_headers(response, local_stack.api_url)


def test_missing_file_is_404_with_the_same_strict_headers(
    local_stack, http: requests.Session
) -> None:
    response = http.get(f"{local_stack.web_url}/no-such-file.js", timeout=10)

    assert response.status_code == 404
    assert_strict_headers(response, local_stack.api_url)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/../scripts/local_stack.py",
        "/%2e%2e/scripts/local_stack.py",
        "/..%2fscripts%2flocal_stack.py",
        "/%2E%2E%2Fscripts%2Flocal_stack.py",
        "/..\\scripts\\local_stack.py",
        "/..%5cscripts%5clocal_stack.py",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/./../.chalice/config.json",
    ],
)
def test_page_server_refuses_paths_outside_frontend(local_stack, raw_path: str) -> None:
    # http.client sends the path as written; requests/urllib3 would normalise the dots away.
    address = urlsplit(local_stack.web_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request("GET", raw_path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()

    assert response.status == 404
    assert b"local_stack" not in body and b"root:" not in body and b"stages" not in body


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_stack_and_every_process_it_started(
    launch_stack: Callable, signum: int
) -> None:
    stack = launch_stack()
    tree = stack.process_tree()
    # The supervisor, the moto server and chalice local at least.
    assert len(tree) >= 3, f"expected the stack and its children, found {tree}"

    code = stack.stop(signum)

    assert code == 0, f"exit status {code}; output:\n{stack.output.text()}"
    survivors = [process for process in tree if process.is_alive()]
    assert survivors == [], f"still running after {signal.Signals(signum).name}: {survivors}"
