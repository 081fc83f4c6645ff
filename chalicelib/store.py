"""The session store: DynamoDB (through PynamoDB) behind the operations backchat needs.

Every write an orchestrator attempt makes is fenced: it is a transaction whose session
update is conditioned on the attempt still holding an unexpired lease, so a zombie
attempt can never write after it lost the session.
"""
from __future__ import annotations

import itertools
import logging
import random
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, ContextManager, Iterator, Sequence

from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import clock
from chalicelib.changes import PROCESS_CHANGES, SessionWatch
from chalicelib.errors import CancelRequested, LeaseLost, StoreUnavailable
from chalicelib.models import RUN_STATE_RUNNING, BoundModels, bind_models
from chalicelib.records import (
    RUNNING,
    EventPage,
    EventRecord,
    HistoryTurn,
    NewSession,
    RunEnding,
    SessionPage,
    SessionRecord,
    TokenUsage,
)
from chalicelib.settings import Settings

logger = logging.getLogger(__name__)

CONDITION_FAILED = "ConditionalCheckFailedException"
# Errors worth another try: DynamoDB is throttling or briefly unable to serve.
TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "TransactionConflictException",
    "TransactionInProgressException", "ThrottlingError", "TransactionConflict",
})


class StoreThrottled(StoreUnavailable):
    """DynamoDB refused a request for a transient reason; another try may succeed."""


class SessionExists(Exception):
    """A session with this id is already stored."""


@dataclass(frozen=True)
class Fence:
    """Who may write: an orchestrator attempt, or the system ending a run no attempt holds."""

    attempt_id: str | None
    # Only for the reaper: the session's lease must have run out.
    lease_expired: bool = False

    @classmethod
    def unclaimed(cls) -> "Fence":
        """Return the fence for ending a session no attempt has claimed (dispatch failed)."""
        return cls(attempt_id=None)

    @classmethod
    def expired(cls) -> "Fence":
        """Return the fence for ending a session whose lease ran out (the reaper)."""
        return cls(attempt_id=None, lease_expired=True)


class SessionStore:
    """Sessions and their event logs in DynamoDB."""

    def __init__(self, settings: Settings, models: BoundModels | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._settings = settings
        self._sleep = sleep
        self._models = models or bind_models(settings)
        self._session = self._models.session
        self._event = self._models.event

    # -- tables ---------------------------------------------------------------

    def create_tables(self) -> None:
        """Create both tables if they do not exist yet, or add indexes they lack (idempotent)."""
        with _translate_errors():
            for model in (self._session, self._event):
                if not model.exists():
                    model.create_table(wait=True)
                else:
                    _add_missing_indexes(model)

    def ping(self) -> None:
        """Read one key from each table; raise StoreUnavailable if either cannot be reached."""
        with _translate_errors():
            for model, key in ((self._session, ("health",)), (self._event, ("health", 0))):
                try:
                    model.get(*key)
                except DoesNotExist:
                    pass

    # -- sessions -------------------------------------------------------------

    def create(self, new: NewSession) -> SessionRecord:
        """Store a new running session; raise SessionExists if the id is taken."""
        now = clock.now_ms()
        created = clock.iso_from_ms(now)
        item = self._session(
            new.id,
            ownerId=new.owner_id,
            status=RUNNING,
            model=new.model,
            title=new.title,
            conversationId=new.conversation_id,
            message=new.message,
            history=[{"role": t.role, "content": t.content} for t in new.history],
            inputTokens=0,
            outputTokens=0,
            totalTokens=0,
            lastSeq=0,
            createdAt=created,
            updatedAt=created,
            runState=RUN_STATE_RUNNING,
            runOwner=new.owner_id,
            # Until a run claims it, the lease is the time the dispatch has to start it.
            leaseUntil=now + self._settings.claim_timeout_seconds * 1000,
            idempotencyKey=new.idempotency_key,
            requestHash=new.request_hash,
            expiresAt=_expiry(now, self._settings.retention_days),
        )
        try:
            with _translate_errors():
                item.save(condition=self._session.id.does_not_exist())
        except _ConditionFailed:
            raise SessionExists(new.id) from None
        return _session_record(item)

    def get(self, session_id: str) -> SessionRecord | None:
        """Return the session (strongly consistent), or None if unknown or expired."""
        with _translate_errors():
            try:
                item = self._session.get(session_id, consistent_read=True)
            except DoesNotExist:
                return None
        record = _session_record(item)
        return None if _expired(record.expires_at) else record

    def list_by_owner(
        self, owner_id: str, limit: int, start_key: dict[str, str] | None = None
    ) -> SessionPage:
        """Return the owner's sessions, newest first, from the owner index."""
        query_start = _raw_key(start_key) if start_key else None
        with _translate_errors():
            items = list(
                self._session.owner_index.query(
                    owner_id,
                    scan_index_forward=False,
                    limit=limit + 1,
                    page_size=limit + 1,
                    last_evaluated_key=query_start,
                )
            )
        records = [_session_record(item) for item in items]
        page = records[:limit]
        next_key = None
        if len(records) > limit:
            last = page[-1]
            next_key = {"id": last.id, "ownerId": owner_id, "createdAt": last.created_at}
        return SessionPage(
            sessions=tuple(r for r in page if not _expired(r.expires_at)), next_key=next_key
        )

    def count_running(self, owner_id: str, created_since: str, stop_at: int) -> int:
        """Count the owner's running sessions created since a time, up to stop_at.

        Reads the sparse running-by-owner index, so a session started a moment ago may not
        be counted yet. It holds only running sessions: the cost is at most stop_at keys,
        however many sessions the owner started lately.
        """
        S = self._session
        with _translate_errors():
            return S.running_by_owner_index.count(owner_id, S.createdAt >= created_since,
                                                  limit=stop_at)

    def request_cancel(self, session_id: str) -> None:
        """Mark a running session for cancellation; a finished one is left unchanged."""
        session = self._session(session_id)
        try:
            with _translate_errors():
                session.update(
                    actions=[
                        self._session.cancelRequested.set(True),
                        self._session.updatedAt.set(clock.now_iso()),
                    ],
                    condition=self._session.status == RUNNING,
                )
        except _ConditionFailed:
            pass

    # -- the run --------------------------------------------------------------

    def claim_lease(self, session_id: str, attempt_id: str) -> SessionRecord | None:
        """Make attempt_id the session's only writer; None if it was claimed before or ended."""
        session = self._session(session_id)
        S = self._session
        now = clock.now_ms()
        try:
            with _translate_errors():
                session.update(
                    actions=[
                        S.attemptId.set(attempt_id),
                        S.leaseUntil.set(now + self._settings.lease_seconds * 1000),
                        S.updatedAt.set(clock.iso_from_ms(now)),
                    ],
                    # Only the first delivery claims: a redelivered invocation is a no-op,
                    # and a run whose attempt died is the reaper's to end, not to rerun.
                    condition=S.attemptId.does_not_exist() & (S.status == RUNNING),
                )
        except _ConditionFailed:
            return None
        return _session_record(session)

    def append(
        self, session_id: str, fence: Fence, events: Sequence[EventRecord], usage: TokenUsage
    ) -> None:
        """Append events after the session's last seq and renew the lease, all or nothing.

        Raises CancelRequested if the owner asked to stop (nothing is written then),
        LeaseLost if this attempt no longer owns the session.
        """
        now = clock.now_ms()
        S = self._session
        last_seq = events[-1].seq if events else None
        actions = [
            S.leaseUntil.set(now + self._settings.lease_seconds * 1000),
            S.updatedAt.set(clock.iso_from_ms(now)),
            S.inputTokens.set(usage.input_tokens),
            S.outputTokens.set(usage.output_tokens),
            S.totalTokens.set(usage.total_tokens),
        ]
        condition = self._fence_condition(fence, now) & (
            S.cancelRequested.does_not_exist() | (S.cancelRequested == False)  # noqa: E712
        )
        if events:
            actions.append(S.lastSeq.set(last_seq))
            condition &= S.lastSeq == events[0].seq - 1
        self._write(session_id, fence, actions, condition, events)

    def finish(self, session_id: str, fence: Fence, pending: Sequence[EventRecord],
               ending: RunEnding) -> None:
        """Write the pending events, the terminal event and the final status in one transaction.

        Raises LeaseLost if the fence no longer holds; a cancel request does not stop it.
        """
        now = clock.now_ms()
        S = self._session
        events = [*pending, ending.terminal_event]
        answer = _truncate_utf8(ending.answer, self._settings.max_answer_bytes)
        actions = [
            S.status.set(ending.status),
            S.lastSeq.set(ending.terminal_event.seq),
            S.updatedAt.set(clock.iso_from_ms(now)),
            S.finishedAt.set(clock.iso_from_ms(now)),
            S.answer.set(answer),
            S.inputTokens.set(ending.usage.input_tokens),
            S.outputTokens.set(ending.usage.output_tokens),
            S.totalTokens.set(ending.usage.total_tokens),
            S.runState.remove(),
            S.runOwner.remove(),
        ]
        if ending.error is not None:
            actions.append(S.error.set(ending.error))
        condition = self._fence_condition(fence, now) & (S.lastSeq == events[0].seq - 1)
        self._write(session_id, fence, actions, condition, events)

    def _fence_condition(self, fence: Fence, now_ms: int) -> Any:
        S = self._session
        if fence.lease_expired:
            return (S.status == RUNNING) & (S.leaseUntil < now_ms)
        if fence.attempt_id is None:
            return S.attemptId.does_not_exist() & (S.status == RUNNING)
        return (S.attemptId == fence.attempt_id) & (S.status == RUNNING) & (S.leaseUntil >= now_ms)

    def _write(self, session_id: str, fence: Fence, actions: list[Any], condition: Any,
               events: Sequence[EventRecord]) -> None:
        connection = self._session._get_connection().connection
        # One token for every try: DynamoDB applies a retried transaction only once.
        token = uuid.uuid4().hex
        for attempt in itertools.count(1):
            try:
                with _translate_errors():
                    with TransactWrite(connection=connection,
                                       client_request_token=token) as transaction:
                        transaction.update(self._session(session_id), actions=actions,
                                           condition=condition)
                        for event in events:
                            transaction.save(self._event_item(event),
                                             condition=self._event.seq.does_not_exist())
                if events:
                    PROCESS_CHANGES.announce(session_id)
                return
            except _ConditionFailed:
                raise self._why_rejected(session_id, fence) from None
            except StoreThrottled:
                if attempt >= self._settings.store_retries:
                    raise
                logger.info("session %s: DynamoDB throttled a write; retry %d", session_id,
                            attempt)
                self._sleep(_backoff(attempt))

    def _why_rejected(self, session_id: str, fence: Fence) -> Exception:
        """Return CancelRequested or LeaseLost for a fenced write that was refused."""
        session = self.get(session_id)
        still_ours = (
            session is not None
            and session.is_running
            and session.attempt_id == fence.attempt_id
            and (session.lease_until_ms or 0) >= clock.now_ms()
        )
        if still_ours and session.cancel_requested:
            return CancelRequested(f"Session {session_id} was cancelled")
        logger.warning("session %s: write by attempt %s refused; the lease is lost",
                       session_id, fence.attempt_id)
        return LeaseLost(f"Attempt {fence.attempt_id} no longer owns session {session_id}")

    def expired_runs(self, limit: int = 100) -> list[str]:
        """Return ids of running sessions whose lease has run out, from the sparse index."""
        S = self._session
        with _translate_errors():
            items = S.running_index.query(RUN_STATE_RUNNING,
                                          range_key_condition=S.leaseUntil < clock.now_ms(),
                                          limit=limit)
            return [item.id for item in items]

    # -- events ---------------------------------------------------------------

    def watch(self, session_id: str) -> ContextManager[SessionWatch]:
        """Hear of this process's writes that add events to the session (long-polls)."""
        return PROCESS_CHANGES.watch(session_id)

    def events_after(self, session_id: str, after: int, limit: int) -> EventPage:
        """Return up to `limit` events with seq > after, oldest first (strongly consistent)."""
        E = self._event
        with _translate_errors():
            items = list(
                E.query(
                    session_id,
                    range_key_condition=E.seq > after,
                    consistent_read=True,
                    limit=limit + 1,
                    page_size=limit + 1,
                )
            )
        events = [_event_record(item) for item in items if not _expired(_epoch(item.expiresAt))]
        return EventPage(events=tuple(events[:limit]), has_more=len(events) > limit)

    def _event_item(self, event: EventRecord) -> Any:
        usage = None
        if event.usage is not None:
            usage = {
                "inputTokens": event.usage.input_tokens,
                "outputTokens": event.usage.output_tokens,
                "totalTokens": event.usage.total_tokens,
            }
        return self._event(
            event.session_id,
            event.seq,
            eventType=event.event_type,
            content=event.content,
            toolName=event.tool_name,
            toolCallId=event.tool_call_id,
            toolInput=event.tool_input,
            usage=usage,
            createdAt=event.created_at,
            expiresAt=_expiry(clock.now_ms(), self._settings.retention_days),
        )


class _ConditionFailed(Exception):
    """A conditional write was refused (internal to the store)."""


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Turn PynamoDB's errors into the store's: condition failures and unavailability."""
    try:
        yield
    except TransactWriteError as error:
        reasons = {r.code for r in error.cancellation_reasons if r is not None}
        if "ConditionalCheckFailed" in reasons:
            raise _ConditionFailed() from error
        if reasons & TRANSIENT_CODES or error.cause_response_code in TRANSIENT_CODES:
            raise StoreThrottled("DynamoDB is throttling; try again shortly") from error
        raise StoreUnavailable(f"DynamoDB refused the transaction: {error.cause_response_code}") from error
    except DoesNotExist:
        raise
    except PynamoDBException as error:
        if error.cause_response_code == CONDITION_FAILED:
            raise _ConditionFailed() from error
        logger.warning("DynamoDB request failed: %s", error.cause_response_code or error)
        if error.cause_response_code in TRANSIENT_CODES:
            raise StoreThrottled("DynamoDB is throttling; try again shortly") from error
        raise StoreUnavailable("The session store is unavailable; try again shortly") from error


def _backoff(attempt: int) -> float:
    """Return the pause before retry `attempt`: exponential with full jitter, at most 2 s."""
    return random.uniform(0, min(2.0, 0.05 * 2 ** attempt))


def _add_missing_indexes(model: Any) -> None:
    """Add the model's global indexes a table made by an older version lacks (local data)."""
    described = model.describe_table().get("GlobalSecondaryIndexes", [])
    existing = {index["IndexName"] for index in described}
    schema = model._get_schema()
    for index in schema["global_secondary_indexes"]:
        if index["index_name"] in existing:
            continue
        model._get_connection().connection.client.update_table(
            TableName=model.Meta.table_name,
            AttributeDefinitions=index["attribute_definitions"],
            GlobalSecondaryIndexUpdates=[{"Create": {
                "IndexName": index["index_name"],
                "KeySchema": index["key_schema"],
                "Projection": index["projection"],
            }}],
        )
        logger.info("table %s: added index %s", model.Meta.table_name, index["index_name"])


def _expiry(now_ms: int, retention_days: int) -> datetime:
    return datetime.fromtimestamp(now_ms // 1000 + retention_days * 86_400, tz=timezone.utc)


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _expired(expires_at: int | None) -> bool:
    # DynamoDB deletes expired items lazily (and moto never does), so reads hide them.
    return expires_at is not None and expires_at * 1000 <= clock.now_ms()


def _raw_key(key: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"S": value} for name, value in key.items()}


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _session_record(item: Any) -> SessionRecord:
    return SessionRecord(
        id=item.id,
        owner_id=item.ownerId,
        status=item.status,
        model=item.model,
        created_at=item.createdAt,
        updated_at=item.updatedAt,
        message=item.message or "",
        history=tuple(HistoryTurn(t["role"], t["content"]) for t in (item.history or [])),
        title=item.title,
        conversation_id=item.conversationId,
        finished_at=item.finishedAt,
        usage=TokenUsage(int(item.inputTokens or 0), int(item.outputTokens or 0)),
        last_seq=int(item.lastSeq or 0),
        error=item.error,
        answer=item.answer,
        attempt_id=item.attemptId,
        lease_until_ms=None if item.leaseUntil is None else int(item.leaseUntil),
        cancel_requested=bool(item.cancelRequested),
        idempotency_key=item.idempotencyKey,
        request_hash=item.requestHash,
        expires_at=_epoch(item.expiresAt),
    )


def _event_record(item: Any) -> EventRecord:
    usage = None
    if item.usage is not None:
        usage = TokenUsage(int(item.usage.inputTokens), int(item.usage.outputTokens))
    return EventRecord(
        session_id=item.sessionId,
        seq=int(item.seq),
        event_type=item.eventType,
        created_at=item.createdAt,
        content=item.content,
        tool_name=item.toolName,
        tool_call_id=item.toolCallId,
        tool_input=item.toolInput,
        usage=usage,
    )
