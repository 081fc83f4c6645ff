"""The embedded DynamoDB deletes items past their table's TTL, in bounded batches.

That the deletions are journaled is tested with the data directory (test_embedded_dynamodb.py).
"""
from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from moto.dynamodb.models.dynamo_type import DynamoType

from scripts.dynamodb_ttl import Expirer, ExpirySchedule
from scripts.embedded_dynamodb import expire_items, expirer

REGION = "us-east-1"
NOW = 1_800_000_000.0
YEAR = 365 * 86_400


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class CountedExpire:
    """expire_items, recording how many items each hold of the lock deleted."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, backend: Any, table: Any, keys: list[Any]) -> None:
        self.batches.append(len(keys))
        expire_items(backend, table, keys)


@pytest.fixture
def client(aws: None) -> Any:
    """A DynamoDB client on in-process moto (tests/conftest.py), with TTL-enabled tables."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    create_tables(dynamodb)
    return dynamodb


def create_tables(client: Any) -> None:
    client.create_table(
        TableName="events", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "sessionId", "KeyType": "HASH"},
                   {"AttributeName": "seq", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "sessionId", "AttributeType": "S"},
                              {"AttributeName": "seq", "AttributeType": "N"}])
    client.create_table(
        TableName="sessions", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                              {"AttributeName": "ownerId", "AttributeType": "S"}],
        GlobalSecondaryIndexes=[{"IndexName": "byOwner", "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "ownerId", "KeyType": "HASH"}]}])
    for table in ("events", "sessions"):
        client.update_time_to_live(TableName=table, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": "expiresAt"})


def event(session: str, seq: int, expires: Any = None) -> dict[str, Any]:
    item = {"sessionId": {"S": session}, "seq": {"N": str(seq)}}
    if expires is not None:
        item["expiresAt"] = expires if isinstance(expires, dict) else {"N": str(expires)}
    return item


def session(session_id: str, expires: float) -> dict[str, Any]:
    return {"id": {"S": session_id}, "ownerId": {"S": "ann"}, "expiresAt": {"N": str(expires)}}


def kept(client: Any, table: str) -> list[dict[str, Any]]:
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted(items, key=repr)


def expirer_at(clock: Clock, expire: Any = expire_items, batch: int = 100) -> Expirer:
    return expirer(expire, batch=batch, clock=clock)


def test_items_past_their_time_are_deleted_and_the_others_kept(client: Any) -> None:
    clock = Clock()
    expired = [event("s1", 1, NOW - 1), event("s1", 2, NOW - 3600), event("s2", 1, NOW - 10)]
    left = [
        event("s1", 3, NOW + 60),  # not yet
        event("s1", 4),  # no TTL attribute
        event("s1", 5, {"S": str(NOW - 10)}),  # not a number: TTL ignores it
        event("s1", 6, NOW - 6 * YEAR),  # more than five years ago: ignored
        event("s1", 7, NOW),  # expires at now, not before
    ]
    for item in expired + left:
        client.put_item(TableName="events", Item=item)
    client.put_item(TableName="sessions", Item=session("gone", NOW - 5))
    client.put_item(TableName="sessions", Item=session("here", NOW + 3600))

    assert expirer_at(clock).expire_due() == 4

    assert kept(client, "events") == sorted(left, key=repr)
    assert kept(client, "sessions") == [session("here", NOW + 3600)]
    clock.now = NOW + 61
    assert expirer_at(clock).expire_due() == 2
    assert kept(client, "events") == sorted(left[1:4], key=repr)


def test_an_item_is_judged_by_its_ttl_when_the_deletion_comes(client: Any) -> None:
    clock = Clock()
    for seq in (1, 2, 3):
        client.put_item(TableName="events", Item=event("s", seq, NOW + 10))
    schedule = expirer_at(clock)
    assert schedule.expire_due() == 0  # builds the schedule
    client.update_item(TableName="events", Key={"sessionId": {"S": "s"}, "seq": {"N": "1"}},
                       UpdateExpression="SET expiresAt = :later",
                       ExpressionAttributeValues={":later": {"N": str(NOW + 1000)}})
    client.update_item(TableName="events", Key={"sessionId": {"S": "s"}, "seq": {"N": "2"}},
                       UpdateExpression="REMOVE expiresAt")
    clock.now = NOW + 11

    assert schedule.expire_due() == 1

    assert [item["seq"]["N"] for item in kept(client, "events")] == ["1", "2"]


def test_a_table_without_ttl_enabled_keeps_its_items(client: Any) -> None:
    clock = Clock()
    client.update_time_to_live(TableName="events", TimeToLiveSpecification={
        "Enabled": False, "AttributeName": "expiresAt"})
    client.put_item(TableName="events", Item=event("s", 1, NOW - 100))

    assert expirer_at(clock).expire_due() == 0

    assert len(kept(client, "events")) == 1


def test_a_large_expiry_is_deleted_in_bounded_batches(client: Any) -> None:
    clock, expire = Clock(), CountedExpire()
    for first in range(0, 35, 5):
        client.batch_write_item(RequestItems={"events": [
            {"PutRequest": {"Item": event("s", seq, NOW - 1 - seq)}}
            for seq in range(first, first + 5)]})

    assert expirer_at(clock, expire, batch=10).expire_due() == 35

    assert expire.batches == [10, 10, 10, 5]
    assert kept(client, "events") == []


def test_expired_items_leave_the_indexes_too(client: Any) -> None:
    clock = Clock()
    owned = {"TableName": "sessions", "IndexName": "byOwner",
             "KeyConditionExpression": "ownerId = :o",
             "ExpressionAttributeValues": {":o": {"S": "ann"}}}
    client.put_item(TableName="sessions", Item=session("gone", NOW - 5))
    client.put_item(TableName="sessions", Item=session("here", NOW + 5))
    assert client.query(**owned)["Count"] == 2

    expirer_at(clock).expire_due()

    assert [item["id"] for item in client.query(**owned)["Items"]] == [{"S": "here"}]


def test_the_expirer_thread_deletes_in_the_background(client: Any) -> None:
    client.put_item(TableName="events", Item=event("s", 1, time.time() - 1))
    client.put_item(TableName="events", Item=event("s", 2, time.time() + 3600))
    thread = expirer(period=0.02).start()
    try:
        deadline = time.monotonic() + 10
        while len(kept(client, "events")) != 1:
            assert time.monotonic() < deadline, "the expired item was not deleted"
            time.sleep(0.02)
    finally:
        thread.stop()
    assert [item["seq"] for item in kept(client, "events")] == [{"N": "2"}]


class _Item:
    def __init__(self, expires: int) -> None:
        self.attrs = {"expiresAt": DynamoType({"N": str(expires)})}


def test_partitions_still_stored_as_text_do_not_make_every_write_rebuild_the_schedule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A store restored lazily schedules its partitions, not their items: those entries are
    live. Counted as stale, they made each write rebuild the whole schedule (seen as starts
    1.5x slower with 1,000,000 stored events)."""
    schedule = ExpirySchedule("expiresAt")
    for index in range(5_000):
        schedule.note_stored(DynamoType({"S": f"session-{index}"}), 2_000_000_000 + index)
    rebuilds = []
    drop_stale = schedule._drop_stale
    monkeypatch.setattr(schedule, "_drop_stale", lambda: rebuilds.append(1) or drop_stale())
    for index in range(200):
        schedule.note((DynamoType({"S": "new"}), DynamoType({"N": str(index)})),
                      _Item(2_000_000_000 + index))
    assert rebuilds == []


def test_stale_entries_are_still_dropped_when_an_item_is_rescheduled_often() -> None:
    schedule = ExpirySchedule("expiresAt")
    key = (DynamoType({"S": "session"}), None)
    for expires in range(5_000):
        schedule.note(key, _Item(2_000_000_000 + expires))
    assert len(schedule._heap) <= 2 * 1 + 1024 + 1
