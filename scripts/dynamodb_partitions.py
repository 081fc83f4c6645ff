"""A table's items in the embedded DynamoDB: moto's partitions, some still as the text they were stored as.

moto keeps a table's items in `table.items`, a dict from hash key to its partition (a dict from
range key to Item, or the Item itself when the table has no range key). Turning a million stored
items into moto Items takes most of a minute, so a table restored from a snapshot is given a
`PartitionMap`: the same dict, except that a partition read from the snapshot stays the JSON it
was stored as (a `StoredPartition`) until something touches it; then its Items are built, once.
Everything moto does with `table.items` (index, `in`, `get`, `pop`, iterate) sees every item.

A stored partition also says, without its items being read, how many items it holds, their
earliest TTL time (for scripts/dynamodb_ttl.py) and, in a table with secondary indexes, each
item's key attributes (so scripts/dynamodb_key_index.py can sort an index's keys without
building the items). Which TTL attribute and key attributes those are is the partition's
`Layout`, the table's at the time it was stored.

`item_from_image` builds the Item that moto's own put would store for an image (the item's
attributes in DynamoDB JSON), without re-checking what moto checked when the image was written.
"""
from __future__ import annotations

import base64
import copy
import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import Table

from scripts.dynamodb_journal import encode_payload

Image = dict[str, Any]

_new = object.__new__


@dataclass(frozen=True)
class Layout:
    """What a stored partition records beside its items: a TTL attribute, key attributes."""

    ttl_attribute: str | None
    # The table's key attributes and its indexes'; None for a table without indexes.
    key_attributes: tuple[str, ...] | None

    @classmethod
    def of(cls, table: Table) -> "Layout":
        """Return the layout a partition of this table is stored with now."""
        indexes = [*table.global_indexes, *table.indexes]
        names = None
        if indexes:
            names = tuple(dict.fromkeys([*table.table_key_attrs, *(
                key["AttributeName"] for index in indexes for key in index.schema)]))
        return cls(table.ttl.get("AttributeName"), names)


@dataclass(frozen=True)
class StoredPartition:
    """One partition's items as stored: a JSON array of images, and what is known without it."""

    count: int
    # The smallest numeric value of the layout's TTL attribute among the items (None: none has one).
    expires: float | None
    # Each item's key attributes (as the layout names them), or None.
    keys: list[Image] | None
    layout: Layout
    # A view into the snapshot line it was read from (no copy at start), or bytes.
    payload: bytes | memoryview

    def images(self) -> list[Image]:
        return json.loads(bytes(self.payload))


def stored_partition(images: list[Image], layout: Layout) -> StoredPartition:
    """Return the stored form of a partition's item images."""
    earliest = None
    if layout.ttl_attribute is not None:
        times = [_number(image.get(layout.ttl_attribute)) for image in images]
        earliest = min((time for time in times if time is not None), default=None)
    keys = None
    if layout.key_attributes is not None:
        keys = [{name: image[name] for name in layout.key_attributes if name in image}
                for image in images]
    return StoredPartition(len(images), earliest, keys, layout, encode_payload(images))


def restored(stored: StoredPartition, layout: Layout) -> StoredPartition:
    """Return the partition stored with `layout` (itself if it already is)."""
    return stored if stored.layout == layout else stored_partition(stored.images(), layout)


def ttl_value(attribute: DynamoType | None) -> float | None:
    """Return a TTL attribute's time in epoch seconds, or None if TTL ignores it (not a number)."""
    return None if attribute is None else _number({attribute.type: attribute.value})


def _number(value: Image | None) -> float | None:
    if not value or "N" not in value:
        return None
    try:
        return float(value["N"])
    except (TypeError, ValueError):
        return None


def item_from_image(image: Image, hash_key_attr: str, range_key_attr: str | None) -> Item:
    """Return the Item moto stores for this image (already checked by moto when it was written)."""
    # LimitedSizeDict's own __setitem__ re-sums the item's size for every attribute.
    attrs = LimitedSizeDict.__new__(LimitedSizeDict)
    for name, value in image.items():
        (kind,) = value
        raw = value[kind]
        if kind in _NESTED:
            built = dynamo_type(value)
        else:
            built = _new(DynamoType)
            built.type = kind
            built.value = raw
        dict.__setitem__(attrs, name, built)
    item = _new(Item)
    item.hash_key = attrs[hash_key_attr]
    item.range_key = attrs[range_key_attr] if range_key_attr else None
    item.attrs = attrs
    return item


_NESTED = {"L", "M", "B", "BS"}


def dynamo_type(value: Image) -> DynamoType:
    """Return the DynamoType moto builds from a request's value (binary as bytes)."""
    (kind,) = value
    raw = value[kind]
    if kind == "L":
        raw = [dynamo_type(element) for element in raw]
    elif kind == "M":
        raw = {name: dynamo_type(element) for name, element in raw.items()}
    elif kind == "B":
        raw = base64.b64decode(raw)  # moto holds binary as bytes; JSON holds it as base64
    elif kind == "BS":
        raw = [base64.b64decode(element) for element in raw]
    built = _new(DynamoType)
    built.type = kind
    built.value = raw
    return built


def item_at(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Item | None:
    """Return the item stored under a primary key, building its partition if it is still text."""
    partition = table.items.get(hash_key)
    if partition is None or not table.range_key_attr:
        return partition
    return partition.get(range_key)


def built_item_at(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Item | None:
    """Return the item under a primary key if its partition is built (a write always builds it)."""
    partition = dict.get(table.items, hash_key)
    if partition is None or not table.range_key_attr:
        return partition
    return partition.get(range_key)


def partition_items(table: Table, partition: Any) -> list[Item]:
    """Return the Items of a materialised partition (a range-key dict, or one Item)."""
    return list(partition.values()) if table.range_key_attr else [partition]


class PartitionMap(dict):
    """`table.items` whose partitions may still be stored text, built on first touch."""

    def __init__(self, table: Table) -> None:
        super().__init__()
        self._range_key_attr = table.range_key_attr
        self._hash_key_attr = table.hash_key_attr
        # Keyed by (type, value) rather than by DynamoType, whose hash takes several calls:
        # a start adds a stored partition per line of the snapshot.
        self._stored: dict[tuple[str, Any], tuple[DynamoType, StoredPartition]] = {}

    @classmethod
    def of(cls, table: Table) -> "PartitionMap":
        """Give the table a PartitionMap holding its current items (if it has none yet)."""
        if not isinstance(table.items, PartitionMap):
            partitions = cls(table)
            dict.update(partitions, table.items)
            table.items = partitions
        return table.items

    # -- stored partitions ----------------------------------------------------------------

    def add_stored(self, hash_key: DynamoType, stored: StoredPartition) -> None:
        """Hold a stored partition; merged into what is there if the partition exists already."""
        held = self._stored.setdefault(_plain(hash_key), (hash_key, stored))
        if held[1] is not stored:
            self._merge(hash_key, stored)
        elif dict.__len__(self) and dict.__contains__(self, hash_key):
            del self._stored[_plain(hash_key)]
            self._merge(hash_key, stored)

    def _merge(self, hash_key: DynamoType, stored: StoredPartition) -> None:
        existing = self[hash_key]
        for item in self._build(stored):
            if self._range_key_attr:
                existing[item.range_key] = item
            else:
                dict.__setitem__(self, hash_key, item)

    def stored(self) -> list[tuple[DynamoType, StoredPartition]]:
        """Return the partitions not built yet, with their hash keys."""
        return list(self._stored.values())

    def stored_partition(self, hash_key: DynamoType) -> StoredPartition | None:
        """Return the partition under hash_key if it is not built yet."""
        held = self._stored.get(_plain(hash_key)) if self._stored else None
        return None if held is None else held[1]

    def build_all(self) -> None:
        """Build every stored partition."""
        for hash_key, _ in self.stored():
            self[hash_key]

    def item_count(self) -> int:
        """Return how many items the table holds, without building anything."""
        built = (sum(len(partition) for partition in dict.values(self)) if self._range_key_attr
                 else dict.__len__(self))
        return built + sum(stored.count for _, stored in self._stored.values())

    def _build(self, stored: StoredPartition) -> list[Item]:
        return [item_from_image(image, self._hash_key_attr, self._range_key_attr)
                for image in stored.images()]

    def _pop_stored(self, hash_key: object) -> StoredPartition | None:
        if not self._stored or not isinstance(hash_key, DynamoType):
            return None
        held = self._stored.pop(_plain(hash_key), None)
        return None if held is None else held[1]

    # -- dict, as moto uses it -------------------------------------------------------------

    def __missing__(self, hash_key: DynamoType) -> Any:
        stored = self._pop_stored(hash_key)
        if stored is None:
            partition: Any = {}  # what moto's defaultdict(dict) gives
        elif self._range_key_attr:
            partition = {item.range_key: item for item in self._build(stored)}
        else:
            (partition,) = self._build(stored)
        dict.__setitem__(self, hash_key, partition)
        return partition

    def __contains__(self, hash_key: object) -> bool:
        return dict.__contains__(self, hash_key) or (
            bool(self._stored) and isinstance(hash_key, DynamoType)
            and _plain(hash_key) in self._stored)

    def __setitem__(self, hash_key: DynamoType, partition: Any) -> None:
        self._pop_stored(hash_key)
        dict.__setitem__(self, hash_key, partition)

    def __delitem__(self, hash_key: DynamoType) -> None:
        if self._pop_stored(hash_key) is None or dict.__contains__(self, hash_key):
            dict.__delitem__(self, hash_key)

    def __len__(self) -> int:
        return dict.__len__(self) + len(self._stored)

    def __iter__(self) -> Iterator[DynamoType]:
        self.build_all()
        return dict.__iter__(self)

    def get(self, hash_key: DynamoType, default: Any = None) -> Any:
        return self[hash_key] if hash_key in self else default

    def pop(self, hash_key: DynamoType, *default: Any) -> Any:
        if hash_key in self:
            self[hash_key]
        return dict.pop(self, hash_key, *default)

    def keys(self) -> Any:
        self.build_all()
        return dict.keys(self)

    def values(self) -> Any:
        self.build_all()
        return dict.values(self)

    def items(self) -> Any:
        self.build_all()
        return dict.items(self)

    def clear(self) -> None:
        self._stored.clear()
        dict.clear(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # A copy (moto's backups) is an ordinary moto table: every partition built.
        return copy.deepcopy(defaultdict(dict, self.items()), memo)


def _plain(key: DynamoType) -> tuple[str, Any]:
    """Return what a key DynamoType's equality and hash are made of (its type and cast_value)."""
    kind = key.type
    return (kind, Decimal(key.value)) if kind == "N" else (kind, key.value)
