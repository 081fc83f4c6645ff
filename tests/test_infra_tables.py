"""infra/tables.yaml declares exactly the tables, keys and indexes the PynamoDB models use."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from chalicelib.models import bind_models
from chalicelib.settings import Settings

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "tables.yaml"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Sub, !Ref) as plain values."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node)
                                 if isinstance(node, yaml.ScalarNode) else None)


def _resources() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)["Resources"]


def _keys(schema: list[dict]) -> dict[str, str]:
    return {k["AttributeName"]: k["KeyType"] for k in schema}


def _definitions(definitions: list[dict]) -> dict[str, str]:
    return {d["AttributeName"]: d["AttributeType"] for d in definitions}


@pytest.mark.parametrize("resource, model_name", [("SessionsTable", "session"),
                                                  ("EventsTable", "event"),
                                                  ("ConversationsTable", "conversation")])
def test_template_matches_the_model(resource: str, model_name: str) -> None:
    table = _resources()[resource]["Properties"]
    schema = getattr(bind_models(Settings()), model_name)._get_schema()
    assert _keys(table["KeySchema"]) == _keys(schema["key_schema"])
    assert _definitions(table["AttributeDefinitions"]) == _definitions(
        schema["attribute_definitions"])
    declared = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    modelled = {i["index_name"]: i for i in schema["global_secondary_indexes"]}
    assert declared.keys() == modelled.keys()
    for name, index in modelled.items():
        assert _keys(declared[name]["KeySchema"]) == _keys(index["key_schema"])
        assert declared[name]["Projection"]["ProjectionType"] == index["projection"]["ProjectionType"]
        assert sorted(declared[name]["Projection"].get("NonKeyAttributes", [])) == sorted(
            index["projection"].get("NonKeyAttributes", []))
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"


def _tables() -> dict[str, dict]:
    return {name: r for name, r in _resources().items() if r["Type"] == "AWS::DynamoDB::Table"}


def test_a_failed_first_create_leaves_no_table_behind_to_block_the_retry() -> None:
    # Kept when the stack is deleted or an update would replace it; deleted when the create
    # that made it rolls back, so the retry can create it again under its fixed name.
    assert _tables()
    for name, table in _tables().items():
        assert table["DeletionPolicy"] == "RetainExceptOnCreate", name
        assert table["UpdateReplacePolicy"] == "Retain", name
        # Deletion protection would make that rollback fail and leave the table behind.
        assert not table["Properties"].get("DeletionProtectionEnabled", False), name


def test_table_names_are_fixed_and_name_the_stage() -> None:
    # docs/deploy.md (re-deploys): CloudFormation refuses to replace a named table, so a
    # change that needs a new table fails loudly instead of switching to an empty one.
    names = [table["Properties"]["TableName"] for table in _tables().values()]
    assert all(re.fullmatch(r"backchat-\$\{Stage\}-\w+", name) for name in names), names
    assert len(set(names)) == len(names)
