"""One frozen settings object, read once from the environment."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, replace
from typing import Mapping

DISPATCH_MODES = ("lambda", "thread", "inline")
AUTH_MODES = ("none", "apikey", "cognito")
# per_chunk writes every model chunk at once: the seed design's cost, the benchmarks' baseline.
FLUSH_MODES = ("merge", "per_chunk")


class SettingsError(ValueError):
    """An environment variable holds a value backchat cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything backchat reads from its environment, with local-friendly defaults."""

    stage: str = "local"
    region: str = "us-east-1"
    sessions_table: str = "chatSessions"
    events_table: str = "chatEvents"
    conversations_table: str = "chatConversations"
    # Set only for the embedded moto server (local stack, end-to-end tests).
    dynamodb_endpoint: str | None = None
    dispatch_mode: str = "thread"
    orchestrator_function: str = "backchat-local-orchestrator"
    # thread dispatch: at most this many runs at once, each on its own thread (as Lambda gives
    # each run its own invocation); a start past it is a 503, never a queue.
    local_max_runs: int = 1000
    default_model: str = "demo"
    # Models a start may name ("demo", "openai:gpt-4o-mini", "bedrock:*" ...); empty: any model
    # whose provider is configured. fnmatch patterns.
    allowed_models: tuple[str, ...] = ()
    auth_mode: str = "none"
    local_owner: str = "local"
    # apikey mode: "owner:sha256-hex,..." (see chalicelib/auth.py); never the keys themselves.
    api_key_hashes: str = ""
    cognito_user_pool_arn: str = ""
    max_running_per_owner: int = 50
    cors_origin: str = "*"
    # Room for the largest valid input even when every character is \u-escaped in the JSON.
    max_body_bytes: int = 1_000_000
    max_message_chars: int = 32_000
    max_history_items: int = 200
    max_history_bytes: int = 96_000
    max_title_chars: int = 200
    # The stored answer (its own item) is capped so that the item, and a conversation page
    # holding it, stay under DynamoDB's 400 KB item and Lambda's 6 MB response limits.
    max_answer_bytes: int = 300_000
    # The session row's error text: the row must stay under 4 KB whatever the input (every
    # flush updates it).
    max_error_bytes: int = 1_000
    max_tool_output_chars: int = 16_000
    step_limit: int = 8
    flush_mode: str = "merge"
    flush_interval: float = 0.2
    flush_max_chars: int = 2_000
    heartbeat_interval: float = 1.0
    lease_seconds: int = 30
    # How often a run moves its entry in the reaper's index (a GSI write); the lease itself is
    # renewed by every write, which touches no index.
    lease_index_seconds: float = 15.0
    # A dispatched run must claim its session within this time or the reaper ends it.
    claim_timeout_seconds: int = 300
    # Stop this long before the Lambda deadline so the terminal event is always written.
    deadline_margin_seconds: float = 10.0
    retention_days: int = 30
    # Tries of a store call when DynamoDB throttles or a connection fails; botocore's own
    # retries are off, so these are all the tries there are.
    store_retries: int = 5
    # A route's store calls, retries included, start no later than this after the request
    # (then 503). With a long-poll's 20 s wait on top and one more try (connect + read), a
    # request ends within 27 s: before the API function's 28 s and API Gateway's 29 s.
    store_route_budget: float = 4.0
    # One DynamoDB request waits at most this long to connect, and then to read an answer
    # (DynamoDB answers in milliseconds; the local stack's moto, loaded, may take seconds:
    # its stage sets longer ones).
    store_connect_timeout: float = 1.0
    store_read_timeout: float = 2.0
    max_pool_connections: int = 50
    # Signs list cursors (HMAC-SHA256): a cursor the server did not issue is a 400. Deployed
    # stages set it per deployment; the local stage may use the fixed one.
    cursor_secret: str = ""
    # The local stack has no scheduler: a thread reaps this often (deployed: every minute).
    local_reaper_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from environment variables (os.environ by default)."""
        env = os.environ if env is None else env
        reader = _EnvReader(env)
        settings = cls(
            stage=reader.text("BACKCHAT_STAGE", cls.stage),
            region=reader.text("AWS_REGION", reader.text("AWS_DEFAULT_REGION", cls.region)),
            sessions_table=reader.text("SESSIONS_TABLE", cls.sessions_table),
            events_table=reader.text("EVENTS_TABLE", cls.events_table),
            conversations_table=reader.text("CONVERSATIONS_TABLE", cls.conversations_table),
            dynamodb_endpoint=reader.text("DDB_ENDPOINT", "") or None,
            dispatch_mode=reader.choice("DISPATCH_MODE", cls.dispatch_mode, DISPATCH_MODES),
            orchestrator_function=reader.text("ORCHESTRATOR_FUNCTION", cls.orchestrator_function),
            local_max_runs=reader.integer("LOCAL_MAX_RUNS", cls.local_max_runs, minimum=1),
            default_model=reader.text("DEFAULT_MODEL", cls.default_model),
            allowed_models=reader.items("ALLOWED_MODELS"),
            auth_mode=reader.choice("AUTH_MODE", cls.auth_mode, AUTH_MODES),
            local_owner=reader.text("LOCAL_OWNER", cls.local_owner),
            api_key_hashes=reader.text("API_KEY_HASHES", cls.api_key_hashes),
            cognito_user_pool_arn=reader.text("COGNITO_USER_POOL_ARN", cls.cognito_user_pool_arn),
            max_running_per_owner=reader.integer(
                "MAX_RUNNING_PER_OWNER", cls.max_running_per_owner, minimum=1
            ),
            cors_origin=reader.text("CORS_ORIGIN", cls.cors_origin),
            max_body_bytes=reader.integer("MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            max_message_chars=reader.integer("MAX_MESSAGE_CHARS", cls.max_message_chars, minimum=1),
            max_history_items=reader.integer("MAX_HISTORY_ITEMS", cls.max_history_items, minimum=0),
            max_history_bytes=reader.integer("MAX_HISTORY_BYTES", cls.max_history_bytes, minimum=0),
            max_tool_output_chars=reader.integer(
                "MAX_TOOL_OUTPUT_CHARS", cls.max_tool_output_chars, minimum=100
            ),
            step_limit=reader.integer("STEP_LIMIT", cls.step_limit, minimum=1),
            flush_mode=reader.choice("FLUSH_MODE", cls.flush_mode, FLUSH_MODES),
            flush_interval=reader.number("FLUSH_INTERVAL", cls.flush_interval, minimum=0.0),
            heartbeat_interval=reader.number(
                "HEARTBEAT_INTERVAL", cls.heartbeat_interval, minimum=0.05
            ),
            lease_seconds=reader.integer("LEASE_SECONDS", cls.lease_seconds, minimum=2),
            lease_index_seconds=reader.number(
                "LEASE_INDEX_SECONDS", cls.lease_index_seconds, minimum=0.1
            ),
            claim_timeout_seconds=reader.integer(
                "CLAIM_TIMEOUT_SECONDS", cls.claim_timeout_seconds, minimum=1
            ),
            deadline_margin_seconds=reader.number(
                "DEADLINE_MARGIN_SECONDS", cls.deadline_margin_seconds, minimum=0.0
            ),
            retention_days=reader.integer("RETENTION_DAYS", cls.retention_days, minimum=1),
            store_retries=reader.integer("STORE_RETRIES", cls.store_retries, minimum=1),
            store_route_budget=reader.number(
                "STORE_ROUTE_BUDGET", cls.store_route_budget, minimum=0.1
            ),
            store_connect_timeout=reader.number(
                "STORE_CONNECT_TIMEOUT", cls.store_connect_timeout, minimum=0.05
            ),
            store_read_timeout=reader.number(
                "STORE_READ_TIMEOUT", cls.store_read_timeout, minimum=0.05
            ),
            max_pool_connections=reader.integer(
                "MAX_POOL_CONNECTIONS", cls.max_pool_connections, minimum=1
            ),
            cursor_secret=reader.text("CURSOR_SECRET", cls.cursor_secret),
            local_reaper_seconds=reader.number(
                "LOCAL_REAPER_SECONDS", cls.local_reaper_seconds, minimum=0.1
            ),
        )
        if settings.auth_mode == "apikey" and not settings.api_key_hashes:
            raise SettingsError("AUTH_MODE=apikey needs API_KEY_HASHES (owner:sha256-hex,...)")
        if settings.auth_mode == "cognito" and not settings.cognito_user_pool_arn:
            raise SettingsError("AUTH_MODE=cognito needs COGNITO_USER_POOL_ARN")
        if settings.heartbeat_interval * 3 > settings.lease_seconds:
            raise SettingsError("HEARTBEAT_INTERVAL must be at most a third of LEASE_SECONDS")
        if settings.allowed_models and not any(
                fnmatch.fnmatchcase(settings.default_model, pattern)
                for pattern in settings.allowed_models):
            raise SettingsError(f"DEFAULT_MODEL {settings.default_model!r} is not in ALLOWED_MODELS")
        if settings.lease_index_seconds * 2 > settings.lease_seconds:
            raise SettingsError("LEASE_INDEX_SECONDS must be at most half of LEASE_SECONDS")
        return settings

    def check_runtime_secrets(self) -> None:
        """Raise SettingsError if a deployed function lacks a secret it must have.

        Not part of from_env: `chalice package` imports the app with the stage's settings,
        before deploy time has supplied the secrets.
        """
        if self.dispatch_mode == "lambda" and len(self.cursor_secret) < 16:
            raise SettingsError("CURSOR_SECRET must be set (16 characters or more) when deployed")

    def with_overrides(self, **changes: object) -> "Settings":
        """Return a copy with some fields changed (tests, benchmarks)."""
        return replace(self, **changes)


class _EnvReader:
    """Typed access to environment variables with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, default).strip()

    def items(self, name: str) -> tuple[str, ...]:
        """Return a comma-separated list, without empty entries."""
        return tuple(filter(None, (part.strip() for part in self._env.get(name, "").split(","))))

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        return value

    def integer(self, name: str, default: int, minimum: int) -> int:
        return int(self._number(name, default, minimum, int))

    def number(self, name: str, default: float, minimum: float) -> float:
        return float(self._number(name, default, minimum, float))

    def _number(self, name: str, default: float, minimum: float, kind: type) -> float:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = kind(raw)
        except ValueError:
            noun = "whole number" if kind is int else "number"
            raise SettingsError(f"{name} must be a {noun}, not {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, not {value}")
        return value
