"""build_providers: the providers and their settings from environment variables, built lazily."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from chalicelib.errors import ProviderError
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import Message, ModelRequest
from chalicelib.providers.catalog import LazyProvider, bedrock_runtime_client, build_providers
from chalicelib.providers.demo import DemoProvider
from chalicelib.providers.openai import OpenAIProvider
from chalicelib.settings import SettingsError
from tests.openai_server import FakeOpenAIServer, Hang, Status

REQUEST = ModelRequest("some-model", (Message("user", "hi"),))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


class FakeBedrockClient:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def converse_stream(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(arguments)
        return {"stream": FakeEventStream()}


class FakeEventStream:
    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield {"messageStop": {"stopReason": "end_turn"}}

    def close(self) -> None:
        pass


def test_offers_demo_openai_and_bedrock_and_the_registry_accepts_their_models() -> None:
    providers = build_providers({})
    assert isinstance(providers["demo"], DemoProvider)
    assert isinstance(providers["openai"], OpenAIProvider)
    assert isinstance(providers["bedrock"], LazyProvider)
    registry = ProviderRegistry(providers)
    assert registry.resolve("openai:gpt-4o-mini").name == "gpt-4o-mini"
    assert registry.resolve("bedrock:amazon.nova-lite-v1:0").name == "amazon.nova-lite-v1:0"


def test_the_bedrock_client_is_built_on_first_use_only_once() -> None:
    client = FakeBedrockClient()
    built: list[FakeBedrockClient] = []

    def make_client() -> FakeBedrockClient:
        built.append(client)
        return client

    bedrock = build_providers({}, bedrock_client=make_client)["bedrock"]
    assert built == []
    for _ in range(2):
        list(bedrock.stream(REQUEST))
    assert len(built) == 1 and len(client.calls) == 2


def test_the_bedrock_client_makes_one_attempt_per_call_in_the_given_region() -> None:
    client = bedrock_runtime_client("eu-central-1", 30.0)
    assert client.meta.region_name == "eu-central-1"
    assert client.meta.config.read_timeout == 30.0
    assert client.meta.config.retries["total_max_attempts"] == 1


def test_bedrock_region_and_profile_can_differ_from_the_tables(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").write_text("[profile bedrock-user]\nregion = us-west-2\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    assert bedrock_runtime_client("eu-west-1", 30.0, "bedrock-user").meta.region_name == "eu-west-1"
    bedrock = build_providers({"AWS_REGION": "us-east-1", "BEDROCK_PROFILE": "nobody"})["bedrock"]
    with pytest.raises(ProviderError, match=r"Amazon Bedrock could not be set up: .*\(nobody\)"):
        bedrock.stream(REQUEST)


def test_openai_settings_come_from_the_environment(server) -> None:
    server.script(Status(503))
    provider = build_providers({"OPENAI_BASE_URL": server.url + "/", "OPENAI_MAX_RETRIES": "0"})
    with pytest.raises(ProviderError, match="HTTP 503"):
        list(provider["openai"].stream(REQUEST))
    assert len(server.requests) == 1
    assert "Authorization" not in server.requests[0].headers

    server.script(Hang())
    provider = build_providers({"OPENAI_BASE_URL": server.url, "OPENAI_TIMEOUT": "0.3"})
    with pytest.raises(ProviderError, match=r"nothing received for 0\.3 s"):
        list(provider["openai"].stream(REQUEST))


@pytest.mark.parametrize("env, message", [
    ({"OPENAI_BASE_URL": "127.0.0.1:11434/v1"}, "OPENAI_BASE_URL must start with http"),
    ({"OPENAI_TIMEOUT": "soon"}, "OPENAI_TIMEOUT must be a positive number"),
    ({"OPENAI_CONNECT_TIMEOUT": "0"}, "OPENAI_CONNECT_TIMEOUT must be a positive number"),
    ({"BEDROCK_TIMEOUT": "nan"}, "BEDROCK_TIMEOUT must be a positive number"),
    ({"OPENAI_MAX_RETRIES": "-1"}, "OPENAI_MAX_RETRIES must be a whole number"),
    ({"BEDROCK_MAX_RETRIES": "2.5"}, "BEDROCK_MAX_RETRIES must be a whole number"),
])
def test_unusable_values_are_settings_errors_naming_the_variable(env, message) -> None:
    with pytest.raises(SettingsError, match=message):
        build_providers(env)
