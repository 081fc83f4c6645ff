"""Settings: read once from the environment, with errors that name the variable."""
from __future__ import annotations

import dataclasses

import pytest

from chalicelib.settings import Settings, SettingsError


def test_defaults_suit_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert (settings.dispatch_mode, settings.sessions_table, settings.events_table) == (
        "thread", "chatSessions", "chatEvents")
    assert settings.flush_interval == 0.2
    assert settings.dynamodb_endpoint is None


def test_values_come_from_the_environment() -> None:
    settings = Settings.from_env({
        "DISPATCH_MODE": "lambda", "ORCHESTRATOR_FUNCTION": "fn", "SESSIONS_TABLE": "s",
        "EVENTS_TABLE": "e", "DDB_ENDPOINT": "http://127.0.0.1:9", "FLUSH_INTERVAL": "0.25",
        "LEASE_SECONDS": "60", "AWS_REGION": "eu-west-1",
    })
    assert (settings.dispatch_mode, settings.orchestrator_function, settings.region) == (
        "lambda", "fn", "eu-west-1")
    assert (settings.sessions_table, settings.events_table) == ("s", "e")
    assert (settings.dynamodb_endpoint, settings.flush_interval, settings.lease_seconds) == (
        "http://127.0.0.1:9", 0.25, 60)


@pytest.mark.parametrize("env, words", [
    ({"DISPATCH_MODE": "carrier-pigeon"}, "DISPATCH_MODE must be one of lambda, thread, inline"),
    ({"LEASE_SECONDS": "soon"}, "LEASE_SECONDS must be a whole number"),
    ({"FLUSH_INTERVAL": "-1"}, "FLUSH_INTERVAL must be at least 0.0"),
    ({"HEARTBEAT_INTERVAL": "20", "LEASE_SECONDS": "30"}, "at most a third of LEASE_SECONDS"),
])
def test_bad_values_name_the_variable(env, words) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().stage = "prod"  # type: ignore[misc]
