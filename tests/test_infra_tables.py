"""infra/tables.yaml declares exactly the tables, keys and indexes the PynamoDB models use."""
from __future__ import annotations

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
