"""The embedded DynamoDB's Query: moto's answer, reading only the keys the answer depends on.

moto's `Table.query` sorts every item of the table (or every item an index holds) and then walks
them. `query` here answers the same requests byte for byte — same items in the same order, same
Count, ScannedCount and LastEvaluatedKey — from the sorted views of scripts/dynamodb_key_index.py:
it starts where moto's walk would first take an item (the key condition's bound, or the
ExclusiveStartKey) and stops where nothing later could change the answer, running moto's own loop
on what lies between. Whatever the views cannot reproduce exactly goes to moto's own Query:
QueryFilter, multi-attribute or local index keys, a Limit of 0, key values or start keys of other
types than the table declares, index keys stored with such types.

Why stopping early is exact: moto's loop appends an item only if it meets the key condition, and
ends a page (LastEvaluatedKey) when, before looking at the next item, the page is full or that
item would take the page past 1 MB. The items meeting a key condition are one run in sort order.
Before the run nothing is appended and nothing can end a page (a page of nothing is not full and
no item exceeds 405,000 bytes, moto's item size limit). After it, nothing is appended either: the
first item after the run ends a full page, and a later one can end the page only if the page holds
more than 1 MB minus the largest item, in which case the walk goes on as moto's does.
"""
from __future__ import annotations

import bisect
import copy
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Iterator

from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, Table

from scripts import dynamodb_key_index as key_index
from scripts.dynamodb_key_index import SortedKeys, native
from scripts.dynamodb_partitions import item_at

# moto refuses an item whose attributes take more than this (LimitedSizeDict).
MAX_ITEM_SIZE = 405_000
_RANGE_OPERATORS = {"=", "<", "<=", ">", ">=", "BETWEEN", "BEGINS_WITH"}
_first = itemgetter(0)

QueryResult = tuple[list[Item], int, "dict[str, Any] | None"]

moto_query: Callable[..., QueryResult] = Table.query


@dataclass(frozen=True)
class _Walk:
    """Where a Query's walk over one sorted group starts, and the key condition's run [low, high)."""

    table: Table
    keys: SortedKeys
    start: int
    low: int
    high: int
    forward: bool

    def positions(self) -> Iterator[tuple[int, bool]]:
        """Yield (position, after the run) in moto's walking order, from the start."""
        if self.forward:
            for position in range(max(self.start, self.low), len(self.keys.orders)):
                yield position, position >= self.high
        else:
            for position in range(min(self.start, self.high) - 1, -1, -1):
                yield position, position < self.low


def query(table: Table, hash_key: DynamoType | None, range_comparison: str | None,
          range_objs: list[DynamoType], limit: int, exclusive_start_key: dict[str, Any],
          scan_index_forward: bool, projection_expressions: list[list[str]] | None,
          index_name: str | None = None, consistent_read: bool = False,
          filter_expression: Any = None,
          hash_key_conditions: list[tuple[str, DynamoType]] | None = None,
          range_key_conditions: list[tuple[str, str, list[DynamoType]]] | None = None,
          **filter_kwargs: Any) -> QueryResult:
    """Answer a Query as moto's Table.query does, reading only what the answer depends on."""
    walk = None
    if not filter_kwargs and limit != 0:
        try:
            walk = _plan(table, hash_key, range_comparison, range_objs, exclusive_start_key,
                         scan_index_forward, index_name, consistent_read,
                         hash_key_conditions or [], range_key_conditions or [])
        except (ArithmeticError, ValueError):
            walk = None  # a value that is not a number: moto's Query says how it fails
    answer = None if walk is None else _walk(walk, range_comparison, range_objs, limit,
                                             index_name, range_key_conditions or [])
    if answer is None:
        return moto_query(table, hash_key, range_comparison, range_objs, limit,
                          exclusive_start_key, scan_index_forward, projection_expressions,
                          index_name, consistent_read, filter_expression,
                          hash_key_conditions=hash_key_conditions,
                          range_key_conditions=range_key_conditions, **filter_kwargs)
    results, scanned_count, last_evaluated_key = answer
    # As moto's Table.query finishes.
    results = copy.deepcopy(results)
    if index_name:
        index = table.get_index(index_name)
        results = [index.project(result) for result in results]
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expressions:
        results = [result.project(projection_expressions) for result in results]
    return results, scanned_count, last_evaluated_key


def _plan(table: Table, hash_key: DynamoType | None, range_comparison: str | None,
          range_objs: list[DynamoType], exclusive_start_key: dict[str, Any] | None,
          forward: bool, index_name: str | None, consistent_read: bool,
          hash_key_conditions: list[tuple[str, DynamoType]],
          range_key_conditions: list[tuple[str, str, list[DynamoType]]]) -> _Walk | None:
    """Return the walk for this Query, or None if only moto's own Query answers it exactly."""
    if len(hash_key_conditions) > 1 or len(range_key_conditions) > 1:
        return None
    if index_name:
        index = next((i for i in table.global_indexes if i.name == index_name), None)
        if index is None or consistent_read or len(hash_key_conditions) != 1:
            return None  # moto refuses these, or it is a local index
        view = key_index.index_keys(table, index)
        if view is None or view.foreign:
            return None
        group_attribute, group_value = hash_key_conditions[0]
        if group_attribute != view.hash_attribute:
            return None
        range_attribute, sort_attributes, types = (view.range_attribute, view.sort_attributes,
                                                   view.types)
        keys = view.groups.get(group_value) or SortedKeys()
    else:
        if hash_key is None:
            return None
        group_attribute, group_value = table.hash_key_attr, hash_key
        range_attribute = table.range_key_attr
        sort_attributes = [range_attribute] if range_attribute else []
        types = {table.hash_key_attr: table.hash_key_type}
        if range_attribute:
            types[range_attribute] = table.range_key_type
        keys = key_index.partition_keys(table, hash_key)
    if range_comparison is not None:
        if (range_attribute is None or range_comparison not in _RANGE_OPERATORS
                or not range_key_conditions or range_key_conditions[0][0] != range_attribute
                or any(value.type != types[range_attribute] for value in range_objs)
                or types[range_attribute] not in ("S", "N")
                or (range_comparison == "BEGINS_WITH" and types[range_attribute] != "S")):
            return None  # binary keys too: moto compares a request's base64 text with bytes
        run = _run(keys, range_comparison, [value.cast_value for value in range_objs])
    else:
        run = (0, len(keys.orders))
    start = _start(keys, group_value, exclusive_start_key, group_attribute, sort_attributes,
                   types, forward)
    if start is None:
        return None
    return _Walk(table, keys, start, *run, forward)


def _run(keys: SortedKeys, operator: str, values: list[Any]) -> tuple[int, int]:
    """Return the positions [low, high) whose first sort value meets the key condition."""
    orders, count = keys.orders, len(keys.orders)
    if operator == "BEGINS_WITH":
        (prefix,) = values
        low = bisect.bisect_left(orders, prefix, key=_first)
        # Within [low, count) the values that start with the prefix come first.
        high = bisect.bisect_left(orders, True, lo=low,
                                  key=lambda order: not order[0].startswith(prefix))
        return low, high
    if operator == "BETWEEN":
        lower, upper = values
        low = bisect.bisect_left(orders, lower, key=_first)
        return low, max(low, bisect.bisect_right(orders, upper, key=_first))
    (value,) = values
    left = bisect.bisect_left(orders, value, key=_first)
    right = bisect.bisect_right(orders, value, key=_first)
    return {"=": (left, right), "<": (0, left), "<=": (0, right), ">": (right, count),
            ">=": (left, count)}[operator]


def _start(keys: SortedKeys, group_value: DynamoType, start_key: dict[str, Any] | None,
           group_attribute: str, sort_attributes: list[str], types: dict[str, str],
           forward: bool) -> int | None:
    """Return where the walk starts after skipping what ExclusiveStartKey says was read.

    Forward, positions before the result are skipped; backward, positions from the result on.
    None if the start key is not one moto compares as the sort does (missing or mistyped keys).
    """
    count = len(keys.orders)
    if start_key is None:
        return 0 if forward else count
    values = []
    for name in [group_attribute, *sort_attributes]:
        value = start_key.get(name) if isinstance(start_key, dict) else None
        if (not isinstance(value, dict) or len(value) != 1 or types.get(name) not in ("S", "N")
                or types[name] not in value or not isinstance(value[types[name]], str)):
            return None
        values.append(native(DynamoType(value)))
    if count == 0:
        return 0
    group, order = values[0], tuple(values[1:])
    mine = native(group_value)
    if mine != group:
        # moto compares the hash values first: the whole group was read, or none of it.
        read_all = (mine < group) == forward
        return (count if read_all else 0) if forward else (0 if read_all else count)
    if forward:
        return bisect.bisect_right(keys.orders, order)
    return bisect.bisect_left(keys.orders, order)


def _walk(walk: _Walk, range_comparison: str | None, range_objs: list[DynamoType], limit: int,
          index_name: str | None,
          range_key_conditions: list[tuple[str, str, list[DynamoType]]]) -> QueryResult | None:
    """Run moto's Query loop over the walk; None if the views disagree with the table."""
    table = walk.table
    range_attribute = range_key_conditions[0][0] if range_key_conditions else None
    results: list[Item] = []
    result_size = scanned_count = 0
    last_evaluated_key = None
    for position, after_run in walk.positions():
        full = len(results) == limit
        if after_run and not full and result_size <= RESULT_SIZE_LIMIT - MAX_ITEM_SIZE:
            break  # nothing from here on can be appended or end the page
        hash_key, range_key = walk.keys.keys[position]
        item = item_at(table, hash_key, range_key)
        if item is None:
            key_index.forget(table)
            return None
        size = item.size()
        if full or result_size + size > RESULT_SIZE_LIMIT:
            last_evaluated_key = table._get_last_evaluated_key(results[-1], index_name)
            break
        if range_comparison is None:
            results.append(item)
            result_size += size
            scanned_count += 1
        else:
            value = item.attrs.get(range_attribute) if range_attribute else None
            if value is not None and value.compare(range_comparison, range_objs):
                results.append(item)
                result_size += size
                scanned_count += 1
    return results, scanned_count, last_evaluated_key
