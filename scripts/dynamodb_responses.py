"""Item operations' answers written straight as JSON, not through moto's model-driven serializer.

moto turns every answer into JSON by walking botocore's output shape member by member; under
load that was a fifth of the embedded DynamoDB's CPU (bench/profiling.md), most of it spent
on items, which are already in DynamoDB's wire form ({"S": ...}, {"N": "1"}). For the item
operations below, the answer is typed by its shape down to the attribute values (taken as
they are) and written with json.dumps: the same document, types included, which
tests/test_dynamodb_responses.py checks against moto's serializer. Anything else (a
timestamp) still goes through moto's serializer.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from botocore.model import OperationModel, Shape
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


_CONTAINERS = {"structure": dict, "map": dict, "list": list}


def _typed(value: Any, shape: Shape) -> Any:
    """Return the value as the serializer writes it for its shape: only declared members,
    numbers of the declared kind, no None. Attribute values are taken as they are (moto keeps
    them in wire form), which is where an answer's bulk is and what makes this cheap."""
    kind = shape.type_name
    if not isinstance(value, _CONTAINERS.get(kind, object)):
        raise _NotPlain(f"{type(value).__name__} for a {kind}")
    if kind == "structure":
        if shape.name == "AttributeValue":
            return value
        members = shape.members
        return {k: _typed(v, members[k]) for k, v in value.items()
                if k in members and v is not None}
    if kind == "list":
        return [_typed(v, shape.member) for v in value if v is not None]
    if kind == "map":
        return {k: _typed(v, shape.value) for k, v in value.items() if v is not None}
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long"):
        return int(value)
    if kind == "boolean":
        return bool(value)
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "blob" and isinstance(value, bytes):
        return value
    raise _NotPlain(kind)


def plain_body(operation: OperationModel, result: Any) -> str | None:
    """Return the answer's JSON, or None if moto's serializer must write it."""
    if operation.name not in PLAIN_OPERATIONS or not isinstance(result, dict):
        return None
    try:
        return json.dumps(_typed(result, operation.output_shape), default=_plain,
                          separators=(",", ":"), allow_nan=False)
    except (_NotPlain, TypeError, ValueError):
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
