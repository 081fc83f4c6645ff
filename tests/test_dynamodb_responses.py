"""The embedded DynamoDB's plain JSON answers are the documents moto's serializer writes.

Every answer of the requests below is written both ways (moto's model-driven serializer and
scripts/dynamodb_responses.py) and compared: same status, same JSON. The requests are the
app's own (a whole conversation through the API) and boto3 requests for what the app does not
use itself (binary and set attributes, consumed capacity, old and new images, transactions of
reads, batches).
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import boto3
import botocore.session
import pytest
from moto.core.responses import ActionResult
from moto.dynamodb.responses import DynamoResult

from scripts import dynamodb_responses
from tests.test_app import FAST, post, start


def _canonical(body: str) -> str:
    """The document with its keys sorted: 2 and 2.0, or 1 and true, still differ."""
    return json.dumps(json.loads(body), sort_keys=True)


@pytest.fixture
def compared(aws: None, monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Write every DynamoDB answer both ways and assert they agree; count them by operation."""
    counted: Counter = Counter()

    def both(self: DynamoResult, context: Any) -> Any:
        status, headers, body = ActionResult.execute_result(self, context)
        operation = context.operation_model.name
        plain = dynamodb_responses.plain_body(context.operation_model, self.result)
        if plain is not None:
            assert status == 200
            assert headers["Content-Type"] == dynamodb_responses.CONTENT_TYPE
            assert _canonical(plain) == _canonical(body), operation
            counted[operation] += 1
        return status, headers, body

    monkeypatch.setattr(DynamoResult, "execute_result", both)
    return counted


def test_a_conversation_through_the_api_gets_the_same_answers(compared: Counter, client) -> None:
    first = start(client, "what is 17*23? \u00e9\U0001f600\\n\x01" + FAST)
    conversation = client.http.get(f"/api/chat/session/{first}").json_body["conversationId"]
    second = start(client, "and again" + FAST, conversationId=conversation)
    for session in (first, second):
        page = client.http.get(f"/api/chat/session/{session}/events?after=0&limit=3")
        assert page.status_code == 200
        assert client.http.get(f"/api/chat/session/{session}/events?after=2").status_code == 200
    assert client.http.get("/api/chat/sessions?limit=1").status_code == 200
    listed = client.http.get("/api/chat/conversations?limit=1").json_body
    assert listed["conversations"][0]["id"] == conversation
    assert client.http.get(f"/api/chat/conversations/{conversation}").status_code == 200
    renamed = client.http.patch(f"/api/chat/conversations/{conversation}",
                                headers={"Content-Type": "application/json"},
                                body=json.dumps({"title": "Renamed \u2603"}))
    assert renamed.status_code == 200
    assert post(client, f"/api/chat/session/{first}/cancel", {}).status_code in (200, 202)
    assert client.http.delete(f"/api/chat/conversations/{conversation}").status_code in (200, 202, 204)
    assert client.http.get(f"/api/chat/session/{second}").status_code == 404
    assert {"GetItem", "Query", "UpdateItem", "BatchGetItem"} <= set(compared), compared


def test_items_of_every_attribute_type_get_the_same_answers(compared: Counter) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName="kinds", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}])
    every_type = {
        "s": {"S": "caf\u00e9 \U0001f600 \"quoted\" \\ \n"}, "n": {"N": "-12.50"},
        "b": {"B": b"\x00\xffbinary"}, "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": [b"\x01", b"\x02"]}, "bool": {"BOOL": False}, "null": {"NULL": True},
        "l": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"B": b"\x03"}}}]},
        "m": {"M": {"empty": {"S": ""}, "list": {"L": []}}},
    }
    for sk in range(3):
        client.put_item(TableName="kinds", ReturnConsumedCapacity="TOTAL",
                        Item={"pk": {"S": "p"}, "sk": {"N": str(sk)}, **every_type})
    key = {"pk": {"S": "p"}, "sk": {"N": "0"}}
    client.get_item(TableName="kinds", Key=key, ReturnConsumedCapacity="TOTAL")
    client.get_item(TableName="kinds", Key={"pk": {"S": "none"}, "sk": {"N": "0"}})
    client.get_item(TableName="kinds", Key=key, ProjectionExpression="b, l[2], m.empty")
    client.update_item(TableName="kinds", Key=key, UpdateExpression="SET n = :n",
                       ExpressionAttributeValues={":n": {"N": "7"}}, ReturnValues="ALL_NEW")
    client.update_item(TableName="kinds", Key=key, UpdateExpression="ADD ns :n",
                       ExpressionAttributeValues={":n": {"NS": ["9"]}},
                       ReturnValues="UPDATED_OLD")
    client.put_item(TableName="kinds", Item={"pk": {"S": "p"}, "sk": {"N": "0"}},
                    ReturnValues="ALL_OLD")
    client.query(TableName="kinds", KeyConditionExpression="pk = :p", Limit=2,
                 ExpressionAttributeValues={":p": {"S": "p"}}, ReturnConsumedCapacity="TOTAL")
    client.query(TableName="kinds", KeyConditionExpression="pk = :p", Select="COUNT",
                 ExpressionAttributeValues={":p": {"S": "p"}})
    client.query(TableName="kinds", KeyConditionExpression="pk = :p",
                 ExpressionAttributeValues={":p": {"S": "nobody"}})
    client.scan(TableName="kinds", Limit=1)
    client.batch_get_item(RequestItems={"kinds": {"Keys": [key, {"pk": {"S": "p"},
                                                                  "sk": {"N": "1"}}]}},
                          ReturnConsumedCapacity="TOTAL")
    client.batch_write_item(RequestItems={"kinds": [
        {"PutRequest": {"Item": {"pk": {"S": "q"}, "sk": {"N": "1"}, "b": {"B": b"\x04"}}}},
        {"DeleteRequest": {"Key": {"pk": {"S": "p"}, "sk": {"N": "2"}}}}]})
    client.transact_get_items(TransactItems=[{"Get": {"TableName": "kinds", "Key": key}}])
    client.transact_write_items(TransactItems=[{"Update": {
        "TableName": "kinds", "Key": key, "UpdateExpression": "SET s = :s",
        "ExpressionAttributeValues": {":s": {"S": "t"}}}}], ReturnConsumedCapacity="TOTAL")
    client.delete_item(TableName="kinds", Key=key, ReturnValues="ALL_OLD")
    assert set(compared) == dynamodb_responses.PLAIN_OPERATIONS, compared


def test_an_answer_with_a_timestamp_is_left_to_motos_serializer() -> None:
    from datetime import datetime, timezone

    service = botocore.session.get_session().get_service_model("dynamodb")
    query = service.operation_model("Query")
    assert dynamodb_responses.plain_body(query, {"Items": [datetime.now(timezone.utc)]}) is None
    assert dynamodb_responses.plain_body(query, {"Count": 1}) == '{"Count":1}'
    describe = service.operation_model("DescribeTable")
    assert dynamodb_responses.plain_body(describe, {"Table": {}}) is None
