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
    ({"LEASE_INDEX_SECONDS": "16", "LEASE_SECONDS": "30"}, "at most half of LEASE_SECONDS"),
    ({"ALLOWED_MODELS": "openai:gpt-4o", "DEFAULT_MODEL": "demo"}, "not in ALLOWED_MODELS"),
])
def test_bad_values_name_the_variable(env, words) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().stage = "prod"  # type: ignore[misc]


def test_a_deployed_function_needs_a_cursor_secret() -> None:
    with pytest.raises(SettingsError, match="CURSOR_SECRET"):
        Settings.from_env({"DISPATCH_MODE": "lambda"}).check_runtime_secrets()
    Settings.from_env({"DISPATCH_MODE": "lambda",
                       "CURSOR_SECRET": "0123456789abcdef"}).check_runtime_secrets()
    Settings.from_env({}).check_runtime_secrets()  # the local stack's fixed one will do


def test_allowed_models_are_read_as_a_list() -> None:
    settings = Settings.from_env({"ALLOWED_MODELS": " demo, openai:gpt-4o* ,,"})
    assert settings.allowed_models == ("demo", "openai:gpt-4o*")


@pytest.mark.parametrize("stage", ["dev", "prod"])
@pytest.mark.parametrize("function", ["api_handler", "orchestrator", "reaper"])
def test_each_deployed_function_names_the_tables_its_policy_grants(stage, function) -> None:
    """`chalice deploy` takes the settings from .chalice/config.json: the tables they name
    must be the ones the stage's policy files (and infra/tables.yaml) name."""
    import json
    from pathlib import Path

    from chalice.cli.factory import CLIFactory

    root = Path(__file__).resolve().parent.parent
    config = CLIFactory(str(root), environ={}).create_config_obj(
        chalice_stage_name=stage).scope(stage, function)
    settings = Settings.from_env({**config.environment_variables,
                                  "CURSOR_SECRET": "given at deploy time",
                                  "API_KEY_HASHES": "a:" + "0" * 64})
    names = (settings.sessions_table, settings.events_table, settings.conversations_table)
    assert names == tuple(f"backchat-{stage}-{table}" for table in
                          ("chatSessions", "chatEvents", "chatConversations"))
    policy_name = {"api_handler": "api"}.get(function, function)
    policy = json.loads((root / ".chalice" / f"policy-{stage}-{policy_name}.json").read_text())
    granted = {resource.split(":table/")[1].split("/")[0]
               for statement in policy["Statement"]
               for resource in ([statement["Resource"]] if isinstance(statement["Resource"], str)
                                else statement["Resource"]) if ":table/" in resource}
    assert granted <= set(names) and len(granted) == 3
