"""The session store: sessions, their event logs and their runs' writes, in DynamoDB.

Every write an orchestrator attempt makes is fenced: it is a transaction whose session
update is conditioned on the attempt still holding an unexpired lease, so a zombie attempt
can never write after it lost the session. A turn starts and ends together with its
conversation: the start writes the session row, the turn's input and the conversation's row
in one transaction, and the terminal write puts the ending (answer, status, usage) beside
the input and clears the conversation's running turn in the same transaction as the
terminal event.
"""
from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, ContextManager, Sequence

from chalicelib import clock
from chalicelib.changes import PROCESS_CHANGES, SessionWatch
from chalicelib.dynamo import (
    ConditionFailed,
    RetryPolicy,
    batch_get,
    call_with_retries,
    get_item,
    index_page,
    quick_retries,
    transact_write,
    translate_errors,
)
from chalicelib.errors import CancelRequested, LeaseLost
from chalicelib.models import (
    CONVERSATION_ITEM,
    LEASE_SHARDS,
    BoundModels,
    bind_models,
    ending_key,
    turn_key,
)
from chalicelib.records import (
    RUNNING,
    EventPage,
    EventRecord,
    NewSession,
    RunEnding,
    SessionPage,
    SessionRecord,
    TokenUsage,
)
from chalicelib.settings import Settings
from chalicelib.tables import add_missing_indexes, ensure_ttl
from chalicelib.text import truncate_utf8

logger = logging.getLogger(__name__)


# Seconds the health check waits to connect to, then to hear from, each table.
HEALTH_TIMEOUT = 1.0


class SessionExists(Exception):
    """A session with this id is already stored."""


class ConversationUnavailable(Exception):
    """The conversation cannot take a new turn: unknown, another owner's, deleted or busy."""


@dataclass(frozen=True)
class Fence:
    """Who may write: an orchestrator attempt, or the system ending a run no attempt holds."""

    attempt_id: str | None
    # Only for the reaper: the session's lease must have run out.
    lease_expired: bool = False

    @classmethod
    def unclaimed(cls) -> "Fence":
        """Return the fence for ending a session no attempt has claimed (dispatch failed, cancel)."""
        return cls(attempt_id=None)

    @classmethod
    def expired(cls) -> "Fence":
        """Return the fence for ending a session whose lease ran out (the reaper)."""
        return cls(attempt_id=None, lease_expired=True)


def lease_shard(session_id: str) -> str:
    """Return the reaper-index partition of a session: spread, and stable for its lifetime."""
    return f"s{zlib.crc32(session_id.encode('ascii')) % LEASE_SHARDS:02d}"


class SessionStore:
    """Sessions and their event logs in DynamoDB."""

    def __init__(self, settings: Settings, models: BoundModels | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 on_throttle: Callable[[bool], None] | None = None) -> None:
        self._settings = settings
        self._sleep = sleep
        self.models = models or bind_models(settings)
        self._probe: Any = None
        self._session = self.models.session
        self._event = self.models.event
        # Reads and route writes: a few quick tries within the route's deadline.
        self._quick = quick_retries(on_throttle)
        # A run's writes: more tries, but never so long that the lease runs out meanwhile.
        self._run_writes = RetryPolicy(tries=settings.store_retries,
                                       budget=settings.lease_seconds / 2, on_throttle=on_throttle)

    # -- tables ---------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the tables if they do not exist yet, or add indexes they lack (idempotent)."""
        with translate_errors():
            for model in self.models.all():
                if not model.exists():
                    model.create_table(wait=True)
                else:
                    add_missing_indexes(model)
                    ensure_ttl(model)

    def connect(self) -> None:
        """Create the DynamoDB client now, once: left to the first requests, the many threads
        of a local server (or a burst of runs) each create one at the same moment, at a
        tenth of a second of CPU each."""
        self._session._get_connection().connection.client  # noqa: B018 - built on access

    def ping(self) -> None:
        """Read one key from each table, once each with short timeouts of its own (a health
        check answers within seconds whatever the store does); raise StoreUnavailable if one
        cannot be reached."""
        if self._probe is None:
            self._probe = self._probe_client()
        probes = ((self._session, {"id": {"S": "health"}}),
                  (self._event, {"sessionId": {"S": "health"}, "seq": {"N": "0"}}),
                  (self.models.conversation, {"conversationId": {"S": "health"},
                                              "item": {"S": CONVERSATION_ITEM}}))
        for model, key in probes:
            with translate_errors():
                self._probe.get_item(TableName=model.Meta.table_name, Key=key)

    def _probe_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("dynamodb", region_name=self._settings.region,
                            endpoint_url=self._settings.dynamodb_endpoint, config=Config(
                                connect_timeout=HEALTH_TIMEOUT, read_timeout=HEALTH_TIMEOUT,
                                retries={"total_max_attempts": 1}))

    # -- sessions -------------------------------------------------------------

    def create(self, new: NewSession) -> SessionRecord:
        """Store a new running session with its turn's input, and start the turn in its
        conversation (creating the conversation for its first turn), all or nothing.

        Raises SessionExists if the id is taken, ConversationUnavailable if the conversation
        is not the owner's, is deleted or has a turn running.
        """
        S, C, T = self._session, self.models.conversation, self.models.turn
        now = clock.now_ms()
        created = clock.iso_from_ms(now)
        expires = _expiry(now, self._settings.retention_days)
        # Until a run claims it, the lease is the time the dispatch has to start it.
        claim_by = now + self._settings.claim_timeout_seconds * 1000
        session = S(
            new.id, ownerId=new.owner_id, conversationId=new.conversation_id, status=RUNNING,
            model=new.model, title=new.title, inputTokens=0, outputTokens=0, lastSeq=0,
            createdAt=created, updatedAt=created, leaseUntil=claim_by,
            leaseShard=lease_shard(new.id), reapAt=claim_by, runOwner=new.owner_id,
            idempotencyKey=new.idempotency_key, requestHash=new.request_hash, expiresAt=expires,
        )
        turn = T(
            new.conversation_id, turn_key(created, new.id), sessionId=new.id, model=new.model,
            message=new.message, createdAt=created, expiresAt=expires,
            history=[{"role": t.role, "content": t.content} for t in new.history] or None,
        )

        def build(transaction: Any) -> None:
            transaction.save(session, condition=S.id.does_not_exist())
            transaction.save(turn, condition=T.item.does_not_exist())
            if new.new_conversation:
                transaction.save(C(
                    new.conversation_id, CONVERSATION_ITEM, ownerId=new.owner_id,
                    listOwner=new.owner_id, title=new.title, createdAt=created,
                    updatedAt=created, turnCount=1, lastSessionId=new.id, lastStatus=RUNNING,
                    runningSessionId=new.id, expiresAt=expires,
                ), condition=C.conversationId.does_not_exist())
            else:
                transaction.update(C(new.conversation_id, CONVERSATION_ITEM), actions=[
                    C.updatedAt.set(created), C.turnCount.add(1), C.lastSessionId.set(new.id),
                    C.lastStatus.set(RUNNING), C.runningSessionId.set(new.id),
                    C.expiresAt.set(expires),
                ], condition=(C.ownerId == new.owner_id) & C.runningSessionId.does_not_exist()
                    & C.deletedAt.does_not_exist())

        try:
            transact_write(self._connection(), build, self._quick, f"session {new.id}: start",
                           self._sleep)
        except ConditionFailed as refused:
            # A try whose answer was lost may have applied it (a store that does not keep
            # the request token, or one that forgot it): then the session is this very one.
            existing = self.get(new.id)
            if existing is not None and (existing.created_at, existing.owner_id) == (
                    created, new.owner_id):
                return existing
            if refused.reasons and refused.reasons[0] == "ConditionalCheckFailed":
                raise SessionExists(new.id) from None
            raise ConversationUnavailable(new.conversation_id) from None
        return _session_record(session)

    def get(self, session_id: str) -> SessionRecord | None:
        """Return the session (strongly consistent), or None if unknown or expired."""
        item = self._read(lambda: get_item(self._session, session_id, consistent=True),
                          f"session {session_id}: read")
        if item is None:
            return None
        record = _session_record(item)
        return None if clock.is_past(record.expires_at) else record

    def get_many(self, session_ids: Sequence[str]) -> dict[str, SessionRecord]:
        """Return the sessions that exist among these ids, by id (strongly consistent)."""
        items = batch_get(self._session, list(session_ids), True, self._quick, self._sleep)
        records = (_session_record(item) for item in items)
        return {r.id: r for r in records if not clock.is_past(r.expires_at)}

    def list_by_owner(self, owner_id: str, limit: int,
                      start_key: dict[str, str] | None = None) -> SessionPage:
        """Return the owner's sessions, newest first: keys from the owner index, rows read
        consistently (the index holds keys only, so streaming never writes to it)."""
        page_keys, more = self._read(
            lambda: index_page(self._session.sessions_by_owner, owner_id, limit, start_key),
            f"owner {owner_id}: list sessions")
        rows = self.get_many([item.id for item in page_keys])
        next_key = None
        if more:
            last = page_keys[-1]
            next_key = {"id": last.id, "ownerId": owner_id, "createdAt": last.createdAt}
        return SessionPage(sessions=tuple(rows[k.id] for k in page_keys if k.id in rows),
                           next_key=next_key)

    def count_running(self, owner_id: str, created_since: str, stop_at: int) -> int:
        """Count the owner's running sessions created since a time, up to stop_at.

        Reads the sparse running-by-owner index, so a session started a moment ago may not
        be counted yet. It holds only running sessions: the cost is at most stop_at keys.
        """
        S = self._session

        def count() -> int:
            with translate_errors():
                return S.running_by_owner.count(owner_id, S.createdAt >= created_since,
                                                limit=stop_at)

        return self._read(count, f"owner {owner_id}: count running sessions")

    def request_cancel(self, session_id: str, conversation_deleted: bool = False) -> None:
        """Mark a running session for cancellation (and, when its conversation was deleted,
        as gone to readers); a finished one is left unchanged."""
        S = self._session
        actions = [S.cancelRequested.set(True), S.updatedAt.set(clock.now_iso())]
        if conversation_deleted:
            actions.append(S.conversationDeleted.set(True))

        def mark() -> None:
            with translate_errors():
                S(session_id).update(actions=actions, condition=S.status == RUNNING)

        try:
            call_with_retries(mark, self._quick, f"session {session_id}: request cancel",
                              self._sleep)
        except ConditionFailed:
            pass

    # -- the run --------------------------------------------------------------

    def claim_lease(self, session_id: str, attempt_id: str) -> SessionRecord | None:
        """Make attempt_id the session's only writer; None if it was claimed before or ended."""
        S = self._session
        now = clock.now_ms()
        lease_until = now + self._settings.lease_seconds * 1000
        session = S(session_id)

        def claim() -> None:
            with translate_errors():
                session.update(
                    actions=[S.attemptId.set(attempt_id), S.leaseUntil.set(lease_until),
                             S.reapAt.set(lease_until), S.updatedAt.set(clock.iso_from_ms(now))],
                    # Only the first delivery claims: a redelivered invocation is a no-op, a
                    # cancelled or ended session is never run, and a run whose attempt died is
                    # the reaper's to end, not to rerun.
                    condition=S.attemptId.does_not_exist() & (S.status == RUNNING))

        try:
            call_with_retries(claim, self._run_writes, f"session {session_id}: claim",
                              self._sleep)
        except ConditionFailed:
            # A try whose answer was lost may have claimed it for this very attempt.
            current = self.get(session_id)
            if current is not None and current.attempt_id == attempt_id and current.is_running:
                return current
            return None
        return _session_record(session)

    def append(self, session_id: str, fence: Fence, events: Sequence[EventRecord],
               usage: TokenUsage, renew_index: bool = False) -> None:
        """Append events after the session's last seq and renew the lease, all or nothing.

        With renew_index, the session's place in the reaper's index moves too (a GSI write,
        so the writer asks for it only every LEASE_INDEX_SECONDS). Raises CancelRequested if
        the owner asked to stop (nothing is written then), LeaseLost if this attempt no longer
        owns the session.
        """
        now = clock.now_ms()
        S = self._session
        lease_until = now + self._settings.lease_seconds * 1000
        actions = [
            S.leaseUntil.set(lease_until),
            S.updatedAt.set(clock.iso_from_ms(now)),
            S.inputTokens.set(usage.input_tokens),
            S.outputTokens.set(usage.output_tokens),
        ]
        if renew_index:
            actions.append(S.reapAt.set(lease_until))
        condition = self._fence_condition(fence, now) & (
            S.cancelRequested.does_not_exist() | (S.cancelRequested == False)  # noqa: E712
        )
        if events:
            actions.append(S.lastSeq.set(events[-1].seq))
            condition &= S.lastSeq == events[0].seq - 1
        self._write_run(session_id, fence, actions, condition, events)

    def finish(self, session: SessionRecord, fence: Fence, pending: Sequence[EventRecord],
               ending: RunEnding) -> None:
        """Write the pending events, the terminal event, the turn's ending and the final
        status in one transaction, and mark the conversation's turn as over.

        Raises LeaseLost if the fence no longer holds; a cancel request does not stop it.
        """
        now = clock.now_ms()
        finished = clock.iso_from_ms(now)
        S, C, E = self._session, self.models.conversation, self.models.ending
        terminal = ending.terminal_event
        if terminal.content is not None:  # an error's message, which a provider wrote
            terminal = replace(terminal, content=truncate_utf8(
                terminal.content, self._settings.max_error_bytes))
        events = [*pending, terminal]
        error = (None if ending.error is None
                 else truncate_utf8(ending.error, self._settings.max_error_bytes))
        actions = [
            S.status.set(ending.status),
            S.lastSeq.set(terminal.seq),
            S.updatedAt.set(finished),
            S.finishedAt.set(finished),
            S.inputTokens.set(ending.usage.input_tokens),
            S.outputTokens.set(ending.usage.output_tokens),
            S.leaseShard.remove(),
            S.reapAt.remove(),
            S.runOwner.remove(),
        ]
        if error is not None:
            actions.append(S.error.set(error))
        condition = self._fence_condition(fence, now) & (S.lastSeq == events[0].seq - 1)
        turn_ending = E(
            session.conversation_id, ending_key(session.created_at, session.id),
            sessionId=session.id, status=ending.status, error=error, finishedAt=finished,
            answer=truncate_utf8(ending.answer, self._settings.max_answer_bytes) or None,
            inputTokens=ending.usage.input_tokens, outputTokens=ending.usage.output_tokens,
            expiresAt=_expiry(now, self._settings.retention_days),
        )
        conversation_actions = [
            C.lastStatus.set(ending.status), C.updatedAt.set(finished),
            C.runningSessionId.remove(),
        ]
        extra = [
            # Unconditioned: nothing may stop a run from ending. The conversation's row is only
            # purged once none of its turns runs, so this never recreates a deleted one.
            lambda t: t.update(C(session.conversation_id, CONVERSATION_ITEM),
                               actions=conversation_actions),
            lambda t: t.save(turn_ending, condition=E.item.does_not_exist()),
        ]
        self._write_run(session.id, fence, actions, condition, events, extra, ending.status)

    def _fence_condition(self, fence: Fence, now_ms: int) -> Any:
        S = self._session
        if fence.lease_expired:
            return (S.status == RUNNING) & (S.leaseUntil < now_ms)
        if fence.attempt_id is None:
            return S.attemptId.does_not_exist() & (S.status == RUNNING)
        return (S.attemptId == fence.attempt_id) & (S.status == RUNNING) & (S.leaseUntil >= now_ms)

    def _write_run(self, session_id: str, fence: Fence, actions: list[Any], condition: Any,
                   events: Sequence[EventRecord],
                   extra: Sequence[Callable[[Any], None]] = (), status: str = RUNNING) -> None:
        # Built once: every try sends the same items (expiry included) with the same token.
        items = [self._event_item(event) for event in events]
        S, E = self._session, self._event

        def build(transaction: Any) -> None:
            transaction.update(S(session_id), actions=actions, condition=condition)
            for item in items:
                transaction.save(item, condition=E.seq.does_not_exist())
            for add in extra:
                add(transaction)

        try:
            transact_write(self._connection(), build, self._run_writes,
                           f"session {session_id}: write", self._sleep)
        except ConditionFailed:
            raise self._why_rejected(session_id, fence) from None
        if events:
            PROCESS_CHANGES.announce(session_id, events[-1].seq, status, events)

    def _why_rejected(self, session_id: str, fence: Fence) -> Exception:
        """Return CancelRequested or LeaseLost for a fenced write that was refused."""
        session = self.get(session_id)
        still_ours = (
            session is not None
            and session.is_running
            and session.attempt_id == fence.attempt_id
            and (session.lease_until_ms or 0) >= clock.now_ms()
        )
        if still_ours and session is not None and session.cancel_requested:
            return CancelRequested(f"Session {session_id} was cancelled")
        if fence.attempt_id is None:
            logger.info("session %s: a run holds it, or it ended, since it was read", session_id)
        else:
            logger.warning("session %s: write by attempt %s refused; the lease is lost",
                           session_id, fence.attempt_id)
        return LeaseLost(f"Attempt {fence.attempt_id} no longer owns session {session_id}")

    # -- the reaper's queue ---------------------------------------------------

    def expired_runs(self, per_shard: int = 25) -> list[str]:
        """Return ids of running sessions the reaper may end, oldest first in each shard.

        The index is keyed on `reapAt`, which trails the lease by up to LEASE_INDEX_SECONDS;
        the ending itself is conditioned on the lease having run out.
        """
        S = self._session
        now = clock.now_ms()
        found: list[str] = []
        for shard in range(LEASE_SHARDS):
            def query(name: str = f"s{shard:02d}") -> list[str]:
                with translate_errors():
                    return [item.id for item in S.leases_by_shard.query(
                        name, range_key_condition=S.reapAt < now, limit=per_shard)]
            found += self._read(query, "reaper: list expired leases")
        return found

    def defer_reaping(self, session_id: str, failures: int, retry_at_ms: int | None) -> None:
        """Move a session the reaper could not end back in its queue, or (retry_at_ms None)
        out of the queue altogether (set aside)."""
        S = self._session
        actions = [S.reapFailures.set(failures)]
        actions += ([S.reapAt.set(retry_at_ms)] if retry_at_ms is not None
                    else [S.leaseShard.remove(), S.reapAt.remove()])

        def update() -> None:
            with translate_errors():
                S(session_id).update(actions=actions, condition=S.status == RUNNING)

        try:
            call_with_retries(update, self._quick, f"session {session_id}: defer reaping",
                              self._sleep)
        except ConditionFailed:
            pass  # it ended meanwhile

    # -- events ---------------------------------------------------------------

    def watch(self, session_id: str) -> ContextManager[SessionWatch]:
        """Hear of this process's writes that add events to the session (long-polls)."""
        return PROCESS_CHANGES.watch(session_id)

    def events_after(self, session_id: str, after: int, limit: int, last_seq: int) -> EventPage:
        """Return up to `limit` events with after < seq <= last_seq, oldest first.

        `last_seq` is the session's lastSeq as read just before: every event up to it is
        committed. A Query is only read-committed against a transaction in flight, so it
        could return seq 5 without seq 4; the page therefore stops at the first gap, and
        `has_more` says whether events up to last_seq are left for the next page.
        """
        E = self._event
        if last_seq <= after:
            return EventPage(events=(), has_more=False)
        upper = min(last_seq, after + limit)

        def query() -> list[Any]:
            with translate_errors():
                return list(E.query(session_id, range_key_condition=E.seq.between(after + 1, upper),
                                    consistent_read=True, limit=limit, page_size=limit))

        events: list[EventRecord] = []
        for item in self._read(query, f"session {session_id}: read events"):
            record = _event_record(item)
            if record.seq != after + len(events) + 1 or clock.is_past(_epoch(item.expiresAt)):
                break
            events.append(record)
        last = events[-1].seq if events else after
        return EventPage(events=tuple(events), has_more=last < last_seq)

    def delete_session(self, session_id: str) -> None:
        """Delete a session's events and then its row (the purge of a deleted conversation)."""
        E, S = self._event, self._session

        def delete() -> None:
            with translate_errors():
                seqs = [int(item.seq) for item in E.query(session_id, attributes_to_get=["seq"])]
                with E.batch_write() as batch:
                    for seq in seqs:
                        batch.delete(E(session_id, seq))
                S(session_id).delete()

        self._read(delete, f"session {session_id}: delete")

    def _event_item(self, event: EventRecord) -> Any:
        usage = None
        if event.usage is not None:
            usage = {
                "inputTokens": event.usage.input_tokens,
                "outputTokens": event.usage.output_tokens,
                "totalTokens": event.usage.total_tokens,
            }
        return self._event(
            event.session_id, event.seq, eventType=event.event_type, content=event.content,
            toolName=event.tool_name, toolCallId=event.tool_call_id, toolInput=event.tool_input,
            usage=usage, createdAt=event.created_at,
            expiresAt=_expiry(clock.now_ms(), self._settings.retention_days),
        )

    # -- plumbing -------------------------------------------------------------

    def _connection(self) -> Any:
        return self._session._get_connection().connection

    def _read(self, operation: Callable[[], Any], what: str) -> Any:
        return call_with_retries(operation, self._quick, what, self._sleep)


def _expiry(now_ms: int, retention_days: int) -> datetime:
    return datetime.fromtimestamp(now_ms // 1000 + retention_days * 86_400, tz=timezone.utc)


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())




def _session_record(item: Any) -> SessionRecord:
    return SessionRecord(
        id=item.id,
        owner_id=item.ownerId,
        conversation_id=item.conversationId,
        status=item.status,
        model=item.model,
        created_at=item.createdAt,
        updated_at=item.updatedAt,
        title=item.title,
        finished_at=item.finishedAt,
        usage=TokenUsage(int(item.inputTokens or 0), int(item.outputTokens or 0)),
        last_seq=int(item.lastSeq or 0),
        error=item.error,
        attempt_id=item.attemptId,
        lease_until_ms=None if item.leaseUntil is None else int(item.leaseUntil),
        reap_failures=int(item.reapFailures or 0),
        cancel_requested=bool(item.cancelRequested),
        conversation_deleted=bool(item.conversationDeleted),
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

