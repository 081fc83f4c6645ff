"""Throttled or dropped writes are retried with backoff, each try the same transaction; past
the limit the run ends error, never stuck."""
from __future__ import annotations

import json

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from chalicelib import clock
from chalicelib.conversations import ConversationStore
from chalicelib.errors import StoreUnavailable
from chalicelib.orchestrator import INTERNAL_ERROR, Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import TextChunk, Usage
from chalicelib.records import DELTA, EventRecord, TokenUsage
from chalicelib.store import Fence, SessionStore
from chalicelib.tools import default_tools
from tests.builders import log, start, stored_answer
from tests.fakes import ScriptedProvider


class _Response:
    """The part of an HTTP response botocore reads from a before-call short-circuit."""

    status_code = 400
    headers: dict = {}


THROTTLED = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
             "ResponseMetadata": {"HTTPStatusCode": 400}}


def cancelled_because(code: str) -> dict:
    """A TransactWriteItems refusal whose first item was cancelled for `code`."""
    return {
        "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
        "CancellationReasons": [{"Code": code, "Message": "Throughput exceeds"}, {"Code": "None"}],
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


class DroppedConnection:
    """Stands for a connection-level failure: botocore raises it with no response at all."""

    def __init__(self, error: Exception) -> None:
        self.error = error


FAULTS = {
    "throttling-exception": THROTTLED,
    "cancelled-by-throttling": cancelled_because("ThrottlingError"),
    # The spelling DynamoDB uses in a cancellation reason, without "Exception".
    "cancelled-by-provisioned-throughput": cancelled_because("ProvisionedThroughputExceeded"),
    "connection-dropped": DroppedConnection(EndpointConnectionError(endpoint_url="http://db")),
    "read-timed-out": DroppedConnection(ReadTimeoutError(endpoint_url="http://db")),
}


def throttle_transactions(store: SessionStore, times: int, error: object) -> list[dict]:
    """Make the next `times` TransactWriteItems calls fail with `error`; return every call's
    parameters (the failed tries' and the one that went through)."""
    calls: list[dict] = []

    def before_call(params: dict, **_: object):
        calls.append(json.loads(params["body"]))  # the request as it goes on the wire
        if len(calls) <= times:
            if isinstance(error, DroppedConnection):
                raise error.error
            return _Response(), error
        return None

    client = store.models.session._get_connection().connection.client
    client.meta.events.register("before-call.dynamodb.TransactWriteItems", before_call)
    return calls


@pytest.fixture
def fast_store(aws, settings) -> SessionStore:
    store = SessionStore(settings.with_overrides(store_retries=4), sleep=lambda _: None)
    store.create_tables()
    start(store)
    return store


@pytest.mark.parametrize("error", FAULTS.values(), ids=FAULTS.keys())
def test_a_failed_append_is_retried_as_the_same_transaction_and_nothing_is_lost(
        fast_store, error) -> None:
    fast_store.claim_lease("s1", "a1")
    calls = throttle_transactions(fast_store, times=3, error=error)
    fast_store.append("s1", Fence("a1"), [EventRecord("s1", 1, DELTA, clock.now_iso(),
                                                      content="kept")], TokenUsage())
    assert len(calls) == 4
    # Same items, same ClientRequestToken: DynamoDB applies it once and never answers
    # IdempotentParameterMismatch.
    assert all(call == calls[0] for call in calls)
    assert calls[0]["ClientRequestToken"]
    assert [e.content for e in log(fast_store)] == ["kept"]


def test_throttling_past_the_limit_raises_store_unavailable(fast_store) -> None:
    fast_store.claim_lease("s1", "a1")
    throttle_transactions(fast_store, times=100, error=THROTTLED)
    with pytest.raises(StoreUnavailable):
        fast_store.append("s1", Fence("a1"), [EventRecord("s1", 1, DELTA, clock.now_iso(),
                                                          content="x")], TokenUsage())


def test_run_whose_writes_stay_throttled_ends_error_once_they_recover(fast_store, settings) -> None:
    """Appends fail past the retries; the terminal write then goes through: error, not stuck."""
    provider = ScriptedProvider([TextChunk("a"), TextChunk("b"), Usage(1, 1)])
    orchestrator = Orchestrator(fast_store, ConversationStore(fast_store.models),
                                ProviderRegistry({"demo": provider}), default_tools(), settings)
    throttle_transactions(fast_store, times=4, error=THROTTLED)
    orchestrator.run("s1")
    session = fast_store.get("s1")
    events = log(fast_store)
    assert (session.status, session.error) == ("error", INTERNAL_ERROR)
    assert [e.event_type for e in events][-1] == "error"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert stored_answer(fast_store) == "".join(
        e.content for e in events if e.event_type == "delta")


def test_a_start_whose_first_try_applied_but_whose_answer_was_lost_is_that_start(
        aws, settings) -> None:
    """moto keeps no ClientRequestToken: the retry finds its own session already there."""
    from tests.builders import new_session

    store = SessionStore(settings, sleep=lambda _: None)
    store.create_tables()
    client = store.models.session._get_connection().connection.client
    lost = []

    def lose_the_first_answer(http_response, **_):
        if not lost:
            lost.append(True)
            raise ReadTimeoutError(endpoint_url="http://db")

    client.meta.events.register("after-call.dynamodb.TransactWriteItems", lose_the_first_answer)
    created = store.create(new_session("s1"))
    assert lost and created.id == "s1" and store.get("s1") is not None
