"""One frozen settings object, read once from the environment."""
from __future__ import annotations

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
    # Set only for the embedded moto server (local stack, end-to-end tests).
    dynamodb_endpoint: str | None = None
    dispatch_mode: str = "thread"
    orchestrator_function: str = "backchat-local-orchestrator"
    local_workers: int = 16
    default_model: str = "demo"
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
    max_conversation_id_chars: int = 128
    # The session row also holds the input; capping the stored answer keeps it under 400 KB.
    max_answer_bytes: int = 120_000
    max_tool_output_chars: int = 16_000
    step_limit: int = 8
    flush_mode: str = "merge"
    flush_interval: float = 0.2
    flush_max_chars: int = 2_000
    heartbeat_interval: float = 1.0
    lease_seconds: int = 30
    # A dispatched run must claim its session within this time or the reaper ends it.
    claim_timeout_seconds: int = 300
    # Stop this long before the Lambda deadline so the terminal event is always written.
    deadline_margin_seconds: float = 10.0
    retention_days: int = 30
    # Tries of a run's write when DynamoDB throttles (botocore's own retries come first).
    store_retries: int = 5
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
            dynamodb_endpoint=reader.text("DDB_ENDPOINT", "") or None,
            dispatch_mode=reader.choice("DISPATCH_MODE", cls.dispatch_mode, DISPATCH_MODES),
            orchestrator_function=reader.text("ORCHESTRATOR_FUNCTION", cls.orchestrator_function),
            local_workers=reader.integer("LOCAL_WORKERS", cls.local_workers, minimum=1),
            default_model=reader.text("DEFAULT_MODEL", cls.default_model),
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
            claim_timeout_seconds=reader.integer(
                "CLAIM_TIMEOUT_SECONDS", cls.claim_timeout_seconds, minimum=1
            ),
            deadline_margin_seconds=reader.number(
                "DEADLINE_MARGIN_SECONDS", cls.deadline_margin_seconds, minimum=0.0
            ),
            retention_days=reader.integer("RETENTION_DAYS", cls.retention_days, minimum=1),
            store_retries=reader.integer("STORE_RETRIES", cls.store_retries, minimum=1),
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
        return settings

    def with_overrides(self, **changes: object) -> "Settings":
        """Return a copy with some fields changed (tests, benchmarks)."""
        return replace(self, **changes)


class _EnvReader:
    """Typed access to environment variables with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, default).strip()

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
