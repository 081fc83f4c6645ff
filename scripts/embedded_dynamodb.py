"""The embedded DynamoDB for the local stack and tests: moto, made atomic like the real one.

Real DynamoDB applies each conditional write and each transaction atomically. moto's
backend takes no lock, so two threads can both pass the same condition, and its
TransactWriteItems deep-copies whole tables to roll back, which grows with the data.
`install_atomic_backend()` serialises the backend's operations with one lock and runs
transactions in two phases (check every condition, then apply), which keeps the
fencing guarantees testable and every write's cost independent of the table size.

`DurableStorage` keeps the data in a directory (scripts/dynamodb_journal.py has the files):
every write that changed something appends to the journal, still inside the backend's lock
and before the write is acknowledged, the new images of the items it touched (or the table
operation). The journal's order is thus the order the writes were applied; replaying images
evaluates no condition or update expression again; and one record per call keeps a
transaction all-or-nothing on disk too. A write costs the size of the items it touched;
compaction into a snapshot happens at start and, amortised, in the background.

Run `python -m scripts.embedded_dynamodb -H 127.0.0.1 -p 8001 [--data-dir DIR]` for a moto
server with it; without --data-dir the data lives in memory only.
"""
from __future__ import annotations

import argparse
import atexit
import copy
import functools
import inspect
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.table import Table

from scripts.dynamodb_journal import COMPACT_MIN_BYTES, Journal, JournalError, encode_record

_LOCK = threading.RLock()
_SERIALISED = (
    "create_table", "delete_table", "update_table", "put_item", "get_item", "query", "scan",
    "update_item", "delete_item", "batch_get_item", "batch_write_item", "transact_get_items",
    "update_time_to_live",
)
_TABLE_OPERATIONS = ("create_table", "update_table", "update_time_to_live", "delete_table")
# Refusals that happen before moto changes anything: there is nothing to journal.
_REFUSED = (ConditionalCheckFailed, TransactionCanceledException)
# The table operations that built a table, kept on moto's Table for the next snapshot.
_SCHEMA_RECORDS = "_backchat_schema_records"
SYNC_SECONDS = 1.0

# Where writes are journaled; None keeps the data in memory only (tests, no --data-dir).
_journal: Journal | None = None
# How many backend calls the thread holding _LOCK is inside: only the outermost one is
# journaled (a transaction's own puts and rollbacks are part of its record).
_depth = 0

Record = dict[str, Any]
Recorder = Callable[[DynamoDBBackend, dict[str, Any]], Record]
Backends = Mapping[str, Mapping[str, DynamoDBBackend]]


def install_atomic_backend() -> None:
    """Patch moto's DynamoDB backend in this process (idempotent)."""
    if getattr(DynamoDBBackend, "_backchat_atomic", False):
        return
    for name in _SERIALISED:
        setattr(DynamoDBBackend, name, _locked(getattr(DynamoDBBackend, name), name))
    DynamoDBBackend.transact_write_items = _locked(_transact_write_items, "transact_write_items")
    DynamoDBBackend._backchat_atomic = True


def _locked(method: Any, name: str) -> Any:
    signature = inspect.signature(method)
    recorder = _TABLE_RECORDERS.get(name) or _ITEM_RECORDERS.get(name)
    item_write = name in _ITEM_RECORDERS

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _depth
        with _LOCK:
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
        _fail_stop(f"cannot write to the journal in {_journal.directory}: {error}")


def _fail_stop(message: str) -> None:
    """Exit at once: serving on would acknowledge writes the disk does not have."""
    print(f"embedded DynamoDB: {message}; stopping", file=sys.stderr, flush=True)
    os._exit(1)


def _where(backend: DynamoDBBackend) -> Record:
    return {"account": backend.account_id, "region": backend.region_name}


def _table_record(operation: str) -> Recorder:
    def record(backend: DynamoDBBackend, arguments: dict[str, Any]) -> Record:
        recorded = {"op": operation, **_where(backend), "args": copy.deepcopy(arguments)}
        _remember_schema(backend, recorded)
        return recorded

    return record


def _remember_schema(backend: DynamoDBBackend, record: Record) -> None:
    """Keep a table operation on the table it built or changed, for the next snapshot."""
    operation, arguments = record["op"], record["args"]
    if operation == "create_table":
        setattr(backend.get_table(arguments["name"]), _SCHEMA_RECORDS, [record])
    elif operation != "delete_table":
        table = backend.get_table(arguments.get("name") or arguments["table_name"])
        vars(table).setdefault(_SCHEMA_RECORDS, []).append(record)


def _item_images(backend: DynamoDBBackend, targets: list[tuple[str, dict[str, Any]]]) -> Record:
    """Return the record of a write: the current image (or absence) of each item it addressed."""
    images = []
    for table_name, key in targets:
        table = backend.get_table(table_name)
        hash_value, range_value = backend.get_keys_value(table, key)
        item = table.get_item(hash_value, range_value)
        images.append({"table": table.name, "key": key,
                       "item": None if item is None else item.to_json()["Attributes"]})
    return {"op": "write_items", **_where(backend), "items": images}


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


_TABLE_RECORDERS: dict[str, Recorder] = {name: _table_record(name) for name in _TABLE_OPERATIONS}
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


class DurableStorage:
    """moto's DynamoDB kept in a data directory: restored at start, every write journaled."""

    def __init__(self, journal: Journal, backends: Backends, sync_seconds: float) -> None:
        self._journal = journal
        self._backends = backends
        self._sync_seconds = sync_seconds
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="journal-keeper", daemon=True)

    @classmethod
    def open(cls, directory: Path, backends: Backends = dynamodb_backends,
             sync_seconds: float = SYNC_SECONDS,
             compact_min_bytes: int = COMPACT_MIN_BYTES) -> "DurableStorage":
        """Lock directory, load what it holds into the (empty) backends, journal what follows.

        Raises JournalError (DataDirectoryInUse if another process holds it).
        """
        install_atomic_backend()
        journal = Journal.open(directory, compact_min_bytes)
        storage = cls(journal, backends, sync_seconds)
        try:
            with _LOCK:
                for record in journal.records():
                    storage._replay(record)
            # From now on the files hold one snapshot and an empty journal.
            storage.compact()
        except BaseException:
            journal.close()
            raise
        storage._attach()
        return storage

    @property
    def directory(self) -> Path:
        return self._journal.directory

    def compact(self) -> None:
        """Start a new generation whose snapshot holds the whole current state."""
        with _LOCK:
            generation = self._journal.start_generation()
            lines = [encode_record(record) for record in self._state_records()]
        self._journal.write_snapshot(generation, lines)

    def sync(self) -> None:
        """fsync the journal now (it is also done every `sync_seconds`)."""
        self._journal.sync()

    def close(self) -> None:
        """Stop journaling, fsync and release the directory (the data stays in memory)."""
        global _journal
        self._stop.set()
        if self._keeper.is_alive():
            self._keeper.join()
        with _LOCK:
            if _journal is self._journal:
                _journal = None
        self._journal.close()

    def summary(self) -> str:
        """Describe what the backends hold, for the start-up line."""
        tables = [table for regions in self._backends.values() for backend in regions.values()
                  for table in backend.tables.values()]
        items = sum(len(table.all_items()) for table in tables)
        return f"{len(tables)} tables, {items} items"

    def _attach(self) -> None:
        global _journal
        with _LOCK:
            _journal = self._journal
        self._keeper.start()

    def _keep(self) -> None:
        while not self._stop.wait(self._sync_seconds):
            try:
                self._journal.sync()
                if self._journal.compaction_due():
                    self.compact()
            except (OSError, JournalError) as error:
                _fail_stop(f"cannot keep the data in {self.directory}: {error}")

    def _state_records(self) -> Iterator[Record]:
        for regions in self._backends.values():
            for backend in regions.values():
                for table in backend.tables.values():
                    yield from getattr(table, _SCHEMA_RECORDS, [])
                    for item in table.all_items():
                        image = item.to_json()["Attributes"]
                        yield {"op": "write_items", **_where(backend), "items": [
                            {"table": table.name, "key": _key_of(table, image), "item": image}
                        ]}

    def _replay(self, record: Record) -> None:
        operation = record.get("op")
        if operation not in ("write_items", *_TABLE_OPERATIONS):
            raise JournalError(f"{self.directory} holds a record this backchat does not know "
                               f"({operation!r}); was it written by a newer version?")
        backend = self._backends[record["account"]][record["region"]]
        if operation == "write_items":
            for image in record["items"]:
                if image["item"] is None:
                    _original("delete_item")(backend, image["table"], image["key"])
                else:
                    _original("put_item")(backend, image["table"], image["item"])
        else:
            _original(operation)(backend, **record["args"])
            _remember_schema(backend, record)


def _original(name: str) -> Any:
    """Return moto's own method, without the lock and the journal."""
    return getattr(DynamoDBBackend, name).__wrapped__


def main(argv: list[str] | None = None) -> None:
    """Run a moto server whose DynamoDB is atomic and, with --data-dir, kept on disk."""
    from moto.server import main as moto_main

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-dir", type=Path)
    options, moto_argv = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
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
        print(f"embedded DynamoDB: data in {storage.directory} ({storage.summary()} restored)",
              flush=True)
    moto_main(moto_argv)


if __name__ == "__main__":
    main()
