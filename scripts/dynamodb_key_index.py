"""Sorted views of a table's keys, so the embedded DynamoDB's Query reads only what it returns.

moto answers a Query by sorting every item of the table (for an index: every item that has the
index's keys). These views keep, per table, the keys a Query walks in the order it walks them:

- a partition's range keys (built the first time that partition is queried; the most recently
  queried partitions are kept, so a session being polled stays sorted without growing memory
  with every session ever read);
- a global secondary index's entries, grouped by the index's hash value and sorted as moto sorts
  them (index range key, then the table's keys); built the first time the index is queried.

Each view holds, beside each sort position, the item's primary key; the item itself is read from
moto's storage when a Query reaches it. `note_write` brings the views in step with one item after
any write (put, update, delete, replay, expiry), from the item as it is stored now: calling it
again, or for a key that did not change, is harmless. Every change that moto's own methods can
make goes through `Table.put_item`, `Table.delete_item` or `DynamoDBBackend.update_item`, which
scripts/embedded_dynamodb.py wraps to call it; a view is rebuilt if its index's definition changed.
"""
from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterator, Optional
from weakref import WeakKeyDictionary

from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import GlobalSecondaryIndex, Table

from scripts.dynamodb_partitions import (
    PartitionMap,
    built_item_at,
    item_from_image,
    partition_items,
)

# How many partitions keep a sorted view of their range keys.
KEPT_PARTITION_VIEWS = 4096

PrimaryKey = tuple[DynamoType, Optional[DynamoType]]
Order = tuple[Any, ...]


def native(value: DynamoType) -> Any:
    """Return a Python value that sorts and compares as moto compares the DynamoType (cast_value)."""
    if value.type == "N":
        text = value.value
        # An int compares exactly with moto's Decimal and takes a fraction of its memory.
        if isinstance(text, str) and text.lstrip("-").isdigit():
            return int(text)
        return Decimal(text)
    return value.cast_value


@dataclass
class SortedKeys:
    """Items in Query order: their sort positions and, beside each, the item's primary key."""

    orders: list[Order] = field(default_factory=list)
    keys: list[PrimaryKey] = field(default_factory=list)

    def put(self, order: Order, key: PrimaryKey) -> None:
        position = bisect.bisect_left(self.orders, order)
        if position < len(self.orders) and self.orders[position] == order:
            self.keys[position] = key
        else:
            self.orders.insert(position, order)
            self.keys.insert(position, key)

    def remove(self, order: Order) -> None:
        position = bisect.bisect_left(self.orders, order)
        if position < len(self.orders) and self.orders[position] == order:
            del self.orders[position]
            del self.keys[position]

    @classmethod
    def sorted_from(cls, entries: list[tuple[Order, PrimaryKey]]) -> "SortedKeys":
        entries.sort(key=lambda entry: entry[0])
        return cls([order for order, _ in entries], [key for _, key in entries])


# An item whose index keys are not of the types the table declares: moto may sort or compare
# such an item in ways only its own Query reproduces, so an index holding one is not used.
_FOREIGN = object()


@dataclass
class IndexKeys:
    """One global secondary index's entries, grouped by its hash value."""

    definition: tuple[Any, ...]
    hash_attribute: str
    range_attribute: str | None
    # The attributes after the index's hash key that moto sorts by (its _generate_attr_to_sort_by).
    sort_attributes: list[str]
    types: dict[str, str]
    groups: dict[DynamoType, SortedKeys] = field(default_factory=dict)
    entries: dict[PrimaryKey, Any] = field(default_factory=dict)
    foreign: int = 0

    def entry(self, item: Item) -> Any:
        """Return (hash value, order) for the item, _FOREIGN, or None if the index lacks it."""
        attrs = item.attrs
        hash_value = attrs.get(self.hash_attribute)
        if hash_value is None:
            return None
        if self.range_attribute is not None:
            range_value = attrs.get(self.range_attribute)
            if range_value is None:
                return None
            if range_value.type != self.types[self.range_attribute]:
                return _FOREIGN
        if hash_value.type != self.types[self.hash_attribute]:
            return _FOREIGN
        return hash_value, tuple(native(attrs[name]) for name in self.sort_attributes)

    def update(self, key: PrimaryKey, item: Item | None) -> None:
        """Move the item's entry to where it belongs now (item None: the item is gone)."""
        old = self.entries.pop(key, None)
        new = None if item is None else self.entry(item)
        if old is _FOREIGN:
            self.foreign -= 1
        elif old is not None and (new is _FOREIGN or new is None or old != new):
            group = self.groups[old[0]]
            group.remove(old[1])
            if not group.orders:
                del self.groups[old[0]]
        if new is not None and self.hold(key, new):
            self.groups.setdefault(new[0], SortedKeys()).put(new[1], key)

    def hold(self, key: PrimaryKey, entry: Any) -> bool:
        """Record an item's entry; return whether it belongs in a group (is not foreign)."""
        self.entries[key] = entry
        if entry is _FOREIGN:
            self.foreign += 1
        return entry is not _FOREIGN


@dataclass
class TableKeys:
    """The views of one table."""

    partitions: OrderedDict[DynamoType, SortedKeys] = field(default_factory=OrderedDict)
    indexes: dict[str, IndexKeys] = field(default_factory=dict)


_VIEWS: WeakKeyDictionary[Table, TableKeys] = WeakKeyDictionary()


def _views(table: Table) -> TableKeys:
    views = _VIEWS.get(table)
    if views is None:
        views = _VIEWS[table] = TableKeys()
    return views


def partition_keys(table: Table, hash_key: DynamoType) -> SortedKeys:
    """Return the partition's items in range-key order (a hash-only table: its one item)."""
    views = _views(table)
    kept = views.partitions.get(hash_key)
    if kept is not None:
        views.partitions.move_to_end(hash_key)
        return kept
    partition = table.items.get(hash_key)
    if partition is None:
        return SortedKeys()
    if not table.range_key_attr:
        return SortedKeys([()], [(hash_key, None)])
    kept = SortedKeys.sorted_from([((native(range_key),), (hash_key, range_key))
                                   for range_key in partition])
    views.partitions[hash_key] = kept
    if len(views.partitions) > KEPT_PARTITION_VIEWS:
        views.partitions.popitem(last=False)
    return kept


def index_keys(table: Table, index: GlobalSecondaryIndex) -> IndexKeys | None:
    """Return the index's view (built now if it has none), or None if Query cannot use one."""
    definition = _definition(table, index)
    if definition is None:
        return None
    views = _views(table)
    kept = views.indexes.get(index.name)
    if kept is not None and kept.definition == definition:
        return kept
    kept = _build_index(table, index, definition)
    views.indexes[index.name] = kept
    return kept


def forget(table: Table) -> None:
    """Drop the table's views (its items were replaced wholesale); they are rebuilt on use."""
    _VIEWS.pop(table, None)


def note_write(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> None:
    """Bring the table's views in step with the item now stored under this key."""
    views = _VIEWS.get(table)
    if views is None:
        return
    item = built_item_at(table, hash_key, range_key)
    partition = views.partitions.get(hash_key)
    if partition is not None and range_key is not None:
        order = (native(range_key),)
        if item is None:
            partition.remove(order)
        else:
            partition.put(order, (hash_key, range_key))
    for index in views.indexes.values():
        index.update((hash_key, range_key), item)


def _definition(table: Table, index: GlobalSecondaryIndex) -> tuple[Any, ...] | None:
    hash_keys = [key["AttributeName"] for key in index.schema if key["KeyType"] == "HASH"]
    range_keys = [key["AttributeName"] for key in index.schema if key["KeyType"] == "RANGE"]
    types = {attribute["AttributeName"]: attribute["AttributeType"] for attribute in table.attr}
    if len(hash_keys) != 1 or len(range_keys) > 1:
        return None  # multi-attribute keys: moto's own Query
    if any(name not in types for name in hash_keys + range_keys):
        return None
    return (tuple(hash_keys), tuple(range_keys), tuple(sorted(types.items())),
            table.hash_key_attr, table.range_key_attr)


def _build_index(table: Table, index: GlobalSecondaryIndex,
                 definition: tuple[Any, ...]) -> IndexKeys:
    (hash_attribute,), range_keys, types, _, _ = definition
    range_attribute = range_keys[0] if range_keys else None
    # As moto's Table.query builds them for a global secondary index.
    if range_attribute is not None:
        range_attrs = [range_attribute, table.range_key_attr]
    else:
        range_attrs = [table.range_key_attr or table.hash_key_attr, table.range_key_attr]
    sort_by = table._generate_attr_to_sort_by([hash_attribute, table.hash_key_attr], range_attrs)
    view = IndexKeys(definition, hash_attribute, range_attribute, sort_by[1:], dict(types))
    grouped: dict[DynamoType, list[tuple[Order, PrimaryKey]]] = {}
    for item in _items_with_keys(table, {hash_attribute, *sort_by}):
        key = (item.hash_key, item.range_key)
        entry = view.entry(item)
        if entry is not None and view.hold(key, entry):
            grouped.setdefault(entry[0], []).append((entry[1], key))
    view.groups = {value: SortedKeys.sorted_from(entries) for value, entries in grouped.items()}
    return view


def _items_with_keys(table: Table, names: set[str]) -> Iterator[Item]:
    """Yield every item of the table, or of a stored partition only its keys if they cover names."""
    items = table.items
    built = list(dict.values(items))
    stored = items.stored() if isinstance(items, PartitionMap) else []
    for hash_key, partition in stored:
        if partition.keys is not None and names <= set(partition.layout.key_attributes or ()):
            for keys in partition.keys:
                yield item_from_image(keys, table.hash_key_attr, table.range_key_attr)
        else:
            yield from partition_items(table, items[hash_key])
    for partition in built:
        if partition:
            yield from partition_items(table, partition)
