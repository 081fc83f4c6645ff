"""The embedded DynamoDB for the local stack and tests: moto, made atomic like the real one.

Real DynamoDB applies each conditional write and each transaction atomically. moto's
backend takes no lock, so two threads can both pass the same condition, and its
TransactWriteItems deep-copies whole tables to roll back, which grows with the data.
`install_atomic_backend()` serialises the backend's operations with one lock and runs
transactions in two phases (check every condition, then apply), which keeps the
fencing guarantees testable and every write's cost independent of the table size.

With a journal attached (scripts/dynamodb_storage.py keeps it, in a data directory), every
write that changed something appends to it, still inside the backend's lock and before the
write is acknowledged, the new images of the items it touched (or the table operation). The
journal's order is thus the order the writes were applied; replaying images evaluates no
condition or update expression again; and one record per call keeps a transaction
all-or-nothing on disk too. A write costs the size of the items it touched.

It is also quick as the data grows: a Query reads only the keys its answer depends on
(scripts/dynamodb_query.py, with the sorted views of scripts/dynamodb_key_index.py, kept in step
by every write through `note_write`); a restored partition stays text until it is touched
(scripts/dynamodb_partitions.py); and items past their table's TTL are deleted in the
background, journaled like any write (scripts/dynamodb_ttl.py, `expirer`).

Run `python -m scripts.embedded_dynamodb -H 127.0.0.1 -p 8001 [--data-dir DIR]` for a moto
server with it; without --data-dir the data lives in memory only.
"""
from __future__ import annotations

import argparse
import atexit
import copy
import functools
import gc
import inspect
import logging
import os
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

from scripts import dynamodb_key_index, dynamodb_query, dynamodb_responses, dynamodb_ttl
from scripts.dynamodb_journal import Journal, JournalError
from scripts.dynamodb_partitions import PartitionMap

LOCK = threading.RLock()
_SERIALISED = (
    "create_table", "delete_table", "update_table", "put_item", "get_item", "query", "scan",
    "update_item", "delete_item", "batch_get_item", "batch_write_item", "transact_get_items",
    "update_time_to_live", "execute_statement", "execute_transaction", "batch_execute_statement",
)
# moto copies the items these return; what it does not copy is the LastEvaluatedKey.
_RETURN_COPIES = ("query", "scan")
TABLE_OPERATIONS = ("create_table", "update_table", "update_time_to_live", "delete_table")
# Refusals that happen before moto changes anything: there is nothing to journal.
_REFUSED = (ConditionalCheckFailed, TransactionCanceledException)
# The table operations that built a table, kept on moto's Table for the next snapshot.
_SCHEMA_RECORDS = "_backchat_schema_records"

# Where writes are journaled; None keeps the data in memory only (tests, no --data-dir).
_journal: Journal | None = None
# How many backend calls the thread holding LOCK is inside: only the outermost one is
# journaled (a transaction's own puts and rollbacks are part of its record).
_depth = 0

Record = dict[str, Any]
Recorder = Callable[[DynamoDBBackend, dict[str, Any]], Record]
Backends = Mapping[str, Mapping[str, DynamoDBBackend]]


def install_atomic_backend() -> None:
    """Patch moto's DynamoDB backend in this process (idempotent)."""
    if getattr(DynamoDBBackend, "_backchat_atomic", False):
        return
    DynamoDBBackend.update_item = _noting_update(DynamoDBBackend.update_item)
    for name in _SERIALISED:
        setattr(DynamoDBBackend, name, _locked(getattr(DynamoDBBackend, name), name))
    DynamoDBBackend.transact_write_items = _locked(_transact_write_items, "transact_write_items")
    Table.put_item = _noting_put(Table.put_item)
    Table.delete_item = _noting_delete(Table.delete_item)
    Table.query = dynamodb_query.query
    dynamodb_responses.install()
    Table.__len__ = _item_count(Table.__len__)
    DynamoType.__hash__ = _key_hash(DynamoType.__hash__)
    DynamoDBBackend._backchat_atomic = True


def note_write(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> None:
    """Bring the sorted views and the expiry schedule in step with the item under this key."""
    dynamodb_key_index.note_write(table, hash_key, range_key)
    dynamodb_ttl.note_write(table, hash_key, range_key)


def _noting_put(put_item: Any) -> Any:
    @functools.wraps(put_item)
    def wrapper(table: Table, *args: Any, **kwargs: Any) -> Any:
        item = put_item(table, *args, **kwargs)  # a refused put changed nothing
        note_write(table, item.hash_key, item.range_key)
        return item

    return wrapper


def _noting_delete(delete_item: Any) -> Any:
    @functools.wraps(delete_item)
    def wrapper(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Any:
        deleted = delete_item(table, hash_key, range_key)
        if deleted is not None:
            note_write(table, hash_key, range_key)
        return deleted

    return wrapper


def _noting_update(update_item: Any) -> Any:
    """Wrap the backend's update_item, which changes the stored Item in place."""

    @functools.wraps(update_item)
    def wrapper(backend: DynamoDBBackend, table_name: str, key: dict[str, Any],
                *args: Any, **kwargs: Any) -> Any:
        try:
            return update_item(backend, table_name, key, *args, **kwargs)
        finally:
            # Even a failed update may have changed the item (moto checks its size midway).
            try:
                table = backend.get_table(table_name)
                hash_key, range_key = backend.get_keys_value(table, key)
            except Exception:
                pass  # no such table or key: nothing was changed
            else:
                note_write(table, hash_key, range_key)

    return wrapper


def _item_count(moto_len: Any) -> Any:
    @functools.wraps(moto_len)
    def count(table: Table) -> int:
        # Counting a PartitionMap's stored partitions must not build them (DescribeTable).
        return table.items.item_count() if isinstance(table.items, PartitionMap) else moto_len(table)

    return count


def _key_hash(moto_hash: Any) -> Any:
    """Return DynamoType's hash, the same value, without its cast_value's chain of calls.

    Every lookup of an item by its key hashes the key: a restore hashes a million of them.
    """

    @functools.wraps(moto_hash)
    def key_hash(value: DynamoType) -> int:
        kind = value.type
        if kind == "S" or kind == "B":
            return hash((kind, value.value))
        if kind == "N":
            return hash((kind, Decimal(value.value)))
        return moto_hash(value)

    return key_hash


def _locked(method: Any, name: str) -> Any:
    signature = inspect.signature(method)
    recorder = _TABLE_RECORDERS.get(name) or _ITEM_RECORDERS.get(name)
    item_write = name in _ITEM_RECORDERS
    returns_copies = name in _RETURN_COPIES

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _depth
        with LOCK:
            journaled = recorder is not None and _journal is not None and _depth == 0
            _depth += 1
            try:
                result = method(*args, **kwargs)
            except _REFUSED:
                raise
            except Exception:
                # moto's update_item can change an item before it fails (a size check):
                # journal what is there now, so the disk never disagrees with memory.
                if journaled and item_write:
                    _journal_write(recorder, signature, args, kwargs, after_failure=True)
                raise
            finally:
                _depth -= 1
            if journaled:
                _journal_write(recorder, signature, args, kwargs)
            # moto serialises the returned items after the call: hand it a private copy so
            # another thread's write cannot change them mid-serialisation.
            if returns_copies:
                items, scanned_count, last_evaluated_key = result
                return items, scanned_count, copy.deepcopy(last_evaluated_key)
            return copy.deepcopy(result)

    return wrapper


def _journal_write(recorder: Recorder, signature: inspect.Signature, args: tuple,
                   kwargs: dict[str, Any], after_failure: bool = False) -> None:
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    backend, *_ = args
    arguments = dict(list(bound.arguments.items())[1:])
    try:
        record = recorder(backend, arguments)
    except Exception:
        if after_failure:
            return  # the call failed before it could name an item: it changed nothing
        raise
    assert _journal is not None
    try:
        _journal.append(record)
    except (OSError, JournalError) as error:
        fail_stop(f"cannot write to the journal in {_journal.directory}: {error}")


def expire_items(backend: DynamoDBBackend, table: Table,
                 keys: list[tuple[DynamoType, DynamoType | None]]) -> None:
    """Delete expired items and journal them as one write (the caller holds the lock)."""
    for hash_key, range_key in keys:
        table.delete_item(hash_key, range_key)
    if _journal is None:
        return
    names = [table.hash_key_attr, table.range_key_attr]
    record = {"op": "write_items", **location(backend), "items": [
        {"table": table.name, "item": None,
         "key": {name: value.to_json() for name, value in zip(names, key) if name}}
        for key in keys
    ]}
    try:
        _journal.append(record)
    except (OSError, JournalError) as error:
        fail_stop(f"cannot write to the journal in {_journal.directory}: {error}")


def fail_stop(message: str) -> None:
    """Exit at once: serving on would acknowledge writes the disk does not have."""
    print(f"embedded DynamoDB: {message}; stopping", file=sys.stderr, flush=True)
    os._exit(1)


def location(backend: DynamoDBBackend) -> Record:
    return {"account": backend.account_id, "region": backend.region_name}


def _table_record(operation: str) -> Recorder:
    def record(backend: DynamoDBBackend, arguments: dict[str, Any]) -> Record:
        recorded = {"op": operation, **location(backend), "args": copy.deepcopy(arguments)}
        remember_schema(backend, recorded)
        return recorded

    return record


def remember_schema(backend: DynamoDBBackend, record: Record) -> None:
    """Keep a table operation on the table it built or changed, for the next snapshot."""
    operation, arguments = record["op"], record["args"]
    if operation == "create_table":
        setattr(backend.get_table(arguments["name"]), _SCHEMA_RECORDS, [record])
    elif operation != "delete_table":
        table = backend.get_table(arguments.get("name") or arguments["table_name"])
        vars(table).setdefault(_SCHEMA_RECORDS, []).append(record)


def schema_records(table: Table) -> list[Record]:
    """Return the table operations that built the table as it is now (a copy)."""
    return list(getattr(table, _SCHEMA_RECORDS, []))


def attach_journal(journal: Journal) -> None:
    """Journal every write from now on in this journal."""
    global _journal
    with LOCK:
        _journal = journal


def detach_journal(journal: Journal) -> None:
    """Stop journaling writes (if this journal is the one attached)."""
    global _journal
    with LOCK:
        if _journal is journal:
            _journal = None


def expirer(expire: dynamodb_ttl.Expire | None = None, **options: Any) -> dynamodb_ttl.Expirer:
    """Return a TTL expirer of this process's backends (by default, its deletions journaled)."""
    return dynamodb_ttl.Expirer(dynamodb_backends, LOCK, expire or expire_items, **options)


def _item_images(backend: DynamoDBBackend, targets: list[tuple[str, dict[str, Any]]]) -> Record:
    """Return the record of a write: the current image (or absence) of each item it addressed."""
    images = []
    for table_name, key in targets:
        table = backend.get_table(table_name)
        hash_value, range_value = backend.get_keys_value(table, key)
        item = table.get_item(hash_value, range_value)
        images.append({"table": table.name, "key": key,
                       "item": None if item is None else item.to_json()["Attributes"]})
    return {"op": "write_items", **location(backend), "items": images}


def _key_of(table: Table, item: dict[str, Any]) -> dict[str, Any]:
    names = [table.hash_key_attr, *([table.range_key_attr] if table.range_key_attr else [])]
    return {name: item[name] for name in names}


def _put_item_record(backend: DynamoDBBackend, arguments: dict[str, Any]) -> Record:
    table = backend.get_table(arguments["table_name"])
    return _item_images(backend, [(table.name, _key_of(table, arguments["item_attrs"]))])


def _keyed_item_record(backend: DynamoDBBackend, arguments: dict[str, Any]) -> Record:
    return _item_images(backend, [(arguments["table_name"], arguments["key"])])


def _transaction_record(backend: DynamoDBBackend, arguments: dict[str, Any]) -> Record:
    operations = [_operation(backend, item) for item in arguments["transact_items"]]
    return _item_images(backend, [(table_name, key) for op_type, _, table_name, key in operations
                                  if op_type in ("Put", "Update", "Delete")])


_TABLE_RECORDERS: dict[str, Recorder] = {name: _table_record(name) for name in TABLE_OPERATIONS}
_ITEM_RECORDERS: dict[str, Recorder] = {
    "put_item": _put_item_record,
    "update_item": _keyed_item_record,
    "delete_item": _keyed_item_record,
    "transact_write_items": _transaction_record,
}


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


def moto_method(name: str) -> Any:
    """Return moto's own backend method, without the lock and the journal."""
    return getattr(DynamoDBBackend, name).__wrapped__


def _dynamodb_first_dispatcher() -> Any:
    """Return moto's request dispatcher with a fast path for DynamoDB requests.

    moto picks the service of every request by inferring it from its headers and body, under
    one lock shared by all request threads; the embedded server is there for DynamoDB, whose
    requests name it in X-Amz-Target, so once its app exists they go straight to it.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    class DynamoDBFirst(DomainDispatcherApplication):
        def get_application(self, environ: dict[str, Any]) -> Any:
            if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
                app = self.app_instances.get("dynamodb")
                if app is not None:
                    return app
            return super().get_application(environ)

    return DynamoDBFirst(create_backend_app)


# The kernel caps it at net.core.somaxconn (4096 by default).
LISTEN_QUEUE = 1024


def _serve(host: str, port: int) -> None:
    """Serve moto (as `moto_server` would) with the DynamoDB fast path."""
    import signal

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import BaseWSGIServer, run_simple

    # werkzeug listens with a queue of 128; a burst of new connections from hundreds of runs
    # and long-polls overflowed it, and each dropped connect cost its caller a timeout.
    BaseWSGIServer.request_queue_size = LISTEN_QUEUE
    os.environ.setdefault("MOTO_PORT", str(port))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    run_simple(host, port, _dynamodb_first_dispatcher(), threaded=True,
               request_handler=MotoRequestHandler)


def main(argv: list[str] | None = None) -> None:
    """Run a moto server whose DynamoDB is atomic and, with --data-dir, kept on disk."""
    from scripts.dynamodb_storage import DurableStorage  # it builds on this module

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    options = parser.parse_args(argv if argv is not None else sys.argv[1:])
    install_atomic_backend()
    if options.data_dir is not None:
        try:
            storage = DurableStorage.open(options.data_dir.resolve())
        except JournalError as error:
            print(f"embedded DynamoDB: {error}", file=sys.stderr, flush=True)
            sys.exit(1)
        # On SIGTERM moto exits through SystemExit: fsync what the journal holds. The journal
        # stays attached: a write still being answered is journaled like any other.
        atexit.register(storage.sync)
        # The restored data lives as long as the server: later collections need not walk it.
        gc.freeze()
        print(f"embedded DynamoDB: data in {storage.directory} ({storage.summary()} restored)",
              flush=True)
    expirer().start()
    # One log line per request (werkzeug's) cost this single-threaded server about a seventh
    # of its time under load (bench/profiling.md); failures are still logged.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _serve(options.host, options.port)


if __name__ == "__main__":
    # Run as `python -m`, this file is __main__, and scripts.dynamodb_storage imports it again
    # as scripts.embedded_dynamodb: run that module's main, so both use one lock and journal.
    from scripts.embedded_dynamodb import main as run_server

    run_server()
