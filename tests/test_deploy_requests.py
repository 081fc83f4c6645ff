"""The AWS requests each deployed function makes: allowed by its IAM policy, and what they cost.

The tests drive every route, an orchestrator run, a redelivery, a cancelled run and a reaper
pass on moto, attribute each AWS request to the function that would make it when deployed,
and check it against that function's .chalice/policy-dev-<function>.json. So a code change
that needs a new permission fails here, not in production.

Run as a script, it measures one typical session (the demo model, ~300 tokens at 50 tokens/s,
a client long-polling as the page does) and prints the request and capacity counts that the
cost sheet in docs/deploy.md is computed from:

    .venv/bin/python -m tests.test_deploy_requests [--tokens 300] [--rate 50] [--poll long|interval]
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber

from chalicelib import clock
from chalicelib.dispatch import Dispatcher, LambdaDispatcher
from chalicelib.models import bind_models
from chalicelib.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGE = "dev"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
SESSIONS_TABLE = f"backchat-{STAGE}-chatSessions"
EVENTS_TABLE = f"backchat-{STAGE}-chatEvents"
CONVERSATIONS_TABLE = f"backchat-{STAGE}-chatConversations"
ORCHESTRATOR = f"backchat-{STAGE}-orchestrator"
POLICY_FILES = {"api": "api", "orchestrator": "orchestrator", "reaper": "reaper"}
JSON = {"Content-Type": "application/json"}
# A transactional write costs two write units per KB; reads are per 4 KB, half if eventual.
TRANSACTION_FACTOR = 2
# A Lambda invocation gets at most 15 minutes.
LAMBDA_MAX_MS = 900_000


# -- recording -----------------------------------------------------------------------------


@dataclass
class Request:
    """One AWS API call, with the function that made it and what it consumed."""

    function: str
    service: str
    operation: str
    params: dict
    # When it was made (time.monotonic()), for rates.
    at: float = field(default_factory=time.monotonic)
    read_units: float = 0.0
    write_units: float = 0.0
    index_write_units: float = 0.0
    # (index, partition key) of each index write this request caused.
    index_writes: list[tuple[str, str]] = field(default_factory=list)
    # (table, partition key) of each item this request wrote.
    table_writes: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class RequestLog:
    """Records every botocore call in the process (PynamoDB's included), by function.

    Calls are attributed to the function set with `acting_as` on the calling thread. With
    `meter`, DynamoDB calls are also priced in request units from the item sizes moto holds.
    """

    meter: bool = False
    requests: list[Request] = field(default_factory=list)
    # The largest session row seen after a write, in bytes.
    largest_row: int = 0

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._indexes = _index_definitions()

    @contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        previous = getattr(self._local, "function", None)
        self._local.function = function
        try:
            yield
        finally:
            self._local.function = previous

    @contextmanager
    def recording(self) -> Iterator["RequestLog"]:
        original = BaseClient._make_api_call
        log = self

        def make_api_call(client: BaseClient, operation: str, params: dict) -> Any:
            service = client.meta.service_model.service_name
            request = Request(getattr(log._local, "function", None) or "unattributed",
                              service, operation, params)
            before = log._stored_sessions(service, operation, params)
            try:
                response = original(client, operation, params)
            finally:  # a refused request (a failed condition, say) needed the permission too
                with log._lock:
                    log.requests.append(request)
            if log.meter and service == "dynamodb":
                log._price(request, response, before)
            return response

        with mock.patch.object(BaseClient, "_make_api_call", make_api_call):
            yield self

    def by_function(self, function: str) -> list[Request]:
        return [r for r in self.requests if r.function == function]

    # Capacity: what DynamoDB would charge for each request, from the items' sizes.

    def _stored_sessions(self, service: str, operation: str, params: dict) -> dict[tuple, Any]:
        """Return the items a write is about to change, as moto holds them now (the old images)."""
        if not self.meter or service != "dynamodb":
            return {}
        return {(table, _key_text(key)): _stored_item(table, key)
                for table, key in _keys_written(operation, params)}

    def _price(self, request: Request, response: dict, before: dict[tuple, Any]) -> None:
        params, operation = request.params, request.operation
        factor = 1 if params.get("ConsistentRead") else 0.5
        if operation == "GetItem":
            request.read_units = factor * _units(item_bytes(response.get("Item") or {}), 4096)
        elif operation == "Query":
            # A Query is billed by the bytes it read, rounded up once.
            size = sum(item_bytes(item) for item in response.get("Items", []))
            request.read_units = factor * _units(size, 4096)
        elif operation == "BatchGetItem":
            # A batch is billed item by item, each rounded up to 4 KB.
            for table, items in response.get("Responses", {}).items():
                per_item = 1 if params["RequestItems"][table].get("ConsistentRead") else 0.5
                request.read_units += sum(per_item * _units(item_bytes(item), 4096)
                                          for item in items)
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            self._price_write(request, params, before, 1)
        elif operation == "BatchWriteItem":
            for table, writes in params["RequestItems"].items():
                for write in writes:
                    [(kind, body)] = write.items()
                    self._price_write(request, {"TableName": table, **body}, before, 1)
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                [(kind, item_params)] = entry.items()
                if kind == "ConditionCheck":
                    request.write_units += TRANSACTION_FACTOR
                else:
                    self._price_write(request, item_params, before, TRANSACTION_FACTOR)

    def _price_write(self, request: Request, params: dict, before: dict[tuple, Any],
                     factor: int) -> None:
        """Price one item's write: the larger of its old and new images, and what the table's
        indexes write because of it."""
        table = params["TableName"]
        key = _key_of(table, params)
        hash_name = TABLE_KEYS[table][0]
        request.table_writes.append((table, json.dumps(key[hash_name], sort_keys=True)))
        old = before.get((table, _key_text(key)))
        new = _stored_item(table, key)
        size = max(item_bytes(old or {}), item_bytes(new or {}))
        request.write_units += factor * _units(size, 1024)
        if table == SESSIONS_TABLE:
            self.largest_row = max(self.largest_row, item_bytes(new or {}))
        for index in self._indexes.get(table, ()):
            units = index.write_units(old, new)
            request.index_write_units += units
            if units:
                request.index_writes.append(index.partition(old, new))


@dataclass(frozen=True)
class _Index:
    """A GSI, as far as its write cost goes."""

    name: str
    keys: tuple[str, ...]
    projected: tuple[str, ...] | None  # None: every attribute
    table_keys: tuple[str, ...]

    def partition(self, old: dict | None, new: dict | None) -> tuple[str, str]:
        """Return (index, partition key value) of an index write, for the per-partition rate."""
        item = new if new is not None and self.keys[0] in new else old or {}
        return self.name, json.dumps(item.get(self.keys[0]), sort_keys=True)

    def write_units(self, old: dict | None, new: dict | None) -> float:
        """Index writes for one base-table change: an update in place, or a delete plus a put."""
        was, now = self._entry(old), self._entry(new)
        if was is None and now is None:
            return 0
        if was is None or now is None:
            return _units(item_bytes(was or now), 1024)
        if any(was.get(k) != now.get(k) for k in self.keys):
            return _units(item_bytes(was), 1024) + _units(item_bytes(now), 1024)
        return _units(item_bytes(now), 1024) if was != now else 0

    def _entry(self, item: dict | None) -> dict | None:
        if item is None or any(k not in item for k in self.keys):
            return None
        names = set(self.keys) | set(self.table_keys) | set(
            self.projected if self.projected is not None else item)
        return {k: v for k, v in item.items() if k in names}


TABLE_KEYS = {SESSIONS_TABLE: ("id",), EVENTS_TABLE: ("sessionId", "seq"),
              CONVERSATIONS_TABLE: ("conversationId", "item")}


def _index_definitions() -> dict[str, list[_Index]]:
    models = bind_models(dev_stage_settings())
    indexes: dict[str, list[_Index]] = {}
    for model in models.all():
        schema = model._get_schema()
        for index in schema["global_secondary_indexes"]:
            keys = tuple(k["AttributeName"] for k in index["key_schema"])
            projection = index["projection"]
            projected = {"KEYS_ONLY": (), "ALL": None}.get(
                projection["ProjectionType"], tuple(projection.get("NonKeyAttributes", ())))
            indexes.setdefault(model.Meta.table_name, []).append(_Index(
                index["index_name"], keys, projected, TABLE_KEYS[model.Meta.table_name]))
    return indexes


def _key_of(table: str, params: dict) -> dict:
    return params.get("Key") or {k: v for k, v in params["Item"].items()
                                 if k in TABLE_KEYS[table]}


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def _keys_written(operation: str, params: dict) -> list[tuple[str, dict]]:
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        writes = [params]
    elif operation == "TransactWriteItems":
        writes = [next(iter(e.values())) for e in params.get("TransactItems", [])]
    elif operation == "BatchWriteItem":
        writes = [{"TableName": table, **next(iter(w.values()))}
                  for table, batch in params["RequestItems"].items() for w in batch]
    else:
        writes = []
    return [(w["TableName"], _key_of(w["TableName"], w)) for w in writes
            if w.get("TableName") in TABLE_KEYS]


def _stored_item(table_name: str, key: dict) -> dict | None:
    """Return an item as moto holds it, in DynamoDB JSON, without making a request."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType

    table = dynamodb_backends[ACCOUNT][REGION].get_table(table_name)
    range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    item = table.get_item(DynamoType(key[table.hash_key_attr]), range_key)
    return item.to_json()["Attributes"] if item else None


def item_bytes(item: dict) -> int:
    """Return an item's size as DynamoDB counts it: names plus values, in bytes."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict) -> int:
    [(kind, content)] = value.items()
    if kind == "S":
        return len(content.encode())
    if kind == "N":
        digits = content.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_bytes(v) + 1 for k, v in content.items())
    if kind == "L":
        return 3 + sum(_value_bytes(v) + 1 for v in content)
    return len(json.dumps(content))


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


# -- IAM -----------------------------------------------------------------------------------


def iam_requests(request: Request) -> list[tuple[str, str]]:
    """Return the (action, resource ARN) pairs IAM authorises for one API call."""
    def table(name: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        return f"{arn}/index/{index}" if index else arn

    params = request.params
    if request.service == "dynamodb":
        if request.operation == "TransactWriteItems":
            # TransactWriteItems is not an IAM action: each item needs its own.
            actions = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                       "ConditionCheck": "ConditionCheckItem"}
            return [(f"dynamodb:{actions[kind]}", table(item["TableName"]))
                    for entry in params["TransactItems"] for kind, item in entry.items()]
        if request.operation == "TransactGetItems":
            return [("dynamodb:GetItem", table(entry["Get"]["TableName"]))
                    for entry in params["TransactItems"]]
        if "RequestItems" in params:
            return [(f"dynamodb:{request.operation}", table(name)) for name in params["RequestItems"]]
        return [(f"dynamodb:{request.operation}", table(params["TableName"], params.get("IndexName")))]
    if request.service == "lambda" and request.operation == "Invoke":
        return [("lambda:InvokeFunction",
                 f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{params['FunctionName']}")]
    return [(f"{request.service}:{request.operation}", "*")]


def allowed(policy: dict, action: str, resource: str) -> bool:
    """True if an unconditional Allow statement matches (IAM's * wildcard; no Deny here)."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (statement["Resource"] if isinstance(statement["Resource"], list)
                     else [statement["Resource"]])
        if (statement["Effect"] == "Allow" and "Condition" not in statement
                and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions)
                and any(fnmatch.fnmatchcase(resource, r) for r in resources)):
            return True
    return False


def policy(function: str) -> dict:
    path = REPO_ROOT / ".chalice" / f"policy-{STAGE}-{POLICY_FILES[function]}.json"
    return json.loads(path.read_text())


# -- tests ---------------------------------------------------------------------------------


def dev_stage_settings(**overrides: Any) -> Settings:
    """The deployed dev stage's settings; callers replace the dispatcher."""
    return Settings(stage=STAGE, dispatch_mode="lambda", sessions_table=SESSIONS_TABLE,
                    events_table=EVENTS_TABLE, conversations_table=CONVERSATIONS_TABLE,
                    orchestrator_function=ORCHESTRATOR, cursor_secret="a test deployment's key",
                    **overrides)


@contextmanager
def app_on_moto(settings: Settings) -> Iterator[tuple[Any, Any, pytest.MonkeyPatch]]:
    """Yield chalice's test client for the app on moto, its components, and a monkeypatch."""
    from chalice.test import Client
    from moto import mock_aws

    import app as app_module
    from chalicelib.store import SessionStore
    from chalicelib.wiring import build_components
    from scripts.embedded_dynamodb import install_atomic_backend

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
            patch.setenv(name, value)
        patch.delenv("DDB_ENDPOINT", raising=False)
        install_atomic_backend()
        with mock_aws():
            SessionStore(settings).create_tables()
            components = build_components(settings)
            patch.setattr(app_module, "_components", components)
            with Client(app_module.app, stage_name="local", project_dir=str(REPO_ROOT)) as client:
                yield client, components, patch


class _DispatchFailure(Dispatcher):
    def dispatch(self, session_id: str) -> None:
        from chalicelib.errors import DispatchFailed

        raise DispatchFailed("the test dispatcher refuses")


def _start(client, message: str, headers: dict | None = None, **fields: Any) -> str:
    return _start_turn(client, message, headers, **fields)["sessionId"]


def _start_turn(client, message: str, headers: dict | None = None, **fields: Any) -> dict:
    response = client.http.post("/api/chat/session", headers={**JSON, **(headers or {})},
                                body=json.dumps({"message": message, **fields}))
    assert response.status_code == 202, response.body
    return response.json_body


@pytest.fixture(scope="module")
def every_path() -> Iterator[RequestLog]:
    """Drive every route and every kind of run once, recording who makes which request."""
    # The unit tests' fast timings; chalice.test gives an invocation a 3-second deadline.
    settings = dev_stage_settings(flush_interval=0.05, heartbeat_interval=0.2, lease_seconds=5,
                                  deadline_margin_seconds=0.5)
    with app_on_moto(settings) as (client, components, monkeypatch):
        yield _drive_every_path(client, components, monkeypatch)


def _drive_every_path(client, components, monkeypatch: pytest.MonkeyPatch) -> RequestLog:
    import boto3

    lambda_client = boto3.client("lambda", region_name=REGION)
    stubber = Stubber(lambda_client)
    for _ in range(6):  # every start that dispatches
        stubber.add_response("invoke", {"StatusCode": 202})
    stubber.activate()
    monkeypatch.setattr(components.service, "_dispatcher",
                        LambdaDispatcher(lambda_client, ORCHESTRATOR))
    fast = " [demo tokens=40 rate=100000]"
    log = RequestLog()
    with log.recording():
        with log.acting_as("api"):
            first = _start_turn(client, "what is 17*23?" + fast, {"Idempotency-Key": "k1"})
            done = first["sessionId"]
            assert _start(client, "what is 17*23?" + fast, {"Idempotency-Key": "k1"}) == done
            never_ran = _start(client, "cancelled before it starts" + fast)
            assert client.http.post(f"/api/chat/session/{never_ran}/cancel").status_code == 202
            cancelled = _start(client, "stop me" + fast)
            orphan = _start(client, "never run" + fast)
            doomed = _start_turn(client, "a conversation to delete" + fast)
        with log.acting_as("orchestrator"):
            for session_id in (done, done, cancelled, never_ran):  # redeliveries do nothing
                if session_id == cancelled:
                    with log.acting_as("api"):
                        # What the cancel route does once a run has claimed the session.
                        components.store.request_cancel(cancelled)
                client.lambda_.invoke("orchestrator", {"sessionId": session_id})
        with log.acting_as("api"):
            second = _start(client, "and again?" + fast, conversationId=first["conversationId"])
        with log.acting_as("orchestrator"):
            client.lambda_.invoke("orchestrator", {"sessionId": second})  # reads the history
        with log.acting_as("api"):
            conversation = f"/api/chat/conversations/{first['conversationId']}"
            for path in (f"/api/chat/session/{done}", f"/api/chat/session/{done}/events",
                         f"/api/chat/session/{done}/events?after=2&wait=1",
                         "/api/chat/sessions", "/api/chat/conversations", conversation,
                         "/api/models", "/api/health"):
                assert client.http.get(path).status_code == 200, path
            assert client.http.request("PATCH", conversation, headers=JSON,
                                       body=json.dumps({"title": "Sums"})).status_code == 200
            assert client.http.request(
                "DELETE", f"/api/chat/conversations/{doomed['conversationId']}").status_code == 204
            monkeypatch.setattr(components.service, "_dispatcher", _DispatchFailure())
            failed = client.http.post("/api/chat/session", headers=JSON,
                                      body=json.dumps({"message": "no worker"}))
            assert failed.status_code == 503
    lease_end = components.store.get(orphan).lease_until_ms
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end + 1)
    with log.recording(), log.acting_as("reaper"):
        client.lambda_.invoke("reaper", client.events.generate_cw_event(
            "aws.events", "Scheduled Event", {}, []))
    assert components.store.get(orphan).status == "error"
    assert components.store.get(cancelled).status == "cancelled"
    assert components.store.get(never_ran).status == "cancelled"
    assert components.store.get(done).status == components.store.get(second).status == "done"
    assert components.store.get(doomed["sessionId"]) is None  # purged with its conversation
    return log


def test_every_request_is_made_by_a_known_function(every_path: RequestLog) -> None:
    assert not every_path.by_function("unattributed")
    assert {r.function for r in every_path.requests} == set(POLICY_FILES)


@pytest.mark.parametrize("function", sorted(POLICY_FILES))
def test_each_function_is_allowed_every_request_it_makes(every_path: RequestLog,
                                                         function: str) -> None:
    document = policy(function)
    refused = {pair for request in every_path.by_function(function)
               for pair in iam_requests(request) if not allowed(document, *pair)}
    assert not refused, f"{function} would be refused: {sorted(refused)}"


@pytest.mark.parametrize("function", sorted(POLICY_FILES))
def test_each_dynamodb_grant_is_needed(every_path: RequestLog, function: str) -> None:
    # Least privilege, the other way round: a grant no path uses should not be there.
    used = {pair for request in every_path.by_function(function)
            for pair in iam_requests(request)}
    for statement in policy(function)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (statement["Resource"] if isinstance(statement["Resource"], list)
                     else [statement["Resource"]])
        for action in (a for a in actions if a.startswith("dynamodb:")):
            for resource in resources:
                assert any(fnmatch.fnmatchcase(a, action) and fnmatch.fnmatchcase(r, resource)
                           for a, r in used), f"{function}: {action} on {resource} is unused"


def test_the_api_invokes_only_the_orchestrator_asynchronously(every_path: RequestLog) -> None:
    invokes = [r.params for r in every_path.requests if r.service == "lambda"]
    assert invokes and all(p["FunctionName"] == ORCHESTRATOR and p["InvocationType"] == "Event"
                           for p in invokes)


def test_a_metered_session_costs_writes_in_proportion_to_flushes_not_tokens() -> None:
    # The measurement the cost sheet uses, on a short fast run so that it stays a unit test.
    with app_on_moto(dev_stage_settings()) as (client, components, monkeypatch):
        measurement = measure_session(client, components, monkeypatch.setattr, tokens=40,
                                      rate=100000, poll="long")
    assert measurement.status == "done"
    totals = measurement.totals()
    assert totals["api"]["requests"] >= 3 and totals["orchestrator"]["write_units"] > 0
    assert totals["orchestrator"]["requests"] < 40


# -- measuring one session and pricing it ------------------------------------------------

# us-east-1 list prices in USD, without free tiers, as published in 2025 (DynamoDB on-demand
# after its 1 November 2024 reduction). Check https://aws.amazon.com/pricing before relying on them.
PRICES = {
    "dynamodb_write_unit": 0.625 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "dynamodb_storage_gb_month": 0.25,
    "dynamodb_pitr_gb_month": 0.20,
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,
    "api_gateway_rest_request": 3.50 / 1e6,
}
DAYS_PER_MONTH = 30


@dataclass
class Measurement:
    """What one session cost, by function."""

    log: RequestLog
    status: str
    events: int
    http_requests: int
    api_seconds: float
    run_seconds: float
    stored_bytes: int

    def totals(self) -> dict[str, dict[str, float]]:
        totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for r in self.log.requests:
            row = totals[r.function]
            row["requests"] += 1
            row[f"{r.service}:{r.operation}"] += 1
            row["read_units"] += r.read_units
            row["write_units"] += r.write_units
            row["index_write_units"] += r.index_write_units
        return totals


class _LambdaContext:
    """The part of Lambda's context object the orchestrator reads."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return int(LAMBDA_MAX_MS - (time.monotonic() - self._start) * 1000)


class _BackgroundInvoke(Dispatcher):
    """Stands in for Lambda's async invoke: the orchestrator runs on its own thread."""

    def __init__(self, log: RequestLog) -> None:
        self._log = log
        self.threads: list[threading.Thread] = []

    def dispatch(self, session_id: str) -> None:
        import app as app_module

        def invoke() -> None:
            with self._log.acting_as("orchestrator"):
                app_module.orchestrator({"sessionId": session_id}, _LambdaContext())

        thread = threading.Thread(target=invoke, name="measured-orchestrator")
        self.threads.append(thread)
        thread.start()


def prepare_conversation(client, components, setattr_, kilobytes: int) -> str | None:
    """Return a conversation of about `kilobytes` KB of earlier turns (None for 0): turns of a
    1,000-character message whose answer quotes it, run at once and not measured."""
    if kilobytes == 0:
        return None
    from chalicelib.dispatch import InlineDispatcher

    setattr_(components.service, "_dispatcher", InlineDispatcher(components.orchestrator.run))
    conversation_id = None
    for turn in range(max(1, kilobytes // 2)):
        fields = {"conversationId": conversation_id} if conversation_id else {}
        started = _start_turn(client, f"turn {turn}: " + "x" * 990 + " [demo rate=100000]",
                              **fields)
        conversation_id = started["conversationId"]
    return conversation_id


def measure_session(client, components, setattr_, tokens: int, rate: float,
                    poll: str, conversation_kb: int = 0) -> Measurement:
    """Start one demo session (a turn of a conversation of conversation_kb KB) and follow it
    as the page does; return what it cost."""
    conversation_id = prepare_conversation(client, components, setattr_, conversation_kb)
    log = RequestLog(meter=True)
    dispatcher = _BackgroundInvoke(log)
    setattr_(components.service, "_dispatcher", dispatcher)
    _hear_no_other_process(components, setattr_)
    wait, pause = (20, 0.0) if poll == "long" else (0, 1.5)
    http, api_seconds, after, events = 0, 0.0, 0, 0
    started = time.monotonic()
    with log.recording(), log.acting_as("api"):
        fields = {"conversationId": conversation_id} if conversation_id else {}
        session_id = _start(client, "Tell me about background runs "
                                    f"[demo tokens={tokens} rate={rate}]", **fields)
        http += 1
        while True:
            request_start = time.monotonic()
            page = client.http.get(
                f"/api/chat/session/{session_id}/events?after={after}&wait={wait}").json_body
            api_seconds += time.monotonic() - request_start
            http += 1
            events += len(page["events"])
            after = page["lastSeq"]
            if page["status"] != "running" and not page["hasMore"]:
                break
            time.sleep(pause)
        for thread in dispatcher.threads:
            thread.join()
    run_seconds = time.monotonic() - started
    return Measurement(log, page["status"], events, http, api_seconds, run_seconds,
                       _stored_session_bytes(session_id, after))


def _hear_no_other_process(components, setattr_) -> None:
    """Make long-polls re-read as in Lambda, where the run writes from another process.

    In one process a long-poll hears of the run's writes at once (chalicelib.changes); the
    deployed API function never does, so it reads the store every poll interval instead.
    """
    if hasattr(components.store, "watch"):
        from chalicelib.changes import SessionChanges

        setattr_(components.store, "watch", lambda session_id: SessionChanges().watch(session_id))


def _stored_session_bytes(session_id: str, last_seq: int) -> int:
    """Return the bytes a session keeps in DynamoDB: its row and its events (indexes aside)."""
    row = _stored_item(SESSIONS_TABLE, {"id": {"S": session_id}}) or {}
    events = (_stored_item(EVENTS_TABLE, {"sessionId": {"S": session_id}, "seq": {"N": str(seq)}})
              for seq in range(1, last_seq + 1))
    return item_bytes(row) + sum(item_bytes(event or {}) for event in events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the AWS requests of one session.")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--poll", choices=("long", "interval"), default="long")
    parser.add_argument("--conversation-kb", type=int, default=0,
                        help="earlier turns in the conversation, in KB (0: a new one)")
    args = parser.parse_args(argv)
    # The deployed defaults (flush interval, heartbeat, lease) with the dev stage's tables.
    with app_on_moto(dev_stage_settings()) as (client, components, monkeypatch):
        m = measure_session(client, components, monkeypatch.setattr, args.tokens, args.rate,
                            args.poll, args.conversation_kb)
    print(f"session: {args.tokens} tokens at {args.rate}/s, {args.poll} polling -> {m.status}; "
          f"{m.events} events; {m.http_requests} HTTP requests; run {m.run_seconds:.1f} s; "
          f"API time {m.api_seconds:.1f} s; {m.stored_bytes} bytes stored; largest session row "
          f"{m.log.largest_row} bytes")
    totals = m.totals()
    for function, row in sorted(totals.items()):
        operations = ", ".join(f"{k.split(':', 1)[1]} {int(v)}" for k, v in sorted(row.items())
                               if ":" in k)
        print(f"{function:13} requests {int(row['requests']):4}  RRU {row['read_units']:6.1f}  "
              f"WRU table {row['write_units']:5.0f}  WRU indexes {row['index_write_units']:4.0f}"
              f"  ({operations})")
    print()
    print_cost_sheet(m, totals)
    return 0


def print_cost_sheet(m: Measurement, totals: dict[str, dict[str, float]]) -> None:
    """Print a markdown table: the measured session's cost per 1,000 and 100,000 a day."""
    memory_gb = {name: size / 1024 for name, size in _deployed_memory_mb(STAGE).items()}
    reads = sum(row["read_units"] for row in totals.values())
    writes = sum(row["write_units"] + row["index_write_units"] for row in totals.values())
    retention_days = Settings().retention_days
    stored_gb = m.stored_bytes / 1e9 * retention_days  # per session a day, held for retention
    per_session = {
        "DynamoDB writes": writes * PRICES["dynamodb_write_unit"],
        "DynamoDB reads": reads * PRICES["dynamodb_read_unit"],
        "DynamoDB storage + PITR": stored_gb / DAYS_PER_MONTH * (
            PRICES["dynamodb_storage_gb_month"] + PRICES["dynamodb_pitr_gb_month"]),
        "Lambda requests": (m.http_requests + 1) * PRICES["lambda_request"],
        "Lambda duration": (m.api_seconds * memory_gb["api_handler"]
                            + m.run_seconds * memory_gb["orchestrator"])
        * PRICES["lambda_gb_second"],
        "API Gateway requests": m.http_requests * PRICES["api_gateway_rest_request"],
    }
    print("| USD | per session | a month at 1,000 sessions/day | a month at 100,000 sessions/day |")
    print("|---|---:|---:|---:|")
    for item, cost in [*per_session.items(), ("total", sum(per_session.values()))]:
        print(f"| {item} | {cost:.7f} | {cost * 1000 * DAYS_PER_MONTH:,.2f} "
              f"| {cost * 100_000 * DAYS_PER_MONTH:,.2f} |")


def _deployed_memory_mb(stage: str) -> dict[str, int]:
    config = json.loads((REPO_ROOT / ".chalice" / "config.json").read_text())
    stage_config = config["stages"][stage]
    default = stage_config.get("lambda_memory_size", config.get("lambda_memory_size", 128))
    functions = stage_config.get("lambda_functions", {})
    return {name: functions.get(name, {}).get("lambda_memory_size", default)
            for name in ("api_handler", "orchestrator", "reaper")}

if __name__ == "__main__":
    raise SystemExit(main())
