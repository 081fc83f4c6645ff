"""Build the model providers this deployment offers (demo, openai, bedrock) from the environment.

Nothing here connects anywhere: the Bedrock client and a key kept in SSM are fetched on the
first run that needs them, so starting a function stays fast.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ProviderError
from chalicelib.providers.base import ModelRequest, Provider, ProviderStream
from chalicelib.providers.bedrock import BedrockProvider
from chalicelib.providers.demo import DemoProvider
from chalicelib.providers.openai import (
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    OpenAIProvider,
)
from chalicelib.settings import SettingsError

logger = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
DEFAULT_BEDROCK_TIMEOUT = 120.0
BEDROCK_CONNECT_TIMEOUT = 10.0

ClientFactory = Callable[[], Any]


class LazyProvider(Provider):
    """A provider built on its first use; a failed build is not kept, so the next run retries."""

    def __init__(self, build: Callable[[], Provider]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._provider: Provider | None = None

    def stream(self, request: ModelRequest) -> ProviderStream:
        """Build the provider if need be, then start the model call."""
        with self._lock:
            if self._provider is None:
                self._provider = self._build()
            provider = self._provider
        return provider.stream(request)


def build_providers(
    env: Mapping[str, str],
    ssm_client: ClientFactory | None = None,
    bedrock_client: ClientFactory | None = None,
) -> dict[str, Provider]:
    """Return the providers by name, configured from env; tests may inject the AWS clients."""
    region = _text(env, "AWS_REGION") or _text(env, "AWS_DEFAULT_REGION") or DEFAULT_REGION
    return {
        "demo": DemoProvider(),
        "openai": _openai_provider(env, ssm_client or (lambda: _ssm_client(region))),
        "bedrock": _bedrock_provider(env, region, bedrock_client),
    }


def _bedrock_provider(env: Mapping[str, str], region: str,
                      client: ClientFactory | None) -> Provider:
    """Return the Bedrock provider, whose client is made on first use."""
    region = _text(env, "BEDROCK_REGION") or region
    # A named profile lets the local stack, which runs with fake AWS keys, reach real Bedrock.
    profile = _text(env, "BEDROCK_PROFILE") or None
    read_timeout = _seconds(env, "BEDROCK_TIMEOUT", DEFAULT_BEDROCK_TIMEOUT)
    max_retries = _count(env, "BEDROCK_MAX_RETRIES", DEFAULT_MAX_RETRIES)

    def build() -> Provider:
        try:
            made = client() if client else bedrock_runtime_client(region, read_timeout, profile)
        except BotoCoreError as error:
            raise ProviderError(f"Amazon Bedrock could not be set up: {error}") from None
        return BedrockProvider(made, max_retries=max_retries)

    return LazyProvider(build)


def _openai_provider(env: Mapping[str, str], ssm_client: ClientFactory) -> Provider:
    """Return the OpenAI-compatible provider; built lazily when its key lives in SSM."""
    base_url = _text(env, "OPENAI_BASE_URL") or DEFAULT_BASE_URL
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"OPENAI_BASE_URL must start with http:// or https://, not {base_url!r}")
    connect_timeout = _seconds(env, "OPENAI_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
    read_timeout = _seconds(env, "OPENAI_TIMEOUT", DEFAULT_READ_TIMEOUT)
    max_retries = _count(env, "OPENAI_MAX_RETRIES", DEFAULT_MAX_RETRIES)

    def provider(api_key: str | None) -> OpenAIProvider:
        return OpenAIProvider(base_url, api_key, connect_timeout=connect_timeout,
                              read_timeout=read_timeout, max_retries=max_retries)

    api_key = _text(env, "OPENAI_API_KEY")
    parameter = _text(env, "OPENAI_API_KEY_SSM_PARAMETER")
    # A key set directly wins, so a developer can override the deployed parameter.
    if api_key or not parameter:
        return provider(api_key or None)
    return LazyProvider(lambda: provider(read_ssm_parameter(ssm_client(), parameter)))


def read_ssm_parameter(client: Any, name: str) -> str:
    """Return the decrypted value of an SSM parameter; ProviderError if it cannot be read."""
    try:
        return client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "an error")
    except BotoCoreError as error:
        code = type(error).__name__
    logger.warning("the API key in SSM parameter %s could not be read: %s", name, code)
    raise ProviderError(
        f"The model provider's API key could not be read from AWS SSM ({code}); "
        "the server log names the parameter."
    )


def bedrock_runtime_client(region: str, read_timeout: float, profile: str | None = None) -> Any:
    """Return a bedrock-runtime client that makes one attempt per call and waits read_timeout."""
    # boto3 is imported on first use: it takes a while, and most processes never need it here.
    import boto3
    from botocore.config import Config

    # One attempt per call: BedrockProvider retries itself, and only before the first token.
    config = Config(read_timeout=read_timeout, connect_timeout=BEDROCK_CONNECT_TIMEOUT,
                    retries={"mode": "standard", "total_max_attempts": 1})
    session = boto3.Session(profile_name=profile)
    return session.client("bedrock-runtime", region_name=region, config=config)


def _ssm_client(region: str) -> Any:
    """Return an SSM client for reading the API key parameter."""
    import boto3

    return boto3.client("ssm", region_name=region)


def _text(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """Return a positive number of seconds from env; SettingsError names the variable."""
    raw = _text(env, name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SettingsError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """Return a whole number >= 0 from env; SettingsError names the variable."""
    raw = _text(env, name)
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise SettingsError(f"{name} must be a whole number of at least 0, not {raw!r}")
    return int(raw)
