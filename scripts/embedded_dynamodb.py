"""The embedded DynamoDB for the local stack and tests: moto, made atomic like the real one.

Real DynamoDB applies each conditional write and each transaction atomically. moto's
backend takes no lock, so two threads can both pass the same condition, and its
TransactWriteItems deep-copies whole tables to roll back, which grows with the data.
`install_atomic_backend()` serialises the backend's operations with one lock and runs
transactions in two phases (check every condition, then apply), which keeps the
fencing guarantees testable and every write's cost independent of the table size.

Run `python -m scripts.embedded_dynamodb -H 127.0.0.1 -p 8001` for a moto server with it.
"""
from __future__ import annotations

import copy
import functools
import sys
import threading
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend

_LOCK = threading.RLock()
_SERIALISED = (
    "create_table", "delete_table", "update_table", "put_item", "get_item", "query", "scan",
    "update_item", "delete_item", "batch_get_item", "batch_write_item", "transact_get_items",
    "update_time_to_live",
)


def install_atomic_backend() -> None:
    """Patch moto's DynamoDB backend in this process (idempotent)."""
    if getattr(DynamoDBBackend, "_backchat_atomic", False):
        return
    for name in _SERIALISED:
        setattr(DynamoDBBackend, name, _locked(getattr(DynamoDBBackend, name)))
    DynamoDBBackend.transact_write_items = _locked(_transact_write_items)
    DynamoDBBackend._backchat_atomic = True


def _locked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            # moto serialises the returned items after the call: hand it a private copy so
            # another thread's write cannot change them mid-serialisation.
            return copy.deepcopy(method(*args, **kwargs))

    return wrapper


def _transact_write_items(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """Check every condition first; apply the writes only if all hold."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    operations = [_operation(backend, item) for item in transact_items]
    seen = set()
    for _, op, table_name, key in operations:
        identity = (table_name, str(sorted(key.items())))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
    reasons: list[tuple[Any, Any, Any]] = []
    originals = []
    for _, op, table_name, key in operations:
        current = backend.get_item(table_name, key)
        originals.append((table_name, key, current.to_json()["Attributes"] if current else None))
        condition = op.get("ConditionExpression")
        passed = condition is None or get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        ).expr(current)
        reasons.append((None, None, None) if passed else
                       ("ConditionalCheckFailed", "The conditional request failed", None))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    try:
        _apply(backend, operations)
    except Exception:
        # A write refused at apply time (an item too large, say): undo the others.
        for table_name, key, original in originals:
            if original is None:
                backend.delete_item(table_name, key)
            else:
                backend.put_item(table_name, original)
        raise


def _apply(backend: DynamoDBBackend, operations: list[tuple[str, dict, str, dict]]) -> None:
    for op_type, op, table_name, key in operations:
        names = op.get("ExpressionAttributeNames")
        values = op.get("ExpressionAttributeValues")
        if op_type == "Put":
            backend.put_item(table_name, op["Item"], expression_attribute_names=names,
                             expression_attribute_values=values)
        elif op_type == "Delete":
            backend.delete_item(table_name, key)
        elif op_type == "Update":
            backend.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                expression_attribute_names=names,
                                expression_attribute_values=values)


def _operation(backend: DynamoDBBackend, item: dict[str, Any]) -> tuple[str, dict, str, dict]:
    if len(item) != 1:
        raise TransactWriteSingleOpException()
    op_type, op = next(iter(item.items()))
    table_name = op["TableName"]
    if op_type == "Put":
        table = backend.get_table(table_name)
        key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = op["Item"][table.range_key_attr]
    else:
        key = op["Key"]
    return op_type, op, table_name, key


def main(argv: list[str] | None = None) -> None:
    """Run a moto server whose DynamoDB is atomic."""
    from moto.server import main as moto_main

    install_atomic_backend()
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
