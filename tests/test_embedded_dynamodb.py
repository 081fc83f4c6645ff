"""The embedded DynamoDB's data directory: every acknowledged write survives a restart."""
from __future__ import annotations

import errno
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item

from scripts.dynamodb_journal import DataDirectoryInUse, Journal, JournalError, lock_holder
from scripts.dynamodb_partitions import PartitionMap
from scripts.dynamodb_storage import DurableStorage
from scripts.embedded_dynamodb import expire_items, expirer
from tests import test_embedded_dynamodb_query as queried

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DDB_ENDPOINT", raising=False)


@contextmanager
def server_run(data_dir: Path, **options: Any) -> Iterator[Any]:
    """One run of the embedded DynamoDB on data_dir: a fresh moto, restored, then closed."""
    with storage_run(data_dir, **options) as (client, _):
        yield client


@contextmanager
def storage_run(data_dir: Path, **options: Any) -> Iterator[tuple[Any, DurableStorage]]:
    with mock_aws():
        storage = DurableStorage.open(data_dir, **options)
        try:
            yield boto3.client("dynamodb", region_name=REGION), storage
        finally:
            storage.close()


def create_tables(client: Any) -> None:
    """Tables shaped like backchat's: a GSI, a range key, TTL."""
    client.create_table(
        TableName="sessions",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "owner", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[{
            "IndexName": "byOwner",
            "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
        BillingMode="PAY_PER_REQUEST",
    )
    create_composite_table(client, "events")
    client.update_time_to_live(
        TableName="events",
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
    )


def create_composite_table(client: Any, name: str, hash_key: tuple[str, str] = ("sessionId", "S"),
                           range_key: tuple[str, str] = ("seq", "N")) -> None:
    """Create a table with a hash and a range key, given as (name, type)."""
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": hash_key[0], "KeyType": "HASH"},
                   {"AttributeName": range_key[0], "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": attribute, "AttributeType": kind}
                              for attribute, kind in (hash_key, range_key)],
    )


def event(session_id: str, seq: int, content: str = "text") -> dict[str, Any]:
    return {"sessionId": {"S": session_id}, "seq": {"N": str(seq)}, "content": {"S": content}}


def everything(client: Any) -> dict[str, list[dict[str, Any]]]:
    """Every item of every table, in a stable order."""
    found = {}
    for name in client.list_tables()["TableNames"]:
        items = client.scan(TableName=name, ConsistentRead=True)["Items"]
        found[name] = sorted(items, key=repr)
    return found


def journal_files(data_dir: Path) -> list[str]:
    return sorted(path.name for path in data_dir.iterdir() if path.name != "lock")


def test_every_kind_of_write_survives_a_restart(tmp_path: Path) -> None:
    with server_run(tmp_path) as client:
        create_tables(client)
        client.put_item(TableName="sessions", Item={
            "id": {"S": "s1"}, "owner": {"S": "ann"}, "status": {"S": "running"},
            "answer": {"S": "Привет 你好 👋 e\u0301"},
            "blob": {"M": {"raw": {"B": b"\x00\xff"}, "list": {"L": [{"N": "1"}]}}},
        })
        client.put_item(TableName="sessions", Item={"id": {"S": "gone"}, "owner": {"S": "ann"}})
        client.delete_item(TableName="sessions", Key={"id": {"S": "gone"}})
        client.update_item(TableName="sessions", Key={"id": {"S": "s1"}},
                           UpdateExpression="SET lastSeq = :seq",
                           ExpressionAttributeValues={":seq": {"N": "2"}})
        client.transact_write_items(TransactItems=[
            {"Update": {"TableName": "sessions", "Key": {"id": {"S": "s1"}},
                        "UpdateExpression": "SET #s = :done",
                        "ConditionExpression": "lastSeq = :two",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":done": {"S": "done"},
                                                      ":two": {"N": "2"}}}},
            {"Put": {"TableName": "events", "Item": event("s1", 1)}},
            {"Put": {"TableName": "events", "Item": event("s1", 2)}},
        ])
        client.batch_write_item(RequestItems={"events": [
            {"PutRequest": {"Item": event("s2", 1)}},
            {"PutRequest": {"Item": event("s2", 2)}},
        ]})
        before = everything(client)

    with server_run(tmp_path) as client:
        assert everything(client) == before
        indexes = client.describe_table(TableName="sessions")["Table"]["GlobalSecondaryIndexes"]
        assert [index["IndexName"] for index in indexes] == ["byOwner"]
        owned = client.query(TableName="sessions", IndexName="byOwner",
                             KeyConditionExpression="#o = :ann",
                             ExpressionAttributeNames={"#o": "owner"},
                             ExpressionAttributeValues={":ann": {"S": "ann"}})["Items"]
        assert [item["id"]["S"] for item in owned] == ["s1"]
        ttl = client.describe_time_to_live(TableName="events")["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiresAt"}


def test_a_deleted_table_stays_deleted_after_a_restart(tmp_path: Path) -> None:
    with server_run(tmp_path) as client:
        create_tables(client)
        client.delete_table(TableName="sessions")

    with server_run(tmp_path) as client:
        assert client.list_tables()["TableNames"] == ["events"]


def test_refused_writes_add_nothing_to_the_journal(tmp_path: Path) -> None:
    with server_run(tmp_path) as client:
        create_tables(client)
        client.put_item(TableName="events", Item=event("s1", 1))
        journal = tmp_path / journal_files(tmp_path)[0]
        size = journal.stat().st_size

        with pytest.raises(ClientError, match="ConditionalCheckFailed"):
            client.put_item(TableName="events", Item=event("s1", 1, "again"),
                            ConditionExpression="attribute_not_exists(seq)")
        with pytest.raises(ClientError, match="TransactionCanceled"):
            client.transact_write_items(TransactItems=[
                {"Put": {"TableName": "events", "Item": event("s1", 2)}},
                {"Put": {"TableName": "events", "Item": event("s1", 1, "again"),
                         "ConditionExpression": "attribute_not_exists(seq)"}},
            ])

        assert journal.stat().st_size == size

    with server_run(tmp_path) as client:
        assert everything(client)["events"] == [event("s1", 1)]


def test_a_write_costs_the_same_whatever_the_table_holds(tmp_path: Path) -> None:
    def journal_growth(client: Any, seq: int) -> int:
        journal = tmp_path / [n for n in journal_files(tmp_path) if n.startswith("journal")][0]
        size = journal.stat().st_size
        client.put_item(TableName="events", Item=event("probe", seq, "x" * 100))
        return journal.stat().st_size - size

    with server_run(tmp_path) as client:
        create_tables(client)
        first = journal_growth(client, 1)
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
        for seq in range(1, 1001):
            backend.put_item("events", event("filler", seq, "y" * 100))
        later = journal_growth(client, 2)

    assert later == first


def wait_until(condition: Any, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds:.0f} s"
        time.sleep(0.02)


def test_a_start_after_writes_compacts_in_the_background_and_one_without_keeps_the_files(
    tmp_path: Path
) -> None:
    with server_run(tmp_path) as client:
        create_tables(client)
        client.put_item(TableName="events", Item=event("s1", 1))
    assert journal_files(tmp_path) == ["journal-000001.jsonl"]

    with server_run(tmp_path, sync_seconds=0.02) as client:
        wait_until(lambda: "snapshot-000002.jsonl" in journal_files(tmp_path),
                   "the snapshot of the replayed writes")
        assert everything(client)["events"] == [event("s1", 1)]
    assert journal_files(tmp_path) == ["journal-000002.jsonl", "snapshot-000002.jsonl"]

    for _ in range(2):
        with server_run(tmp_path, sync_seconds=0.02) as client:
            time.sleep(0.1)
            assert everything(client)["events"] == [event("s1", 1)]
    # Nothing was written: the snapshot stays, the empty journals do not pile up.
    assert journal_files(tmp_path) == ["journal-000004.jsonl", "snapshot-000002.jsonl"]


def test_background_compaction_keeps_every_write(tmp_path: Path) -> None:
    with server_run(tmp_path, sync_seconds=0.02, compact_min_bytes=1) as client:
        create_tables(client)
        seq = 0
        # Write on while the keeper compacts at least twice.
        while "snapshot-000003.jsonl" not in journal_files(tmp_path):
            assert seq < 5000, "the journal was never compacted"
            seq += 1
            client.put_item(TableName="events", Item=event("s1", seq))
        before = everything(client)

    with server_run(tmp_path) as client:
        assert everything(client) == before
        assert len(before["events"]) == seq


def test_a_crash_while_writing_a_snapshot_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def power_cut(self: Journal, generation: int, lines: Any) -> None:
        (self.directory / f"snapshot-{generation:06d}.jsonl.tmp").write_text("partial")
        raise OSError(errno.EIO, "power cut")

    with storage_run(tmp_path) as (client, storage):
        create_tables(client)
        client.put_item(TableName="events", Item=event("s1", 1))
        with monkeypatch.context() as patch:
            patch.setattr(Journal, "write_snapshot", power_cut)
            with pytest.raises(OSError):
                storage.compact()
        # The new journal was started before the snapshot: later writes go there.
        client.put_item(TableName="events", Item=event("s1", 2))
        before = everything(client)
    assert journal_files(tmp_path) == ["journal-000001.jsonl", "journal-000002.jsonl",
                                       "snapshot-000002.jsonl.tmp"]

    with server_run(tmp_path, sync_seconds=0.02) as client:
        assert everything(client) == before
        wait_until(lambda: journal_files(tmp_path) == ["journal-000003.jsonl",
                                                       "snapshot-000003.jsonl"],
                   "the compaction after the crash")


def test_an_incomplete_last_line_is_ignored(tmp_path: Path) -> None:
    with server_run(tmp_path) as client:
        create_tables(client)
        client.put_item(TableName="events", Item=event("s1", 1))
        before = everything(client)
    journal = tmp_path / "journal-000001.jsonl"
    with open(journal, "ab") as torn:
        torn.write(b'{"op":"write_items","account":"1234')

    with server_run(tmp_path) as client:
        assert everything(client) == before


def test_a_damaged_line_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    with server_run(tmp_path) as client:
        create_tables(client)
        client.put_item(TableName="events", Item=event("s1", 1))
        client.put_item(TableName="events", Item=event("s1", 2))
    journal = tmp_path / "journal-000001.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[-2] = b"garbage\n"
    journal.write_bytes(b"".join(lines))

    with mock_aws(), pytest.raises(JournalError) as refused:
        DurableStorage.open(tmp_path)

    assert f"{journal}, line {len(lines) - 1}: it is not valid JSON" in str(refused.value)
    assert "move" in str(refused.value)


def test_a_snapshot_without_its_end_marker_is_refused(tmp_path: Path) -> None:
    with storage_run(tmp_path) as (client, storage):
        create_tables(client)
        storage.compact()
    snapshot = tmp_path / "snapshot-000002.jsonl"
    snapshot.write_bytes(b"".join(snapshot.read_bytes().splitlines(keepends=True)[:-1]))

    with mock_aws(), pytest.raises(JournalError, match="ends before its end marker"):
        DurableStorage.open(tmp_path)


def test_a_journal_of_another_format_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "journal-000001.jsonl").write_text(
        '{"format":"backchat-dynamodb","kind":"journal","version":99}\n'
    )

    with mock_aws(), pytest.raises(JournalError, match="format version 99"):
        DurableStorage.open(tmp_path)


def test_a_directory_in_use_is_refused_and_names_its_holder(tmp_path: Path) -> None:
    with server_run(tmp_path):
        assert lock_holder(tmp_path) == os.getpid()
        with pytest.raises(DataDirectoryInUse, match=f"pid {os.getpid()}"):
            Journal.open(tmp_path)

    assert lock_holder(tmp_path) is None


def test_a_write_the_journal_cannot_take_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Exited(Exception):
        pass

    def no_space(self: Journal, record: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def exit_now(code: int) -> None:
        raise Exited(code)

    with server_run(tmp_path) as client:
        create_tables(client)
        monkeypatch.setattr(Journal, "append", no_space)
        monkeypatch.setattr(os, "_exit", exit_now)
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]

        with pytest.raises(Exited):
            backend.put_item("events", event("s1", 1))

    assert "No space left on device; stopping" in capsys.readouterr().err


def test_a_snapshot_of_the_first_format_is_read_and_rewritten_in_the_current_one(
    tmp_path: Path
) -> None:
    with server_run(tmp_path) as client:
        create_tables(client)
        client.put_item(TableName="events", Item=event("s1", 1, "Привет 👋"))
        client.put_item(TableName="sessions", Item={"id": {"S": "a"}, "owner": {"S": "ann"}})
        before = everything(client)
    # Version 1 snapshots held one record per item, as the journal does.
    journal = tmp_path / "journal-000001.jsonl"
    records = journal.read_bytes().splitlines(keepends=True)[1:]
    (tmp_path / "snapshot-000001.jsonl").write_bytes(
        b'{"format":"backchat-dynamodb","kind":"snapshot","version":1}\n' + b"".join(records)
        + f'{{"end":{len(records)}}}\n'.encode())
    journal.write_bytes(b'{"format":"backchat-dynamodb","kind":"journal","version":1}\n')

    with server_run(tmp_path, sync_seconds=0.02) as client:
        assert everything(client) == before
        wait_until(lambda: "snapshot-000002.jsonl" in journal_files(tmp_path),
                   "the snapshot in the current format")
    header = (tmp_path / "snapshot-000002.jsonl").read_bytes().splitlines()[0]
    assert b'"version":2' in header
    with server_run(tmp_path) as client:
        assert everything(client) == before


def test_a_start_builds_only_the_partitions_it_is_asked_for(tmp_path: Path) -> None:
    with storage_run(tmp_path) as (client, storage):
        create_tables(client)
        for session in range(30):
            client.batch_write_item(RequestItems={"events": [
                {"PutRequest": {"Item": event(f"s{session}", seq)}} for seq in (1, 2, 3)]})
            client.put_item(TableName="sessions", Item={
                "id": {"S": f"s{session}"}, "owner": {"S": "ann" if session < 5 else "bob"}})
        storage.compact()

    with server_run(tmp_path) as client:
        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
        events, sessions = backend.get_table("events"), backend.get_table("sessions")
        assert isinstance(events.items, PartitionMap) and len(events.items.stored()) == 30
        assert len(sessions.items.stored()) == 30

        page = client.query(TableName="events", ConsistentRead=True,
                            KeyConditionExpression="sessionId = :s",
                            ExpressionAttributeValues={":s": {"S": "s7"}})
        assert page["Items"] == [event("s7", seq) for seq in (1, 2, 3)]
        assert len(events.items.stored()) == 29
        described = client.describe_table(TableName="events")["Table"]
        assert described["ItemCount"] == 90 and len(events.items.stored()) == 29
        assert client.get_item(TableName="events", Key={"sessionId": {"S": "s8"},
                                                        "seq": {"N": "2"}})["Item"] == event("s8", 2)
        assert len(events.items.stored()) == 28
        # An index is sorted from the keys stored beside each partition: only the items a
        # page returns are built.
        owned = client.query(TableName="sessions", IndexName="byOwner",
                             KeyConditionExpression="#o = :ann", ExpressionAttributeNames={"#o": "owner"},
                             ExpressionAttributeValues={":ann": {"S": "ann"}})
        assert sorted(item["id"]["S"] for item in owned["Items"]) == [f"s{n}" for n in range(5)]
        assert len(sessions.items.stored()) == 25


def test_restored_items_are_the_items_moto_stores(tmp_path: Path) -> None:
    every_type = {
        "id": {"S": "all"}, "owner": {"S": "ann"}, "n": {"N": "-12.50"}, "b": {"B": b"\x00\xff"},
        "yes": {"BOOL": True}, "none": {"NULL": True}, "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"\x01", b"\x02"]},
        "list": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"B": b"\x03"}}}]},
        "map": {"M": {"k": {"L": []}, "empty": {"M": {}}, "t": {"S": "é👋"}}},
    }
    with server_run(tmp_path) as client:
        create_tables(client)
        client.put_item(TableName="sessions", Item=every_type)
        client.put_item(TableName="events", Item=event("s1", 1))
        stored = {name: structure(item) for name, item in stored_items().items()}

    with server_run(tmp_path):
        assert {name: structure(item) for name, item in stored_items().items()} == stored


def stored_items() -> dict[str, Any]:
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
    return {f"{table.name} {index}": item for table in backend.tables.values()
            for index, item in enumerate(table.all_items())}


def structure(value: Any) -> Any:
    """The objects behind a moto Item, as comparable nested tuples (classes included)."""
    if isinstance(value, (Item, DynamoType)):
        return (type(value).__name__, structure(vars(value)))
    if isinstance(value, dict):
        return (type(value).__name__, sorted((key, structure(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("list", [structure(item) for item in value])
    return (type(value).__name__, value)


def test_binary_keys_survive_a_restart(tmp_path: Path) -> None:
    def item(hash_key: bytes, range_key: bytes) -> dict[str, Any]:
        return {"h": {"B": hash_key}, "r": {"B": range_key}, "v": {"B": hash_key + range_key}}

    with storage_run(tmp_path) as (client, storage):
        create_composite_table(client, "blobs", ("h", "B"), ("r", "B"))
        for hash_key, range_key in [(b"\x00", b"\x01"), (b"\x00", b"\xff"), (b"\xfe", b"\x02")]:
            client.put_item(TableName="blobs", Item=item(hash_key, range_key))
        storage.compact()
        client.delete_item(TableName="blobs", Key={"h": {"B": b"\x00"}, "r": {"B": b"\xff"}})
        before = everything(client)

    with server_run(tmp_path) as client:
        assert everything(client) == before
        page = client.query(TableName="blobs", KeyConditionExpression="h = :h",
                            ExpressionAttributeValues={":h": {"B": b"\x00"}})
        assert page["Items"] == [item(b"\x00", b"\x01")]
        client.delete_item(TableName="blobs", Key={"h": {"B": b"\xfe"}, "r": {"B": b"\x02"}})
        assert client.scan(TableName="blobs")["Count"] == 1


def test_queries_after_a_restart_answer_as_moto_does(tmp_path: Path) -> None:
    rng = random.Random(11)
    with storage_run(tmp_path) as (client, storage):
        queried.create_tables(client)
        for _ in range(200):
            queried.random_write(client, rng)
        storage.compact()  # most partitions are restored from the snapshot, as stored text
        for _ in range(60):
            queried.random_write(client, rng)  # the rest from the journal

    with server_run(tmp_path) as client:
        for _ in range(80):
            if rng.random() < 0.3:
                queried.random_write(client, rng)
            queried.every_page(client, **queried.random_query(rng))


def test_expiry_is_journaled_and_reads_only_the_stored_partitions_due(tmp_path: Path) -> None:
    with storage_run(tmp_path) as (client, storage):
        create_tables(client)
        for number in range(20):  # sessions s0..s19; the even ones' events have expired
            expires = time.time() - 10 if number % 2 == 0 else time.time() + 3600
            client.batch_write_item(RequestItems={"events": [
                {"PutRequest": {"Item": {**event(f"s{number}", seq),
                                         "expiresAt": {"N": str(int(expires))}}}}
                for seq in (1, 2)]})
        storage.compact()

    with server_run(tmp_path):
        events = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table("events")
        assert len(events.items.stored()) == 20

        assert expirer().expire_due() == 20

        # Only the partitions with something due were read.
        assert {key.value for key, _ in events.items.stored()} == {
            f"s{number}" for number in range(1, 20, 2)}

    with server_run(tmp_path) as client:
        left = {item["sessionId"]["S"] for item in everything(client)["events"]}
        assert left == {f"s{number}" for number in range(1, 20, 2)}


def test_ttl_enabled_after_the_data_was_stored_expires_it_in_bounded_batches(
    tmp_path: Path
) -> None:
    with storage_run(tmp_path) as (client, storage):
        create_composite_table(client, "later")
        for number in range(20):
            expires = time.time() - 10 if number % 2 == 0 else time.time() + 3600
            client.batch_write_item(RequestItems={"later": [
                {"PutRequest": {"Item": {**event(f"s{number}", seq),
                                         "expiresAt": {"N": str(int(expires))}}}}
                for seq in (1, 2, 3)]})
        storage.compact()  # stored without a TTL attribute to note their times by

    batches: list[int] = []

    def expire(backend: Any, table: Any, keys: list[Any]) -> None:
        batches.append(len(keys))
        expire_items(backend, table, keys)

    with server_run(tmp_path) as client:
        client.update_time_to_live(TableName="later", TimeToLiveSpecification={
            "Enabled": True, "AttributeName": "expiresAt"})

        assert expirer(expire, batch=10).expire_due() == 30

        # Each hold of the lock reads or deletes about `batch` items, never all 60 at once.
        assert len(batches) >= 3 and max(batches) <= 10
        left = {item["sessionId"]["S"] for item in everything(client)["later"]}
        assert left == {f"s{number}" for number in range(1, 20, 2)}


def test_an_index_added_after_a_restart_answers_as_moto_does(tmp_path: Path) -> None:
    rng = random.Random(5)
    with storage_run(tmp_path) as (client, storage):
        queried.create_tables(client)
        for _ in range(250):
            queried.random_write(client, rng)
        storage.compact()

    with server_run(tmp_path) as client:
        # "events" was stored without key attributes (no index), "conversations" with its
        # index's: a new index needs the items of the first, and an attribute of the second
        # that its stored keys do not hold.
        for table, attribute, declared in [
            ("events", "eventType", [("sessionId", "S"), ("seq", "N"), ("eventType", "S")]),
            ("conversations", "title", [("conversationId", "S"), ("item", "S"),
                                        ("listOwner", "S"), ("updatedAt", "S"), ("title", "S")]),
        ]:
            client.update_table(
                TableName=table,
                AttributeDefinitions=[queried.key(name, kind) for name, kind in declared],
                GlobalSecondaryIndexUpdates=[{"Create": queried.gsi(
                    "added", attribute, None, {"ProjectionType": "ALL"})}])
            for value in ("delta", "done", "a", "Привет 👋", "missing"):
                pages = queried.every_page(
                    client, TableName=table, IndexName="added", Limit=4,
                    KeyConditionExpression="#a = :v", ExpressionAttributeNames={"#a": attribute},
                    ExpressionAttributeValues={":v": {"S": value}})
                assert isinstance(pages[0], dict)
