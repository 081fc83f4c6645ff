"""A table's items in the embedded DynamoDB: moto's partitions, some still as the text they were stored as.

moto keeps a table's items in `table.items`, a dict from hash key to its partition (a dict from
range key to Item, or the Item itself when the table has no range key). Turning a million stored
items into moto Items takes most of a minute, so a table restored from a snapshot is given a
`PartitionMap`: the same dict, except that a partition read from the snapshot stays the JSON it
was stored as (a `StoredPartition`) until something touches it; then its Items are built, once.
Everything moto does with `table.items` (index, `in`, `get`, `pop`, iterate) sees every item.

`item_from_image` builds the Item that moto's own put would store for an image (the item's
attributes in DynamoDB JSON), without re-checking what moto checked when the image was written.
"""
from __future__ import annotations

import base64
import copy
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import Table

from scripts.dynamodb_journal import encode_payload

Image = dict[str, Any]

_new = object.__new__


@dataclass(frozen=True)
class StoredPartition:
    """One partition's items as stored: a JSON array of images, and what is known without it."""

    count: int
    # The smallest numeric value of `ttl_attribute` among the items (None: no item has one).
    expires: float | None
    ttl_attribute: str | None
    payload: bytes

    def images(self) -> list[Image]:
        return json.loads(self.payload)


def ttl_value(attribute: DynamoType | None) -> float | None:
    """Return a TTL attribute's time in epoch seconds, or None if TTL ignores it (not a number)."""
    if attribute is None or attribute.type != "N":
        return None
    try:
        return float(attribute.value)
    except (TypeError, ValueError):
        return None


def stored_partition(items: Iterable[Item], ttl_attribute: str | None) -> StoredPartition:
    """Return the stored form of a partition's items."""
    images, earliest = [], None
    for item in items:
        images.append(item.to_json()["Attributes"])
        if ttl_attribute is not None:
            expires = ttl_value(item.attrs.get(ttl_attribute))
            if expires is not None and (earliest is None or expires < earliest):
                earliest = expires
    return StoredPartition(len(images), earliest, ttl_attribute, encode_payload(images))


def item_from_image(image: Image, hash_key_attr: str, range_key_attr: str | None) -> Item:
    """Return the Item moto stores for this image (already checked by moto when it was written)."""
    attrs = LimitedSizeDict.__new__(LimitedSizeDict)
    # dict.update, not LimitedSizeDict's __setitem__: that re-sums the item's size per attribute.
    dict.update(attrs, {name: dynamo_type(value) for name, value in image.items()})
    item = _new(Item)
    item.hash_key = attrs[hash_key_attr]
    item.range_key = attrs[range_key_attr] if range_key_attr else None
    item.attrs = attrs
    return item


def dynamo_type(value: Image) -> DynamoType:
    """Return the DynamoType moto builds from a request's value (binary as bytes)."""
    (kind, raw), = value.items()
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
        self._stored: dict[DynamoType, StoredPartition] = {}

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
        if dict.__contains__(self, hash_key) or hash_key in self._stored:
            existing = self[hash_key]
            for item in self._build(stored):
                if self._range_key_attr:
                    existing[item.range_key] = item
                else:
                    dict.__setitem__(self, hash_key, item)
            return
        self._stored[hash_key] = stored

    def stored(self) -> dict[DynamoType, StoredPartition]:
        """Return the partitions not built yet (a copy)."""
        return dict(self._stored)

    def stored_partition(self, hash_key: DynamoType) -> StoredPartition | None:
        """Return the partition under hash_key if it is not built yet."""
        return self._stored.get(hash_key)

    def build_all(self) -> None:
        """Build every stored partition."""
        for hash_key in list(self._stored):
            self[hash_key]

    def item_count(self) -> int:
        """Return how many items the table holds, without building anything."""
        built = (sum(len(partition) for partition in dict.values(self)) if self._range_key_attr
                 else dict.__len__(self))
        return built + sum(stored.count for stored in self._stored.values())

    def _build(self, stored: StoredPartition) -> list[Item]:
        return [item_from_image(image, self._hash_key_attr, self._range_key_attr)
                for image in stored.images()]

    # -- dict, as moto uses it -------------------------------------------------------------

    def __missing__(self, hash_key: DynamoType) -> Any:
        stored = self._stored.pop(hash_key, None)
        if stored is None:
            partition: Any = {}  # what moto's defaultdict(dict) gives
        elif self._range_key_attr:
            partition = {item.range_key: item for item in self._build(stored)}
        else:
            (partition,) = self._build(stored)
        dict.__setitem__(self, hash_key, partition)
        return partition

    def __contains__(self, hash_key: object) -> bool:
        return dict.__contains__(self, hash_key) or hash_key in self._stored

    def __setitem__(self, hash_key: DynamoType, partition: Any) -> None:
        self._stored.pop(hash_key, None)
        dict.__setitem__(self, hash_key, partition)

    def __delitem__(self, hash_key: DynamoType) -> None:
        if self._stored.pop(hash_key, None) is None:
            dict.__delitem__(self, hash_key)
        elif dict.__contains__(self, hash_key):
            dict.__delitem__(self, hash_key)

    def __len__(self) -> int:
        return dict.__len__(self) + len(self._stored)

    def __iter__(self) -> Iterator[DynamoType]:
        self.build_all()
        return dict.__iter__(self)

    def get(self, hash_key: DynamoType, default: Any = None) -> Any:
        return self[hash_key] if hash_key in self else default

    def pop(self, hash_key: DynamoType, *default: Any) -> Any:
        if hash_key in self._stored:
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

