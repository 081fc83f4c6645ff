"""Item operations' answers written straight as JSON, not through moto's model-driven serializer.

moto turns every answer into JSON by walking botocore's output shape member by member; under
load that was a fifth of the embedded DynamoDB's CPU (bench/profiling.md), most of it spent
on items, which are already in DynamoDB's wire form ({"S": ...}, {"N": "1"}). For the item
operations below a plain json.dumps gives the same document; tests/test_dynamodb_responses.py
checks that against moto's serializer. Anything json.dumps cannot write as-is (a timestamp)
still goes through moto's serializer.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from botocore.model import OperationModel
from moto.core.responses import TYPE_RESPONSE, ActionContext
from moto.dynamodb.responses import DynamoResult

# The operations whose answers hold items, keys and counts only (moto's writes of batches and
# transactions answer through its plain ActionResult, not DynamoResult, and are left alone).
PLAIN_OPERATIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
    "TransactGetItems",
})
CONTENT_TYPE = "application/x-amz-json-1.0"


class _NotPlain(Exception):
    """The answer holds a value the serializer writes in a form of its own."""


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")  # a binary attribute, as the wire has it
    raise _NotPlain(type(value).__name__)


def _without_none(value: Any) -> Any:
    """Drop members that are None, as the serializer does."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def plain_body(operation: OperationModel, result: Any) -> str | None:
    """Return the answer's JSON, or None if moto's serializer must write it.

    Only the output's own members are written, as the serializer does: moto's results
    carry a few more (a legacy ConsumedCapacityUnits) that the wire never shows.
    """
    if operation.name not in PLAIN_OPERATIONS or not isinstance(result, dict):
        return None
    members = operation.output_shape.members
    answer = {k: v for k, v in result.items() if k in members and v is not None}
    try:
        return json.dumps(_without_none(answer), default=_plain, separators=(",", ":"))
    except _NotPlain:
        return None


def install() -> None:
    """Answer item operations with plain_body in this process (idempotent)."""
    if getattr(DynamoResult, "_backchat_plain", False):
        return
    serialize = DynamoResult.execute_result

    def execute_result(self: DynamoResult, context: ActionContext) -> TYPE_RESPONSE:
        body = plain_body(context.operation_model, self.result)
        if body is None:
            return serialize(self, context)
        return 200, {"Content-Type": CONTENT_TYPE}, body

    DynamoResult.execute_result = execute_result
    DynamoResult._backchat_plain = True
