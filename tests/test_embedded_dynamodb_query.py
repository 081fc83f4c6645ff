"""The embedded DynamoDB's Query answers exactly as moto's own, reading only what it answers.

Every request here is sent twice on the same data: through the embedded DynamoDB's Query
(scripts/dynamodb_query.py) and through moto's own `Table.query`; the full responses must be
equal (items, order, Count, ScannedCount, LastEvaluatedKey), or both must fail alike. The data
is shaped like backchat's tables and changed by every kind of write between the reads.
"""
from __future__ import annotations

import random
from typing import Any, Callable

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.dynamodb.models.table import Table

from scripts import dynamodb_query

REGION = "us-east-1"
MOTO_QUERY = dynamodb_query.moto_query
OWNERS = ["ann", "bob", "cy"]
TIMES = [f"2026-01-0{day}T00:00:0{second}.000Z" for day in (1, 2, 3) for second in (0, 5)]
SHARDS = ["0", "1", "2"]
NUMBERS = ["-3", "0", "1", "1.5", "2", "7", "10", "12.25", "100"]
SESSIONS = [f"s{n}" for n in range(6)]
CONVERSATIONS = ["c1", "c2", "c3"]
CONVERSATION_ITEMS = (["conv", "input", "answer"] + [f"turn#{n:04d}" for n in range(1, 12)]
                      + [f"answer#{n:04d}" for n in range(1, 4)])


def key(name: str, kind: str) -> dict[str, str]:
    return {"AttributeName": name, "AttributeType": kind}


def gsi(name: str, hash_key: str, range_key: str | None, projection: dict[str, Any]
        ) -> dict[str, Any]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return {"IndexName": name, "KeySchema": schema, "Projection": projection}


KEYS_ONLY = {"ProjectionType": "KEYS_ONLY"}
TABLES = [
    {  # sessions: hash-only, an owner index and two sparse ones (one sharded, numeric range)
        "TableName": "sessions",
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [key("id", "S"), key("ownerId", "S"), key("createdAt", "S"),
                                 key("runOwner", "S"), key("leaseShard", "S"),
                                 key("reapAt", "N")],
        "GlobalSecondaryIndexes": [
            gsi("byOwner", "ownerId", "createdAt", KEYS_ONLY),
            gsi("runningByOwner", "runOwner", "createdAt", KEYS_ONLY),
            gsi("leases", "leaseShard", "reapAt", KEYS_ONLY),
        ],
    },
    {  # events: a session's events by seq
        "TableName": "events",
        "KeySchema": [{"AttributeName": "sessionId", "KeyType": "HASH"},
                      {"AttributeName": "seq", "KeyType": "RANGE"}],
        "AttributeDefinitions": [key("sessionId", "S"), key("seq", "N")],
    },
    {  # conversations: a conversation's items; a sparse INCLUDE index of conversation rows
        "TableName": "conversations",
        "KeySchema": [{"AttributeName": "conversationId", "KeyType": "HASH"},
                      {"AttributeName": "item", "KeyType": "RANGE"}],
        "AttributeDefinitions": [key("conversationId", "S"), key("item", "S"),
                                 key("listOwner", "S"), key("updatedAt", "S")],
        "GlobalSecondaryIndexes": [
            gsi("byActivity", "listOwner", "updatedAt",
                {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["title", "turnCount"]}),
        ],
    },
    {  # other shapes: a numeric hash key, an index with a hash key only (ALL)
        "TableName": "misc",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [key("pk", "N"), key("sk", "S"), key("kind", "S")],
        "GlobalSecondaryIndexes": [gsi("byKind", "kind", None, {"ProjectionType": "ALL"})],
    },
]


@pytest.fixture
def client(aws: None) -> Any:
    """A DynamoDB client on in-process moto (tests/conftest.py), with the tables above."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    create_tables(dynamodb)
    return dynamodb


def create_tables(client: Any) -> None:
    for table in TABLES:
        client.create_table(BillingMode="PAY_PER_REQUEST", **table)


def answer(call: Callable[[], dict[str, Any]]) -> Any:
    """Return the response without its metadata, or the error it raised."""
    try:
        response = call()
    except ClientError as error:
        return ("refused", error.response["Error"], error.response["ResponseMetadata"]["HTTPStatusCode"])
    except Exception as error:  # moto fails some requests with a Python error (a 500 over HTTP)
        return ("failed", type(error).__name__, str(error))
    response.pop("ResponseMetadata", None)
    return response


def same_answer(client: Any, own: bool | None = True, **request: Any) -> Any:
    """Query through the embedded DynamoDB and through moto's own Query; both must agree.

    `own`: whether the embedded Query answers by itself (False: it hands the request to moto's;
    None: either, e.g. moto refuses the request before any Query runs).
    """
    handed_over: list[bool] = []

    def moto_query(*args: Any, **kwargs: Any) -> Any:
        handed_over.append(True)
        return MOTO_QUERY(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamodb_query, "moto_query", moto_query)
        ours = answer(lambda: client.query(**request))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Table, "query", MOTO_QUERY)
        motos = answer(lambda: client.query(**request))
    assert ours == motos, f"request {request}"
    assert own is None or bool(handed_over) != own, f"request {request}"
    return ours


def every_page(client: Any, own: bool = True, **request: Any) -> list[Any]:
    """Follow LastEvaluatedKey through every page, each page compared."""
    pages = []
    for _ in range(60):
        page = same_answer(client, own, **request)
        pages.append(page)
        if not isinstance(page, dict) or "LastEvaluatedKey" not in page:
            return pages
        request = {**request, "ExclusiveStartKey": page["LastEvaluatedKey"]}
    raise AssertionError(f"more than 60 pages for {request}")


# -- random data and writes ---------------------------------------------------------------------

def session_item(rng: random.Random) -> dict[str, Any]:
    item = {"id": {"S": rng.choice(SESSIONS + ["s6", "s7", "s8"])},
            "ownerId": {"S": rng.choice(OWNERS)}, "createdAt": {"S": rng.choice(TIMES)},
            "status": {"S": rng.choice(["running", "done"])},
            "body": {"S": "x" * rng.randrange(0, 400)}}
    if rng.random() < 0.4:
        item["runOwner"] = {"S": rng.choice(OWNERS)}
    if rng.random() < 0.4:
        item["leaseShard"] = {"S": rng.choice(SHARDS)}
        item["reapAt"] = {"N": rng.choice(NUMBERS)}
    return item


def event_item(rng: random.Random) -> dict[str, Any]:
    item = {"sessionId": {"S": rng.choice(SESSIONS)}, "seq": {"N": str(rng.randrange(1, 40))},
            "eventType": {"S": rng.choice(["delta", "thinking", "done"])},
            "content": {"S": "é" * rng.randrange(0, 300)}}
    if rng.random() < 0.2:
        item["usage"] = {"M": {"inputTokens": {"N": "3"}, "list": {"L": [{"S": "a"}]}}}
    return item


def conversation_item(rng: random.Random) -> dict[str, Any]:
    item = {"conversationId": {"S": rng.choice(CONVERSATIONS)},
            "item": {"S": rng.choice(CONVERSATION_ITEMS)},
            "title": {"S": rng.choice(["a", "b", "Привет 👋"])},
            "turnCount": {"N": str(rng.randrange(0, 9))}, "other": {"S": "o"}}
    if rng.random() < 0.5:
        item["listOwner"] = {"S": rng.choice(OWNERS)}
        item["updatedAt"] = {"S": rng.choice(TIMES)}
    return item


def misc_item(rng: random.Random) -> dict[str, Any]:
    item = {"pk": {"N": rng.choice(NUMBERS)}, "sk": {"S": rng.choice("abcdef") * rng.randrange(1, 3)}}
    if rng.random() < 0.6:
        item["kind"] = {"S": rng.choice(["k1", "k2"])}
    return item


ITEM_MAKERS = {"sessions": session_item, "events": event_item,
               "conversations": conversation_item, "misc": misc_item}
KEY_NAMES = {"sessions": ["id"], "events": ["sessionId", "seq"],
             "conversations": ["conversationId", "item"], "misc": ["pk", "sk"]}
# For each table, updates that move an item in or out of an index, or change nothing indexed
# (attribute names go through placeholders: several are DynamoDB reserved words).
UPDATES = {
    "sessions": [("SET #a = :v", ["ownerId"], {":v": {"S": "bob"}}),
                 ("SET #a = :v", ["createdAt"], {":v": {"S": TIMES[-1]}}),
                 ("REMOVE #a", ["runOwner"], {}), ("SET #a = :v", ["runOwner"], {":v": {"S": "cy"}}),
                 ("SET #a = :s, #b = :n", ["leaseShard", "reapAt"],
                  {":s": {"S": "1"}, ":n": {"N": "5"}}),
                 ("REMOVE #a, #b", ["leaseShard", "reapAt"], {}),
                 ("SET #a = :v", ["status"], {":v": {"S": "done"}})],
    "events": [("SET #a = :v", ["content"], {":v": {"S": "changed"}}),
               ("REMOVE #a", ["usage"], {})],
    "conversations": [("SET #a = :o, #b = :t", ["listOwner", "updatedAt"],
                       {":o": {"S": "ann"}, ":t": {"S": TIMES[0]}}),
                      ("REMOVE #a", ["listOwner"], {}),
                      ("SET #a = :v", ["title"], {":v": {"S": "renamed"}})],
    "misc": [("SET #a = :v", ["kind"], {":v": {"S": "k2"}}), ("REMOVE #a", ["kind"], {})],
}


def key_of(table: str, item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in KEY_NAMES[table]}


def random_write(client: Any, rng: random.Random) -> None:
    table = rng.choice(list(ITEM_MAKERS))
    make = ITEM_MAKERS[table]
    kind = rng.random()
    if kind < 0.45:
        client.put_item(TableName=table, Item=make(rng))
    elif kind < 0.65:
        expression, names, values = rng.choice(UPDATES[table])
        request = {"TableName": table, "Key": key_of(table, make(rng)),
                   "UpdateExpression": expression,
                   "ExpressionAttributeNames": dict(zip(["#a", "#b"], names))}
        if values:
            request["ExpressionAttributeValues"] = values
        client.update_item(**request)
    elif kind < 0.8:
        client.delete_item(TableName=table, Key=key_of(table, make(rng)))
    elif kind < 0.9:
        writes = {}
        for _ in range(rng.randrange(1, 5)):
            item = make(rng)
            writes[repr(key_of(table, item))] = item
        operations = [{"Put": {"TableName": table, "Item": item}} for item in writes.values()]
        if rng.random() < 0.4:  # a condition that fails: every write is rolled back
            operations[-1]["Put"]["ConditionExpression"] = "attribute_not_exists(nothing) AND " \
                                                           "attribute_exists(nothing)"
        try:
            client.transact_write_items(TransactItems=operations)
        except ClientError as error:
            assert error.response["Error"]["Code"] == "TransactionCanceledException"
    else:
        writes = {}
        for _ in range(rng.randrange(1, 6)):
            item = make(rng)
            writes[repr(key_of(table, item))] = item
        requests = [{"PutRequest": {"Item": item}} for item in writes.values()]
        client.batch_write_item(RequestItems={table: requests})


# -- random queries ------------------------------------------------------------------------------

def range_condition(rng: random.Random, name: str, values: list[dict[str, Any]]
                    ) -> tuple[str, dict[str, Any]]:
    operator = rng.choice(["=", "<", "<=", ">", ">=", "BETWEEN", "begins_with", None])
    first, second = rng.choice(values), rng.choice(values)
    if operator is None:
        return "", {}
    if operator == "BETWEEN":
        return " AND #r BETWEEN :r1 AND :r2", {":r1": first, ":r2": second}
    if operator == "begins_with":
        if "S" not in first or not first["S"]:
            return "", {}
        prefix = {"S": first["S"][:rng.randrange(1, len(first["S"]) + 1)]}
        return " AND begins_with(#r, :r1)", {":r1": prefix}
    return f" AND #r {operator} :r1", {":r1": first}


QUERY_SHAPES = [
    # table, index, hash attribute, hash values, range attribute, range values
    ("sessions", "byOwner", "ownerId", OWNERS + ["nobody"], "createdAt", TIMES),
    ("sessions", "runningByOwner", "runOwner", OWNERS, "createdAt", TIMES),
    ("sessions", "leases", "leaseShard", SHARDS, "reapAt", NUMBERS + ["5", "-10"]),
    ("sessions", None, "id", SESSIONS + ["s6"], None, []),
    ("events", None, "sessionId", SESSIONS, "seq", [str(n) for n in range(0, 42)]),
    ("conversations", None, "conversationId", CONVERSATIONS, "item",
     CONVERSATION_ITEMS + ["turn#", "a", "z"]),
    ("conversations", "byActivity", "listOwner", OWNERS, "updatedAt", TIMES),
    ("misc", None, "pk", NUMBERS, "sk", ["a", "bb", "c", "ff", "zz"]),
    ("misc", "byKind", "kind", ["k1", "k2"], None, []),
]
NUMERIC = {"reapAt", "seq", "pk"}


def typed(name: str, value: str) -> dict[str, str]:
    return {"N": value} if name in NUMERIC else {"S": value}


def random_query(rng: random.Random) -> dict[str, Any]:
    table, index, hash_name, hash_values, range_name, range_values = rng.choice(QUERY_SHAPES)
    condition = "#h = :h"
    values = {":h": typed(hash_name, rng.choice(hash_values))}
    names = {"#h": hash_name}
    if range_name:
        extra, range_values_used = range_condition(
            rng, range_name, [typed(range_name, value) for value in range_values])
        if extra:
            condition += extra
            values.update(range_values_used)
            names["#r"] = range_name
    request: dict[str, Any] = {"TableName": table, "KeyConditionExpression": condition,
                               "ExpressionAttributeNames": names,
                               "ExpressionAttributeValues": values,
                               "ScanIndexForward": rng.random() < 0.5}
    if index:
        request["IndexName"] = index
    elif rng.random() < 0.5:
        request["ConsistentRead"] = True
    if rng.random() < 0.7:
        request["Limit"] = rng.choice([1, 2, 3, 5, 8, 50])
    shape = rng.random()
    if shape < 0.15:
        request["Select"] = "COUNT"
    elif shape < 0.25 and table == "events":
        request["FilterExpression"] = "eventType = :delta"
        request["ExpressionAttributeValues"][":delta"] = {"S": "delta"}
    elif shape < 0.35 and not index:
        request["ProjectionExpression"] = "#h"
    return request


@pytest.mark.parametrize("seed", range(4))
def test_random_writes_and_queries_answer_as_moto_does(client: Any, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        random_write(client, rng)
    answered = 0
    for _ in range(80):
        for _ in range(rng.randrange(0, 4)):
            random_write(client, rng)
        pages = every_page(client, **random_query(rng))
        answered += sum(page["Count"] for page in pages if isinstance(page, dict))
    assert answered > 0  # the queries found items, not only empty pages


def test_a_start_key_from_another_partition_or_value_answers_as_moto_does(client: Any) -> None:
    rng = random.Random(7)
    for _ in range(300):
        random_write(client, rng)
    for _ in range(100):
        request = random_query(rng)
        table, index = request["TableName"], request.get("IndexName")
        found = client.scan(TableName=table, **({"IndexName": index} if index else {}))["Items"]
        if not found:
            continue
        start = rng.choice(found)
        mistyped = rng.random() < 0.3
        if mistyped:  # a start key whose values are of other types than declared
            start = {name: {"B": b"x"} if "S" in value else {"S": "1"}
                     for name, value in start.items()}
        request["ExclusiveStartKey"] = start
        same_answer(client, own=not mistyped, **request)


@pytest.mark.parametrize("request_change", [
    {"Limit": 0},
    {"IndexName": "byOwner", "ConsistentRead": True},
    {"IndexName": "noSuchIndex"},
])
def test_requests_moto_refuses_are_refused_alike(client: Any, request_change: dict[str, Any]
                                                  ) -> None:
    client.put_item(TableName="sessions", Item={"id": {"S": "s1"}, "ownerId": {"S": "ann"},
                                                "createdAt": {"S": TIMES[0]}})
    request = {"TableName": "sessions", "IndexName": "byOwner",
               "KeyConditionExpression": "ownerId = :o",
               "ExpressionAttributeValues": {":o": {"S": "ann"}}, **request_change}
    # Without the SDK's own checks, so that moto sees what a hand-made request would send.
    unchecked = boto3.client("dynamodb", region_name=REGION,
                             config=Config(parameter_validation=False))
    same_answer(unchecked, own=None, **request)


def test_a_page_ended_by_size_answers_as_moto_does(client: Any) -> None:
    # Pages end at 1 MB: three 250 kB items and then a larger one, after the condition's run.
    sizes = {1: 250_000, 2: 250_000, 3: 250_000, 4: 10, 5: 380_000, 6: 380_000}
    for seq, size in sizes.items():
        client.put_item(TableName="events", Item={"sessionId": {"S": "big"},
                                                  "seq": {"N": str(seq)},
                                                  "content": {"S": "x" * size}})
    for condition, forward in [("seq <= :n", True), ("seq >= :m", False), ("seq > :zero", True)]:
        pages = every_page(client, TableName="events", ScanIndexForward=forward,
                           KeyConditionExpression=f"sessionId = :s AND {condition}",
                           ExpressionAttributeValues={":s": {"S": "big"}, ":n": {"N": "3"},
                                                      ":m": {"N": "4"}, ":zero": {"N": "0"}}
                           if condition.endswith(":n") else
                           {":s": {"S": "big"}, ":m": {"N": "4"}} if ":m" in condition else
                           {":s": {"S": "big"}, ":zero": {"N": "0"}})
        assert any("LastEvaluatedKey" in page for page in pages)


def test_a_full_page_at_the_end_of_the_condition_has_a_start_key_as_moto_gives(client: Any
                                                                                ) -> None:
    for seq in range(1, 8):
        client.put_item(TableName="events", Item={"sessionId": {"S": "s"}, "seq": {"N": str(seq)}})
    page = same_answer(client, TableName="events", Limit=3,
                       KeyConditionExpression="sessionId = :s AND seq <= :n",
                       ExpressionAttributeValues={":s": {"S": "s"}, ":n": {"N": "3"}})
    assert page["LastEvaluatedKey"] == {"sessionId": {"S": "s"}, "seq": {"N": "3"}}


def test_an_index_holding_keys_of_undeclared_types_answers_as_moto_does(client: Any) -> None:
    for number, created in enumerate([{"S": TIMES[1]}, {"N": "5"}, {"S": TIMES[0]}]):
        client.put_item(TableName="sessions", Item={"id": {"S": f"s{number}"},
                                                    "ownerId": {"S": "ann"}, "createdAt": created})
    same_answer(client, own=False, TableName="sessions", IndexName="byOwner",
                KeyConditionExpression="ownerId = :o",
                ExpressionAttributeValues={":o": {"S": "ann"}})


def test_an_index_added_or_removed_on_a_table_with_items_answers_as_moto_does(client: Any
                                                                              ) -> None:
    rng = random.Random(3)
    for _ in range(200):
        random_write(client, rng)
    by_type = {"TableName": "events", "IndexName": "byType",
               "KeyConditionExpression": "eventType = :t",
               "ExpressionAttributeValues": {":t": {"S": "delta"}}}
    client.update_table(
        TableName="events",
        AttributeDefinitions=[key("sessionId", "S"), key("seq", "N"), key("eventType", "S")],
        GlobalSecondaryIndexUpdates=[{"Create": gsi("byType", "eventType", None,
                                                    {"ProjectionType": "ALL"})}])
    assert every_page(client, **by_type, Limit=4)[0]["Count"] > 0
    for _ in range(50):
        random_write(client, rng)
    every_page(client, **by_type, Limit=4)
    client.update_table(TableName="events",
                        GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "byType"}}])
    same_answer(client, own=None, **by_type)  # moto refuses it: no such index
    client.update_table(
        TableName="events",
        AttributeDefinitions=[key("sessionId", "S"), key("seq", "N"), key("eventType", "S"),
                              key("content", "S")],
        GlobalSecondaryIndexUpdates=[{"Create": gsi("byType", "eventType", "content",
                                                    KEYS_ONLY)}])
    every_page(client, **by_type, Limit=3, ScanIndexForward=False)


def test_a_table_deleted_and_created_again_answers_from_its_new_items(client: Any) -> None:
    owned = {"TableName": "sessions", "IndexName": "byOwner",
             "KeyConditionExpression": "ownerId = :o",
             "ExpressionAttributeValues": {":o": {"S": "ann"}}}
    client.put_item(TableName="sessions", Item={"id": {"S": "old"}, "ownerId": {"S": "ann"},
                                                "createdAt": {"S": TIMES[0]}})
    assert same_answer(client, **owned)["Count"] == 1
    client.delete_table(TableName="sessions")
    client.create_table(BillingMode="PAY_PER_REQUEST", **TABLES[0])
    client.put_item(TableName="sessions", Item={"id": {"S": "new"}, "ownerId": {"S": "ann"},
                                                "createdAt": {"S": TIMES[1]}})

    assert [item["id"] for item in same_answer(client, **owned)["Items"]] == [{"S": "new"}]


def test_a_page_reads_only_the_items_it_returns(client: Any, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    for first in range(0, 400, 25):
        numbers = range(first, first + 25)
        client.batch_write_item(RequestItems={
            "sessions": [{"PutRequest": {"Item": {
                "id": {"S": f"s{number:04d}"}, "ownerId": {"S": "ann"},
                "createdAt": {"S": f"2026-01-01T00:{number // 60:02d}:{number % 60:02d}Z"}}}}
                for number in numbers],
            "events": [{"PutRequest": {"Item": {"sessionId": {"S": "long"},
                                                "seq": {"N": str(number + 1)}}}}
                       for number in numbers]})
    read: list[Any] = []
    item_at = dynamodb_query.item_at
    monkeypatch.setattr(dynamodb_query, "item_at", lambda *key: read.append(key) or item_at(*key))

    newest = client.query(TableName="sessions", IndexName="byOwner", Limit=20,
                          ScanIndexForward=False, KeyConditionExpression="ownerId = :o",
                          ExpressionAttributeValues={":o": {"S": "ann"}})
    after = client.query(TableName="events", Limit=50, ConsistentRead=True,
                         KeyConditionExpression="sessionId = :s AND seq > :after",
                         ExpressionAttributeValues={":s": {"S": "long"}, ":after": {"N": "300"}})

    assert newest["Items"][0]["id"] == {"S": "s0399"} and newest["Count"] == 20
    assert [item["seq"]["N"] for item in after["Items"]] == [str(n) for n in range(301, 351)]
    assert len(read) == (20 + 1) + (50 + 1)  # each page and the item after it

