"""Dispatchers: the Lambda async invoke (botocore Stubber), the thread pool, inline."""
from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.dispatch import InlineDispatcher, LambdaDispatcher, ThreadDispatcher
from chalicelib.errors import DispatchFailed
from chalicelib.settings import Settings
from chalicelib.wiring import build_dispatcher


@pytest.fixture
def lambda_client():
    return boto3.client("lambda", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def test_lambda_dispatch_is_an_async_invoke_with_only_the_session_id(lambda_client) -> None:
    with Stubber(lambda_client) as stubber:
        stubber.add_response(
            "invoke",
            {"StatusCode": 202},
            {"FunctionName": "backchat-dev-orchestrator", "InvocationType": "Event",
             "Payload": json.dumps({"sessionId": "abc"}).encode("utf-8")},
        )
        LambdaDispatcher(lambda_client, "backchat-dev-orchestrator").dispatch("abc")
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize("error_code", ["TooManyRequestsException", "ResourceNotFoundException",
                                        "ServiceException"])
def test_lambda_invoke_error_is_a_dispatch_failure(lambda_client, error_code) -> None:
    with Stubber(lambda_client) as stubber:
        stubber.add_client_error("invoke", service_error_code=error_code, http_status_code=429)
        with pytest.raises(DispatchFailed):
            LambdaDispatcher(lambda_client, "fn").dispatch("abc")


def test_lambda_invoke_not_accepted_is_a_dispatch_failure(lambda_client) -> None:
    with Stubber(lambda_client) as stubber:
        stubber.add_response("invoke", {"StatusCode": 200})
        with pytest.raises(DispatchFailed):
            LambdaDispatcher(lambda_client, "fn").dispatch("abc")


def test_thread_dispatch_returns_before_the_run_finishes() -> None:
    release = threading.Event()
    finished: list[str] = []

    def run(session_id: str, remaining_time) -> None:
        release.wait(5)
        finished.append(session_id)

    dispatcher = ThreadDispatcher(run, max_runs=2)
    dispatcher.dispatch("s1")
    assert finished == []
    release.set()
    dispatcher.shutdown()
    assert finished == ["s1"]


def test_thread_dispatch_survives_a_crashing_run() -> None:
    ran: list[str] = []

    def run(session_id: str, remaining_time) -> None:
        ran.append(session_id)
        raise RuntimeError("boom")

    dispatcher = ThreadDispatcher(run, max_runs=1)
    dispatcher.dispatch("a")
    dispatcher.shutdown()
    dispatcher = ThreadDispatcher(run, max_runs=1)
    dispatcher.dispatch("b")
    dispatcher.shutdown()
    assert ran == ["a", "b"]


def test_a_run_that_raises_is_delivered_again_like_a_lambda_async_invoke() -> None:
    """Lambda runs a failed async invocation twice more; the local dispatcher does the same,
    each delivery with a deadline of its own, and stops once one returns."""
    deliveries: list[float] = []

    def run(session_id: str, remaining_time) -> None:
        deliveries.append(remaining_time())
        if len(deliveries) < 2:
            raise RuntimeError("DynamoDB is not answering")

    dispatcher = ThreadDispatcher(run, max_runs=1, run_seconds=900, retry_delays=(0.01, 0.01))
    dispatcher.dispatch("a")
    _wait_for(lambda: len(deliveries) == 2)
    dispatcher.shutdown()
    assert len(deliveries) == 2
    assert all(899 < remaining <= 900 for remaining in deliveries)


def test_a_run_that_keeps_raising_is_delivered_three_times_in_all() -> None:
    deliveries: list[str] = []

    def run(session_id: str, remaining_time) -> None:
        deliveries.append(session_id)
        raise RuntimeError("boom")

    dispatcher = ThreadDispatcher(run, max_runs=1, retry_delays=(0.01, 0.01))
    dispatcher.dispatch("a")
    _wait_for(lambda: len(deliveries) == 3)
    time.sleep(0.1)  # a fourth delivery would come within this
    dispatcher.shutdown()
    assert deliveries == ["a", "a", "a"]


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_slow_runs_never_keep_others_from_starting() -> None:
    """Each run has a thread of its own: 20 runs that never end do not delay the 21st."""
    release = threading.Event()
    started: list[str] = []
    lock = threading.Lock()

    def run(session_id: str, remaining_time) -> None:
        with lock:
            started.append(session_id)
        release.wait(30)

    dispatcher = ThreadDispatcher(run, max_runs=100)
    for index in range(21):
        dispatcher.dispatch(f"s{index}")
    try:
        deadline = time.monotonic() + 20
        while len(started) < 21 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(started) == sorted(f"s{index}" for index in range(21))
    finally:
        release.set()
        dispatcher.shutdown()


def test_past_the_cap_a_dispatch_fails_at_once_instead_of_queueing() -> None:
    release = threading.Event()
    dispatcher = ThreadDispatcher(lambda session_id, remaining: release.wait(30), max_runs=2)
    dispatcher.dispatch("a")
    dispatcher.dispatch("b")
    with pytest.raises(DispatchFailed, match="Too many runs"):
        dispatcher.dispatch("c")
    release.set()
    dispatcher.shutdown()


def test_a_local_run_gets_the_deadline_a_lambda_run_gets() -> None:
    seen: list[float] = []
    dispatcher = ThreadDispatcher(lambda session_id, remaining: seen.append(remaining()),
                                  max_runs=1, run_seconds=900)
    dispatcher.dispatch("a")
    dispatcher.shutdown()
    assert 899 < seen[0] <= 900


def test_inline_dispatch_runs_before_returning() -> None:
    ran: list[str] = []
    InlineDispatcher(lambda session_id, remaining: ran.append(session_id)).dispatch("s1")
    assert ran == ["s1"]


@pytest.mark.parametrize("mode, kind", [("lambda", LambdaDispatcher), ("thread", ThreadDispatcher),
                                        ("inline", InlineDispatcher)])
def test_dispatch_mode_chooses_the_dispatcher(mode, kind, monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    orchestrator = type("Orchestrator", (), {"run": lambda self, session_id, remaining: None})()
    dispatcher = build_dispatcher(Settings(dispatch_mode=mode), orchestrator)
    assert isinstance(dispatcher, kind)
