"""Throttled writes are retried with backoff; past the limit the run ends error, never stuck."""
from __future__ import annotations

import pytest

from chalicelib.errors import StoreUnavailable
from chalicelib.orchestrator import INTERNAL_ERROR, Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import TextChunk, Usage
from chalicelib.records import NewSession, TokenUsage
from chalicelib.store import Fence, SessionStore
from chalicelib.tools import default_tools
from tests.fakes import ScriptedProvider


class _Response:
    """The part of an HTTP response botocore reads from a before-call short-circuit."""

    status_code = 400
    headers: dict = {}


THROTTLED = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
             "ResponseMetadata": {"HTTPStatusCode": 400}}
CANCELLED_BY_THROTTLING = {
    "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
    "CancellationReasons": [{"Code": "ThrottlingError", "Message": "Throughput exceeds"},
                            {"Code": "None"}],
    "ResponseMetadata": {"HTTPStatusCode": 400},
}


def throttle_transactions(store: SessionStore, times: int, error: dict) -> list[int]:
    """Make the next `times` TransactWriteItems calls fail with `error`; return a call counter."""
    calls = [0]

    def before_call(**_: object):
        calls[0] += 1
        if calls[0] <= times:
            return _Response(), error
        return None

    client = store._session._get_connection().connection.client
    client.meta.events.register("before-call.dynamodb.TransactWriteItems", before_call)
    return calls


@pytest.fixture
def fast_store(aws, settings) -> SessionStore:
    store = SessionStore(settings.with_overrides(store_retries=4), sleep=lambda _: None)
    store.create_tables()
    store.create(NewSession(id="s1", owner_id="o", model="demo", message="m"))
    return store


@pytest.mark.parametrize("error", [THROTTLED, CANCELLED_BY_THROTTLING],
                         ids=["throttling-exception", "transaction-cancelled-by-throttling"])
def test_throttled_append_is_retried_and_nothing_is_lost(fast_store, error) -> None:
    from chalicelib import clock
    from chalicelib.records import DELTA, EventRecord

    fast_store.claim_lease("s1", "a1")
    calls = throttle_transactions(fast_store, times=3, error=error)
    fast_store.append("s1", Fence("a1"), [EventRecord("s1", 1, DELTA, clock.now_iso(),
                                                      content="kept")], TokenUsage())
    assert calls[0] == 4
    assert [e.content for e in fast_store.events_after("s1", 0, 10).events] == ["kept"]


def test_throttling_past_the_limit_raises_store_unavailable(fast_store) -> None:
    from chalicelib import clock
    from chalicelib.records import DELTA, EventRecord

    fast_store.claim_lease("s1", "a1")
    throttle_transactions(fast_store, times=100, error=THROTTLED)
    with pytest.raises(StoreUnavailable):
        fast_store.append("s1", Fence("a1"), [EventRecord("s1", 1, DELTA, clock.now_iso(),
                                                          content="x")], TokenUsage())


def test_run_whose_writes_stay_throttled_ends_error_once_they_recover(fast_store, settings) -> None:
    """Appends fail past the retries; the terminal write then goes through: error, not stuck."""
    provider = ScriptedProvider([TextChunk("a"), TextChunk("b"), Usage(1, 1)])
    orchestrator = Orchestrator(fast_store, ProviderRegistry({"demo": provider}),
                                default_tools(), settings)
    throttle_transactions(fast_store, times=4, error=THROTTLED)
    orchestrator.run("s1")
    session = fast_store.get("s1")
    events = fast_store.events_after("s1", 0, 10).events
    assert (session.status, session.error) == ("error", INTERNAL_ERROR)
    assert [e.event_type for e in events][-1] == "error"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert session.answer == "".join(e.content for e in events if e.event_type == "delta")
