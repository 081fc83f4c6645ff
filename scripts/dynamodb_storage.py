"""Keep the embedded DynamoDB's data in a directory: restore it at start, journal writes, compact.

`DurableStorage.open` locks a data directory (scripts/dynamodb_journal.py has the files), loads
what it holds into moto's backends and attaches a new journal, to which scripts/embedded_dynamodb.py
appends every write before it is acknowledged. A snapshot's partitions are restored as stored
text (scripts/dynamodb_partitions.py), built when first touched, so a start reads a million items
in a couple of seconds. Compaction writes the whole state as a new snapshot, from the keeper
thread (soon after a start that replayed journaled writes, and whenever the journal outgrew the
last snapshot), a few thousand items per hold of the backend lock.
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import threading
from pathlib import Path
from typing import Iterable, Iterator

from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

from scripts import dynamodb_key_index, dynamodb_ttl
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
from scripts.embedded_dynamodb import (
    LOCK,
    TABLE_OPERATIONS,
    Backends,
    Record,
    attach_journal,
    detach_journal,
    fail_stop,
    install_atomic_backend,
    location,
    moto_method,
    note_write,
    remember_schema,
    schema_records,
)

SYNC_SECONDS = 1.0
# How many items a compaction encodes per hold of the lock.
SNAPSHOT_CHUNK_ITEMS = 2000

# A table as a snapshot takes it: backend, table, schema records, its partitions' hash keys.
TableState = tuple[DynamoDBBackend, Table, list[Record], list[DynamoType]]
Generation = tuple[int, list[TableState]]


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
            with LOCK, _no_cyclic_gc():
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
        with LOCK:
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
            (backend, table, schema_records(table),
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
        with LOCK:
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
        self._stop.set()
        if self._keeper.is_alive():
            self._keeper.join()
        detach_journal(self._journal)
        self._journal.close()

    def summary(self) -> str:
        """Describe what the backends hold, for the start-up line."""
        tables = [table for _, table in self._tables()]
        return f"{len(tables)} tables, {sum(len(table) for table in tables)} items"

    def _attach(self) -> None:
        attach_journal(self._journal)
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
                fail_stop(f"cannot keep the data in {self.directory}: {error}")

    def _tables(self) -> Iterator[tuple[DynamoDBBackend, Table]]:
        for regions in list(self._backends.values()):
            for backend in list(regions.values()):
                for table in list(backend.tables.values()):
                    yield backend, table

    def _snapshot_lines(self, tables: list[TableState]) -> Iterator[bytes]:
        """Yield the snapshot's lines: per table, its operations, its layout, its partitions."""
        for backend, table, operations, hash_keys in tables:
            yield from (encode_record(record) for record in operations)
            with LOCK:
                layout = Layout.of(table)
            yield encode_record({"partitions": {
                **location(backend), "table": table.name, "ttlAttribute": layout.ttl_attribute,
                "keyAttributes": layout.key_attributes}})
            position = 0
            while position < len(hash_keys):
                lines, encoded = [], 0
                with LOCK:
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
        elif operation in TABLE_OPERATIONS:
            backend = self._backend(record)
            moto_method(operation)(backend, **record["args"])
            remember_schema(backend, record)
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
    note_write(table, item.hash_key, item.range_key)


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
