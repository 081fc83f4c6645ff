"""API keys never reach a log record or an error message, and keys kept in SSM are fetched lazily."""
from __future__ import annotations

import json
import logging
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from chalicelib.errors import ProviderError
from chalicelib.providers.base import Message, ModelRequest
from chalicelib.providers.catalog import build_providers
from chalicelib.providers.openai import OpenAIProvider
from tests.openai_server import FakeOpenAIServer, Status, Stream, chunk, sse, text_answer

KEY = "sk-test-SECRET-123"
# A key with no recognisable shape: only exact redaction can hide it.
PLAIN_KEY = "local-server-passphrase-9f8e7d"
REQUEST = ModelRequest("test-model", (Message("user", "hi"),))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record from every logger, DEBUG included (requests and urllib3 too)."""
    caplog.set_level(logging.DEBUG)
    return caplog


def run_to_error(provider: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        list(provider.stream(REQUEST))
    return caught.value


def logged_text(logs: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
                     for record in logs.records)


@pytest.mark.parametrize("key", [KEY, PLAIN_KEY])
@pytest.mark.parametrize("reply", [
    Status(401, json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}",
                                      "code": "invalid_api_key"}})),
    Status(500, json.dumps({"error": {"message": f"internal error for key {KEY} / {PLAIN_KEY}"}})),
    Status(400, json.dumps({"error": {"message": f"bad request from {PLAIN_KEY} ({KEY})"}})),
    Stream([sse(chunk({"content": "Hi"})), sse({"error": {"message": f"failed: {PLAIN_KEY} {KEY}"}})]),
], ids=["401", "500", "400", "error-in-stream"])
def test_the_key_appears_in_no_log_record_and_no_error(server, logs, key: str, reply) -> None:
    server.script(reply)
    error = run_to_error(OpenAIProvider(server.url, key, sleep=lambda _: None, max_retries=1))
    assert server.requests[0].headers["Authorization"] == f"Bearer {key}"
    assert logs.records, "DEBUG logging was captured"
    assert key not in logged_text(logs)
    assert key not in str(error)
    # Whatever key is configured, anything shaped like an OpenAI key is masked too.
    assert KEY not in str(error)


def test_the_key_from_ssm_appears_in_no_log_record_and_no_error(server, logs) -> None:
    server.script(Status(401, json.dumps({"error": {"message": f"Incorrect API key: {KEY}"}})))
    ssm = FakeSSM(KEY)
    provider = build_providers({"OPENAI_BASE_URL": server.url,
                                "OPENAI_API_KEY_SSM_PARAMETER": "/backchat/openai-key"},
                               ssm_client=lambda: ssm)["openai"]
    error = run_to_error(provider)
    assert str(error) == "The model provider rejected the credentials (HTTP 401)."
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in logged_text(logs)


class FakeSSM:
    """get_parameter answers with the value, or raises the given error; calls are recorded."""

    def __init__(self, value: str = KEY, error: Exception | None = None) -> None:
        self._value = value
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def get_parameter(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        if self.error:
            raise self.error
        return {"Parameter": {"Name": arguments["Name"], "Type": "SecureString",
                              "Value": self._value, "Version": 1}}


def test_ssm_key_is_fetched_once_on_first_use_with_decryption(server) -> None:
    server.script(Stream(text_answer(["ok"])))
    ssm = FakeSSM()
    made: list[FakeSSM] = []

    def ssm_client() -> FakeSSM:
        made.append(ssm)
        return ssm

    provider = build_providers({"OPENAI_BASE_URL": server.url,
                                "OPENAI_API_KEY_SSM_PARAMETER": "/backchat/openai-key"},
                               ssm_client=ssm_client)["openai"]
    assert (made, ssm.calls) == ([], [])
    for _ in range(2):
        list(provider.stream(REQUEST))
    assert len(made) == 1
    assert ssm.calls == [{"Name": "/backchat/openai-key", "WithDecryption": True}]
    assert [r.headers["Authorization"] for r in server.requests] == [f"Bearer {KEY}"] * 2


def test_an_unreadable_ssm_parameter_is_a_readable_error_and_is_tried_again(server, logs) -> None:
    server.script(Stream(text_answer(["ok"])))
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}},
                         "GetParameter")
    ssm = FakeSSM(error=denied)
    provider = build_providers({"OPENAI_BASE_URL": server.url,
                                "OPENAI_API_KEY_SSM_PARAMETER": "/backchat/openai-key"},
                               ssm_client=lambda: ssm)["openai"]
    error = run_to_error(provider)
    assert str(error) == ("The model provider's API key could not be read from AWS SSM "
                          "(AccessDeniedException); the server log names the parameter.")
    assert "/backchat/openai-key" in logs.text
    ssm.error = None
    list(provider.stream(REQUEST))
    assert len(ssm.calls) == 2


def test_a_key_set_directly_wins_over_the_ssm_parameter(server) -> None:
    server.script(Stream(text_answer(["ok"])))
    ssm = FakeSSM()
    provider = build_providers({"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "sk-direct-key",
                                "OPENAI_API_KEY_SSM_PARAMETER": "/backchat/openai-key"},
                               ssm_client=lambda: ssm)["openai"]
    list(provider.stream(REQUEST))
    assert ssm.calls == []
    assert server.requests[0].headers["Authorization"] == "Bearer sk-direct-key"
