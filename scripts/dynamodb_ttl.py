"""Time to live in the embedded DynamoDB: expired items are deleted in the background.

DynamoDB deletes an item some time after the time in its table's TTL attribute has passed; moto
never does, so the local data would grow without bound. As DynamoDB documents it: TTL must be
enabled on the table; only a Number attribute counts, read as epoch seconds; an item expires once
that time is before now; a time more than five years in the past is ignored (a value in the
wrong unit, not an expiry). An item updated before its deletion is judged by its new value.

Each table with TTL enabled gets an `ExpirySchedule`, built on first use and then kept in step with
every write (`note_write`, called where scripts/dynamodb_key_index.py's is): a heap ordered by
expiry, so a pass looks only at what is due. A partition still stored as text
(scripts/dynamodb_partitions.py) is in the heap once, at its earliest expiry, and is read when
that time comes. The `Expirer` thread deletes due items in bounded batches, each under the
backend lock and written to the journal as one record by the `expire` callback it is given, so a
large expiry never holds requests up for long.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Callable, Iterable, Mapping
from weakref import WeakKeyDictionary

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

from scripts.dynamodb_partitions import PartitionMap, built_item_at, partition_items, ttl_value

IGNORED_AFTER_SECONDS = 5 * 365 * 86_400
EXPIRY_PERIOD_SECONDS = 1.0
EXPIRY_BATCH = 100
# Between two batches the lock is free this long, for the requests waiting on it.
BATCH_PAUSE_SECONDS = 0.005

PrimaryKey = tuple[DynamoType, "DynamoType | None"]
Expire = Callable[[DynamoDBBackend, Table, list[PrimaryKey]], None]
Backends = Mapping[str, Mapping[str, DynamoDBBackend]]

_ITEM, _PARTITION = "item", "partition"


class ExpirySchedule:
    """One table's items with a TTL time, in order of expiry."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute
        # (expires, tie-breaker, (kind, key)); an entry whose time no longer matches
        # `scheduled` is stale and skipped when it comes up.
        self._heap: list[tuple[float, int, tuple[str, Any]]] = []
        self._scheduled: dict[PrimaryKey, float] = {}
        # Entries for partitions still stored as text: live, though not in `scheduled`.
        self._partitions = 0
        self._tie = itertools.count()

    def note(self, key: PrimaryKey, item: Item | None) -> None:
        """Schedule the item by its TTL time (or stop scheduling it)."""
        expires = None if item is None else ttl_value(item.attrs.get(self.attribute))
        if self._scheduled.get(key) == expires:
            return
        if expires is None:
            self._scheduled.pop(key, None)
            return
        self._scheduled[key] = expires
        self._push(expires, (_ITEM, key))
        # Stale entries are dropped once they outnumber the live ones: a write then costs
        # O(log n) amortised. (Counting partition entries as stale made every write of a
        # store restored lazily rebuild the whole heap: a start took 1.5x as long at 1M events.)
        if len(self._heap) > 2 * (len(self._scheduled) + self._partitions) + 1024:
            self._drop_stale()

    def note_stored(self, hash_key: DynamoType, expires: float) -> None:
        """Schedule a partition still stored as text, to be read at its earliest expiry."""
        self._partitions += 1
        self._push(expires, (_PARTITION, hash_key))

    def due(self, table: Table, now: float, limit: int) -> tuple[list[PrimaryKey], bool]:
        """Return up to `limit` keys of items expired at `now`, and whether more may be due.

        Reading stored partitions counts against the limit too (an item read as much as one
        deleted), so one call never holds the lock for long whatever it finds.
        """
        found: list[PrimaryKey] = []
        work = 0
        while self._heap and self._heap[0][0] < now and len(found) + work < limit:
            expires, _, (kind, key) = heapq.heappop(self._heap)
            if kind == _PARTITION:
                self._partitions -= 1
                partition = table.items.get(key)
                for item in partition_items(table, partition) if partition else []:
                    self.note((item.hash_key, item.range_key), item)
                    work += 1
            elif self._scheduled.get(key) == expires:
                del self._scheduled[key]
                item = built_item_at(table, *key)
                if item is None or ttl_value(item.attrs.get(self.attribute)) != expires:
                    self.note(key, item)  # out of step (cannot happen if every write is noted)
                elif expires >= now - IGNORED_AFTER_SECONDS:
                    found.append(key)
        return found, bool(self._heap) and self._heap[0][0] < now

    def _push(self, expires: float, entry: tuple[str, Any]) -> None:
        heapq.heappush(self._heap, (expires, next(self._tie), entry))

    def _drop_stale(self) -> None:
        self._heap = [entry for entry in self._heap
                      if entry[2][0] == _PARTITION or self._scheduled.get(entry[2][1]) == entry[0]]
        heapq.heapify(self._heap)


_SCHEDULES: WeakKeyDictionary[Table, ExpirySchedule] = WeakKeyDictionary()


def ttl_attribute(table: Table) -> str | None:
    """Return the table's TTL attribute if TTL is enabled on it."""
    if table.ttl.get("TimeToLiveStatus") != "ENABLED":
        return None
    return table.ttl.get("AttributeName")


def schedule_of(table: Table) -> ExpirySchedule | None:
    """Return the table's schedule (built now if its TTL setting is new), None without TTL."""
    attribute = ttl_attribute(table)
    schedule = _SCHEDULES.get(table)
    if attribute is None:
        _SCHEDULES.pop(table, None)
        return None
    if schedule is None or schedule.attribute != attribute:
        schedule = _SCHEDULES[table] = _build(table, attribute)
    return schedule


def forget(table: Table) -> None:
    """Drop the table's schedule (its items were replaced wholesale); it is rebuilt on use."""
    _SCHEDULES.pop(table, None)


def note_write(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> None:
    """Bring the table's schedule (if it has one) in step with the item now under this key."""
    schedule = _SCHEDULES.get(table)
    if schedule is not None:
        schedule.note((hash_key, range_key), built_item_at(table, hash_key, range_key))


def _build(table: Table, attribute: str) -> ExpirySchedule:
    schedule = ExpirySchedule(attribute)
    if isinstance(table.items, PartitionMap):
        for hash_key, stored in table.items.stored():
            if stored.layout.ttl_attribute != attribute:
                schedule.note_stored(hash_key, float("-inf"))  # unknown: read it soon
            elif stored.expires is not None:
                schedule.note_stored(hash_key, stored.expires)
    for partition in dict.values(table.items):
        for item in partition_items(table, partition):
            schedule.note((item.hash_key, item.range_key), item)
    return schedule


class Expirer:
    """A thread that deletes expired items, a bounded batch per hold of the backend lock."""

    def __init__(self, backends: Backends, lock: Any, expire: Expire,
                 period: float = EXPIRY_PERIOD_SECONDS, batch: int = EXPIRY_BATCH,
                 clock: Callable[[], float] = time.time) -> None:
        self._backends = backends
        self._lock = lock
        self._expire = expire
        self._period = period
        self._batch = batch
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ttl-expirer", daemon=True)

    def start(self) -> "Expirer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def expire_due(self) -> int:
        """Delete every item expired now, batch by batch; return how many."""
        deleted = 0
        for backend, table in self._tables():
            while not self._stop.is_set():
                with self._lock:
                    if backend.tables.get(table.name) is not table:
                        break  # deleted or replaced meanwhile
                    schedule = schedule_of(table)
                    keys, more = (schedule.due(table, self._clock(), self._batch) if schedule
                                  else ([], False))
                    if keys:
                        self._expire(backend, table, keys)
                deleted += len(keys)
                if not more:
                    break
                time.sleep(BATCH_PAUSE_SECONDS)
        return deleted

    def _tables(self) -> Iterable[tuple[DynamoDBBackend, Table]]:
        with self._lock:
            return [(backend, table) for regions in list(self._backends.values())
                    for backend in list(regions.values()) for table in list(backend.tables.values())
                    if ttl_attribute(table) is not None]

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.expire_due()
