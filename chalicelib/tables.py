"""Table upkeep: add the global indexes a model declares that an existing table lacks."""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def add_missing_indexes(model: Any) -> list[str]:
    """Create the model's global indexes that its (existing) table lacks; return their names.

    For tables kept by an older version (the local stack's data directory): DynamoDB builds a
    new index from the items already in the table.
    """
    described = model.describe_table().get("GlobalSecondaryIndexes", [])
    existing = {index["IndexName"] for index in described}
    added = []
    for index in model._get_schema()["global_secondary_indexes"]:
        if index["index_name"] in existing:
            continue
        model._get_connection().connection.client.update_table(
            TableName=model.Meta.table_name,
            AttributeDefinitions=index["attribute_definitions"],
            GlobalSecondaryIndexUpdates=[{"Create": {
                "IndexName": index["index_name"],
                "KeySchema": index["key_schema"],
                "Projection": index["projection"],
            }}],
        )
        logger.info("table %s: added index %s", model.Meta.table_name, index["index_name"])
        added.append(index["index_name"])
    return added


def drop_indexes(model: Any, names: tuple[str, ...]) -> list[str]:
    """Delete these global indexes from the model's table where present; return the dropped."""
    described = model.describe_table().get("GlobalSecondaryIndexes", [])
    dropped = []
    for name in (index["IndexName"] for index in described):
        if name in names:
            model._get_connection().connection.client.update_table(
                TableName=model.Meta.table_name,
                GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": name}}],
            )
            logger.info("table %s: dropped index %s", model.Meta.table_name, name)
            dropped.append(name)
    return dropped


def ensure_ttl(model: Any) -> bool:
    """Enable TTL on the model's TTL attribute if the table lacks it; True if it was enabled now.

    Tables made by PynamoDB get it at creation; this covers tables made otherwise or before.
    """
    attribute = model._ttl_attribute()
    if attribute is None:
        return False
    client = model._get_connection().connection.client
    described = client.describe_time_to_live(TableName=model.Meta.table_name)
    status = described.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
    if status in ("ENABLED", "ENABLING"):
        return False
    model.update_ttl(ignore_update_ttl_errors=False)
    logger.info("table %s: TTL enabled on %s", model.Meta.table_name, attribute.attr_name)
    return True
