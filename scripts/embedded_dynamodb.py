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
compaction into a snapshot happens in the background (after a start that replayed writes, and
whenever the journal has outgrown the last snapshot), holding the lock only briefly at a time.

It is also quick as the data grows: a Query reads only the keys its answer depends on
(scripts/dynamodb_query.py, with the sorted views of scripts/dynamodb_key_index.py, kept in step
by every write through `_note_write`); a start leaves each stored partition as text until it is
touched (scripts/dynamodb_partitions.py); and items past their table's TTL are deleted in the
background, journaled like any write (scripts/dynamodb_ttl.py).

Run `python -m scripts.embedded_dynamodb -H 127.0.0.1 -p 8001 [--data-dir DIR]` for a moto
server with it; without --data-dir the data lives in memory only.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import functools
import gc
import inspect
import itertools
import os
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from moto.core import DEFAULT_ACCOUNT_ID
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

from scripts import dynamodb_key_index, dynamodb_query, dynamodb_ttl
from scripts.dynamodb_journal import (
    COMPACT_MIN_BYTES,
    SNAPSHOT_VERSION,
    Journal,
    JournalError,
    encode_record,
    encode_record_with_payload,
)
from scripts.dynamodb_partitions import (
    Image,
    Layout,
    PartitionMap,
    StoredPartition,
    dynamo_type,
    item_from_image,
    partition_items,
    restored,
    stored_partition,
)

_LOCK = threading.RLock()
_SERIALISED = (
    "create_table", "delete_table", "update_table", "put_item", "get_item", "query", "scan",
    "update_item", "delete_item", "batch_get_item", "batch_write_item", "transact_get_items",
    "update_time_to_live", "execute_statement", "execute_transaction", "batch_execute_statement",
)
# moto copies the items these return; what it does not copy is the LastEvaluatedKey.
_RETURN_COPIES = ("query", "scan")
_TABLE_OPERATIONS = ("create_table", "update_table", "update_time_to_live", "delete_table")
# Refusals that happen before moto changes anything: there is nothing to journal.
_REFUSED = (ConditionalCheckFailed, TransactionCanceledException)
# The table operations that built a table, kept on moto's Table for the next snapshot.
_SCHEMA_RECORDS = "_backchat_schema_records"
SYNC_SECONDS = 1.0
# How many items a compaction encodes per hold of the lock.
SNAPSHOT_CHUNK_ITEMS = 2000

# Where writes are journaled; None keeps the data in memory only (tests, no --data-dir).
_journal: Journal | None = None
# How many backend calls the thread holding _LOCK is inside: only the outermost one is
# journaled (a transaction's own puts and rollbacks are part of its record).
_depth = 0

Record = dict[str, Any]
Recorder = Callable[[DynamoDBBackend, dict[str, Any]], Record]
Backends = Mapping[str, Mapping[str, DynamoDBBackend]]
# A table as a snapshot takes it: backend, table, schema records, its partitions' hash keys.
TableState = tuple[DynamoDBBackend, Table, list[Record], list[DynamoType]]
Generation = tuple[int, list[TableState]]


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
    Table.__len__ = _item_count(Table.__len__)
    DynamoType.__hash__ = _key_hash(DynamoType.__hash__)
    DynamoDBBackend._backchat_atomic = True


def _note_write(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> None:
    """Bring the sorted views and the expiry schedule in step with the item under this key."""
    dynamodb_key_index.note_write(table, hash_key, range_key)
    dynamodb_ttl.note_write(table, hash_key, range_key)


def _noting_put(put_item: Any) -> Any:
    @functools.wraps(put_item)
    def wrapper(table: Table, *args: Any, **kwargs: Any) -> Any:
        item = put_item(table, *args, **kwargs)  # a refused put changed nothing
        _note_write(table, item.hash_key, item.range_key)
        return item

    return wrapper


def _noting_delete(delete_item: Any) -> Any:
    @functools.wraps(delete_item)
    def wrapper(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Any:
        deleted = delete_item(table, hash_key, range_key)
        if deleted is not None:
            _note_write(table, hash_key, range_key)
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
                _note_write(table, hash_key, range_key)

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
        _fail_stop(f"cannot write to the journal in {_journal.directory}: {error}")


def expire_items(backend: DynamoDBBackend, table: Table,
                 keys: list[tuple[DynamoType, DynamoType | None]]) -> None:
    """Delete expired items and journal them as one write (the caller holds the lock)."""
    for hash_key, range_key in keys:
        table.delete_item(hash_key, range_key)
    if _journal is None:
        return
    names = [table.hash_key_attr, table.range_key_attr]
    record = {"op": "write_items", **_where(backend), "items": [
        {"table": table.name, "item": None,
         "key": {name: value.to_json() for name, value in zip(names, key) if name}}
        for key in keys
    ]}
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
        self._replayed_backends: dict[tuple[str, str], DynamoDBBackend] = {}
        # The table whose partitions a snapshot being loaded lists now, and their layout.
        self._restoring: tuple[PartitionMap, Layout] | None = None
        # A generation started at open whose snapshot the keeper thread is to write.
        self._pending_snapshot: Generation | None = None
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="journal-keeper", daemon=True)

    @classmethod
    def open(cls, directory: Path, backends: Backends = dynamodb_backends,
             sync_seconds: float = SYNC_SECONDS,
             compact_min_bytes: int = COMPACT_MIN_BYTES) -> "DurableStorage":
        """Lock directory, load what it holds into the (empty) backends, journal what follows.

        The load leaves stored partitions as text, built when first touched. Writes go to a new journal at once; if the load replayed any
        journaled write, or read an older snapshot format, the keeper thread writes that
        generation's snapshot soon after (a start with nothing to compact keeps the snapshot).
        Raises JournalError (DataDirectoryInUse if another process holds it).
        """
        install_atomic_backend()
        journal = Journal.open(directory, compact_min_bytes)
        storage = cls(journal, backends, sync_seconds)
        try:
            with _LOCK, _no_cyclic_gc():
                for record in journal.records():
                    storage._replay(record)
                started = storage._start_generation()
            if journal.journal_records or journal.snapshot_version not in (None, SNAPSHOT_VERSION):
                storage._pending_snapshot = started
            else:
                journal.discard_empty_journals()
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
            started = self._start_generation()
        self._write_snapshot(started)

    def _start_generation(self) -> Generation:
        """Send later writes to a new journal and note what its snapshot must hold (under the lock).

        The tables, their schema records and their partitions' keys are taken as they are when
        the new journal starts; the partitions themselves are encoded later, a few thousand items
        per hold of the lock. A partition written meanwhile may be stored newer than the moment
        the journal started: the journal holds that write too, and replaying an item's image
        again changes nothing.
        """
        generation = self._journal.start_generation()
        tables = [
            (backend, table, list(getattr(table, _SCHEMA_RECORDS, [])),
             list(dict.keys(table.items))
             + ([key for key, _ in table.items.stored()]
                if isinstance(table.items, PartitionMap) else []))
            for backend, table in self._tables()
        ]
        return generation, tables

    def _write_snapshot(self, started: Generation) -> None:
        generation, tables = started
        self._journal.write_snapshot(generation, self._snapshot_lines(tables))

    def import_items(self, table_name: str, images: Iterable[Image],
                     account: str = DEFAULT_ACCOUNT_ID, region: str = "us-east-1") -> int:
        """Add items to a table as stored partitions, unjournaled; return how many.

        For tools that fill a data directory (bench/): images with the same hash key must come
        one after another; no condition is checked; nothing is on disk before `compact()`.
        """
        backend = self._backends[account][region]
        count = 0
        with _LOCK:
            table = backend.get_table(table_name)
            partitions = PartitionMap.of(table)
            layout = Layout.of(table)
            hash_image, group = None, []
            for image in itertools.chain(images, [None]):
                if group and (image is None or image[table.hash_key_attr] != hash_image):
                    partitions.add_stored(dynamo_type(hash_image), stored_partition(group, layout))
                    count += len(group)
                    group = []
                if image is not None:
                    hash_image = image[table.hash_key_attr]
                    group.append(image)
            # The table's sorted views and expiry schedule do not know these items.
            dynamodb_key_index.forget(table)
            dynamodb_ttl.forget(table)
        return count

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
        tables = [table for _, table in self._tables()]
        return f"{len(tables)} tables, {sum(len(table) for table in tables)} items"

    def _attach(self) -> None:
        global _journal
        with _LOCK:
            _journal = self._journal
        self._keeper.start()

    def _keep(self) -> None:
        while not self._stop.wait(self._sync_seconds):
            try:
                self._journal.sync()
                if self._pending_snapshot is not None:
                    started, self._pending_snapshot = self._pending_snapshot, None
                    self._write_snapshot(started)
                elif self._journal.compaction_due():
                    self.compact()
            except (OSError, JournalError) as error:
                _fail_stop(f"cannot keep the data in {self.directory}: {error}")

    def _tables(self) -> Iterator[tuple[DynamoDBBackend, Table]]:
        for regions in list(self._backends.values()):
            for backend in list(regions.values()):
                for table in list(backend.tables.values()):
                    yield backend, table

    def _snapshot_lines(self, tables: list[TableState]) -> Iterator[bytes]:
        """Yield the snapshot's lines: per table, its operations, its layout, its partitions."""
        for backend, table, schema_records, hash_keys in tables:
            yield from (encode_record(record) for record in schema_records)
            with _LOCK:
                layout = Layout.of(table)
            yield encode_record({"partitions": {
                **_where(backend), "table": table.name, "ttlAttribute": layout.ttl_attribute,
                "keyAttributes": layout.key_attributes}})
            position = 0
            while position < len(hash_keys):
                lines, encoded = [], 0
                with _LOCK:
                    while position < len(hash_keys) and encoded < SNAPSHOT_CHUNK_ITEMS:
                        line, items = _partition_line(table, hash_keys[position], layout)
                        position += 1
                        if line:
                            lines.append(line)
                            encoded += items
                yield from lines

    def _replay(self, record: Record) -> None:
        if "p" in record:
            self._replay_partition(record)
            return
        operation = record.get("op")
        if "partitions" in record:
            where = record["partitions"]
            table = self._backend(where).get_table(where["table"])
            attributes = where["keyAttributes"]
            self._restoring = (PartitionMap.of(table), Layout(
                where["ttlAttribute"], None if attributes is None else tuple(attributes)))
        elif operation == "write_items":
            backend = self._backend(record)
            for image in record["items"]:
                table = backend.get_table(image["table"])
                if image["item"] is None:
                    key = image["key"]
                    table.delete_item(dynamo_type(key[table.hash_key_attr]),
                                      dynamo_type(key[table.range_key_attr])
                                      if table.range_key_attr else None)
                else:
                    _put_image(table, image["item"])
        elif operation in _TABLE_OPERATIONS:
            backend = self._backend(record)
            _original(operation)(backend, **record["args"])
            _remember_schema(backend, record)
        else:
            raise JournalError(f"{self.directory} holds a record this backchat does not know "
                               f"({operation!r}); was it written by a newer version?")

    def _backend(self, where: Record) -> DynamoDBBackend:
        # moto's BackendDict lookup takes several calls; a restore makes one per record.
        account, region = where["account"], where["region"]
        backend = self._replayed_backends.get((account, region))
        if backend is None:
            backend = self._replayed_backends[account, region] = self._backends[account][region]
        return backend

    def _replay_partition(self, record: Record) -> None:
        # A snapshot's partition line, after its table's "partitions" line.
        if self._restoring is None:
            raise JournalError(f"{self.directory}: a snapshot holds a partition before the "
                               "table it belongs to; the file is damaged")
        partitions, layout = self._restoring
        hash_key, count, expires, keys = record["p"]
        partitions.add_stored(dynamo_type(hash_key),
                              StoredPartition(count, expires, keys, layout, record["payload"]))


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: a restore allocates much and frees nothing.

    Otherwise every few hundred allocations it walks the young objects, and ever more often
    all of them; a restore of a million items spends a third of its time there.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _put_image(table: Table, image: Image) -> None:
    """Store an item's image as moto's put would (replay: moto checked it when it was written)."""
    item = item_from_image(image, table.hash_key_attr, table.range_key_attr)
    if table.range_key_attr:
        table.items[item.hash_key][item.range_key] = item
    else:
        table.items[item.hash_key] = item
    _note_write(table, item.hash_key, item.range_key)


def _partition_line(table: Table, hash_key: DynamoType,
                    layout: Layout) -> tuple[bytes | None, int]:
    """Return a partition's snapshot line and item count (None if it is empty now)."""
    items = table.items
    stored = items.stored_partition(hash_key) if isinstance(items, PartitionMap) else None
    if stored is not None:
        stored = restored(stored, layout)
    else:
        partition = dict.get(items, hash_key)
        if not partition:
            return None, 0
        stored = stored_partition([item.to_json()["Attributes"]
                                   for item in partition_items(table, partition)], layout)
    record = {"p": [hash_key.to_json(), stored.count, stored.expires, stored.keys]}
    return encode_record_with_payload(record, stored.payload), stored.count


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
        # The restored data lives as long as the server: later collections need not walk it.
        gc.freeze()
        print(f"embedded DynamoDB: data in {storage.directory} ({storage.summary()} restored)",
              flush=True)
    dynamodb_ttl.Expirer(dynamodb_backends, _LOCK, expire_items).start()
    moto_main(moto_argv)


if __name__ == "__main__":
    main()
