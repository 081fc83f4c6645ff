"""ChatService: what each session route does (start, read, follow, list, cancel), with no HTTP."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from chalicelib import clock
from chalicelib.conversations import ConversationStore
from chalicelib.cursor import CursorCodec
from chalicelib.dispatch import Dispatcher
from chalicelib.dynamo import extend_route_deadline
from chalicelib.errors import (
    ConversationBusy,
    ConversationNotFound,
    DispatchFailed,
    IdempotencyConflict,
    LeaseLost,
    SessionNotFound,
    TooManyRunningSessions,
)
from chalicelib.providers import ProviderRegistry
from chalicelib.records import (
    CANCELLED,
    ERROR,
    EventRecord,
    NewSession,
    RunEnding,
    SessionRecord,
)
from chalicelib.settings import Settings
from chalicelib.store import ConversationUnavailable, Fence, SessionExists, SessionStore
from chalicelib.validation import (
    ID_PATTERN,
    StartRequest,
    parse_events_query,
    parse_idempotency_key,
    parse_list_query,
    parse_start_request,
)
from chalicelib.views import event_view, json_size, session_view, start_view

logger = logging.getLogger(__name__)

DISPATCH_ERROR = "The run could not be started (the background worker did not accept it)."
# An events page's JSON stays below this; Lambda's response limit is 6 MB.
MAX_PAGE_BYTES = 5_000_000
# A Lambda invocation lasts at most 15 minutes.
MAX_RUN_SECONDS = 900
# How often a long-poll re-reads the store while it waits: often when runs write from other
# processes (deployed, Lambda dispatch), seldom when they run in this one and announce
# their writes (local server, tests): the announcement wakes the long-poll at once.
LONG_POLL_INTERVAL = 0.1
LOCAL_LONG_POLL_INTERVAL = 1.0
TITLE_CHARS = 60
SESSIONS_LIST = "sessions"
BAD_SESSIONS_CURSOR = "omit it to start from the newest session"


def new_id() -> str:
    """Return a random, unguessable id (128 bits, URL-safe): sessions and conversations."""
    return secrets.token_urlsafe(16)


def title_from(message: str) -> str:
    """Return a conversation title from its first message: first line, at most 60 characters."""
    line = message.strip().split("\n")[0].strip()
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1] + "…"


def fit_page(views: Sequence[dict[str, Any]], max_bytes: int | None = None) -> int:
    """Return how many of the views fit in a response of max_bytes (MAX_PAGE_BYTES by
    default; always at least one)."""
    max_bytes = MAX_PAGE_BYTES if max_bytes is None else max_bytes
    size = 0
    for index, view in enumerate(views):
        size += json_size(view) + 1
        if size > max_bytes and index > 0:
            return index
    return len(views)


def _idempotent_id(owner_id: str, key: str) -> str:
    digest = hashlib.sha256(f"{owner_id}\n{key}".encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")


def _request_hash(request: StartRequest, model: str) -> str:
    canonical = json.dumps(
        [request.message, [[t.role, t.content] for t in request.history], model,
         request.conversation_id, request.title],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CancelOutcome:
    """The cancel route's answer: the body, and whether this request stopped a running session."""

    body: dict[str, Any]
    accepted: bool


class ChatService:
    """Start, read, follow, list and cancel sessions on behalf of an owner."""

    def __init__(self, settings: Settings, store: SessionStore, conversations: ConversationStore,
                 dispatcher: Dispatcher, providers: ProviderRegistry,
                 new_id: Callable[[], str] = new_id) -> None:
        self._settings = settings
        self._store = store
        self._conversations = conversations
        self._dispatcher = dispatcher
        self._providers = providers
        self._new_id = new_id
        self._cursors = CursorCodec(settings.cursor_secret)
        self._poll_interval = (LONG_POLL_INTERVAL if settings.dispatch_mode == "lambda"
                               else LOCAL_LONG_POLL_INTERVAL)

    def start(self, owner_id: str, raw_body: bytes | None,
              idempotency_key: str | None = None) -> dict[str, Any]:
        """Store a new session as a turn of a conversation, hand it to the orchestrator and
        return at once.

        With an idempotency key, a retried start returns the first session instead of
        starting a second run (the session id is derived from the owner and the key).
        """
        key = parse_idempotency_key(idempotency_key)
        request = parse_start_request(raw_body, self._settings)
        model = request.model or self._settings.default_model
        self._providers.resolve(model)
        session_id = _idempotent_id(owner_id, key) if key else self._new_id()
        request_hash = _request_hash(request, model) if key else None
        if key and self._store.get(session_id) is not None:
            return start_view(self._replayed(session_id, owner_id, request_hash))
        if request.conversation_id is None:
            conversation_id, title, opens = self._new_id(), request.title, True
            title = title or title_from(request.message)
        else:
            conversation = self._open_conversation(owner_id, request.conversation_id)
            conversation_id, title, opens = conversation.id, conversation.title, False
        self._check_running_cap(owner_id)
        new = NewSession(
            id=session_id, owner_id=owner_id, model=model, message=request.message,
            conversation_id=conversation_id, title=title, history=request.history,
            idempotency_key=key, request_hash=request_hash, new_conversation=opens,
        )
        try:
            session = self._store.create(new)
        except SessionExists:
            if not key:
                # 128 random bits do not collide; a repeat means the id source is broken.
                raise RuntimeError(f"session id {new.id} is already taken") from None
            return start_view(self._replayed(session_id, owner_id, request_hash))
        except ConversationUnavailable:
            # Another start or a delete won the race since the check above: say which.
            self._open_conversation(owner_id, conversation_id)
            raise ConversationBusy(self._busy_message()) from None
        self._dispatch(session)
        return start_view(session)

    def _open_conversation(self, owner_id: str, conversation_id: str) -> Any:
        """Return the owner's conversation that may take a new turn; 404 or 409 otherwise."""
        conversation = self._conversations.owned(conversation_id, owner_id)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        running = conversation.running_session_id
        if running is not None:
            session = self._store.get(running)
            if session is not None and session.is_running:
                raise ConversationBusy(self._busy_message())
            # Its running turn is gone (expired with a run set aside as unendable): let the
            # conversation go on rather than refuse every turn from now on.
            self._conversations.clear_running(conversation_id, running)
        return conversation

    @staticmethod
    def _busy_message() -> str:
        return ("a turn of this conversation is still running; wait for it to end or cancel it "
                "before sending the next message")

    def _check_running_cap(self, owner_id: str) -> None:
        cap = self._settings.max_running_per_owner
        # No run lasts longer than this, so older sessions need not be counted.
        window_ms = (self._settings.claim_timeout_seconds + MAX_RUN_SECONDS
                     + self._settings.lease_seconds) * 1000
        since = clock.iso_from_ms(clock.now_ms() - window_ms)
        if self._store.count_running(owner_id, since, stop_at=cap) >= cap:
            raise TooManyRunningSessions(
                f"You already have {cap} sessions running; wait for one to finish or cancel one"
            )

    def _replayed(self, session_id: str, owner_id: str,
                  request_hash: str | None) -> SessionRecord:
        """Return the session a retried start refers to; the run is not dispatched again."""
        existing = self._store.get(session_id)
        if existing is None:
            raise IdempotencyConflict(
                "this Idempotency-Key belonged to a session that has expired; use a new key"
            )
        if existing.owner_id != owner_id or existing.request_hash != request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body"
            )
        conversation = self._conversations.get(existing.conversation_id)
        if conversation is None or conversation.deleted:
            raise IdempotencyConflict(
                "this Idempotency-Key belonged to a session whose conversation was deleted; "
                "use a new key"
            )
        return existing

    def get(self, owner_id: str, session_id: str) -> dict[str, Any]:
        """Return the caller's session, with its answer once it has ended."""
        session = self.owned(owner_id, session_id)
        answer = None
        if not session.is_running:
            ending = self._conversations.ending(session.conversation_id, session.created_at,
                                                session.id)
            answer = ending.answer if ending is not None else ""
        return session_view(session, answer)

    def events(self, owner_id: str, session_id: str,
               params: Mapping[str, str] | None) -> dict[str, Any]:
        """Return events after a seq; with wait, hold the request until something changes.

        The status is read before the events, and the events only up to the lastSeq read with
        it: a terminal status with hasMore false then guarantees the page holds the terminal
        event. The whole request is bounded: `wait`, then at most one more round of reads.
        """
        query = parse_events_query(params)
        restore_deadline = extend_route_deadline(query.wait)
        try:
            deadline = time.monotonic() + query.wait
            with self._store.watch(session_id) as watch:
                seen = watch.writes()
                session = self.owned(owner_id, session_id)
                while True:
                    # Events this process wrote and announced need no read (the local stack).
                    page = (watch.events_after(query.after, query.limit, session.last_seq)
                            or self._store.events_after(session_id, query.after, query.limit,
                                                        session.last_seq))
                    remaining = deadline - time.monotonic()
                    if page.events or not session.is_running or remaining <= 0:
                        break
                    watch.wait(seen, min(self._poll_interval, remaining))
                    announced = watch.writes() != seen
                    if time.monotonic() >= deadline and not announced:
                        break  # the wait is over and nothing was announced: answer now
                    seen = watch.writes()
                    session = self._refreshed(session, watch.state() if announced else None)
        finally:
            restore_deadline()
        views = [event_view(event) for event in page.events]
        count = fit_page(views)
        events = page.events[:count]
        return {
            "sessionId": session_id,
            "status": session.status,
            "events": views[:count],
            "lastSeq": events[-1].seq if events else query.after,
            "hasMore": page.has_more or count < len(views),
        }

    def _refreshed(self, session: SessionRecord,
                   announced: tuple[int, str] | None) -> SessionRecord:
        """Return the session as it is now: from a write this process announced (its lastSeq
        and status as committed), or read again."""
        if announced is not None and announced[0] >= session.last_seq:
            return replace(session, last_seq=announced[0], status=announced[1])
        return self._store.get(session.id) or session

    def list(self, owner_id: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        """Return the caller's sessions, newest first, and the cursor of the next page."""
        query = parse_list_query(params)
        start = (self._cursors.decode(query.cursor, SESSIONS_LIST, owner_id, BAD_SESSIONS_CURSOR)
                 if query.cursor else None)
        page = self._store.list_by_owner(owner_id, query.limit, start)
        live = self._conversations.get_many([s.conversation_id for s in page.sessions])
        sessions = [s for s in page.sessions
                    if s.conversation_id in live and not live[s.conversation_id].deleted]
        return {
            "sessions": [session_view(s, include_answer=False) for s in sessions],
            "nextCursor": (self._cursors.encode(SESSIONS_LIST, owner_id, page.next_key)
                           if page.next_key else None),
        }

    def cancel(self, owner_id: str, session_id: str) -> CancelOutcome:
        """Stop a running session; a finished one is returned unchanged."""
        session = self.owned(owner_id, session_id)
        if not session.is_running:
            return CancelOutcome({"id": session.id, "status": session.status}, accepted=False)
        self.stop(session)
        current = self._store.get(session_id) or session
        return CancelOutcome({"id": current.id, "status": current.status}, accepted=True)

    def stop(self, session: SessionRecord, conversation_deleted: bool = False) -> None:
        """End a session at once when no run holds it (not claimed yet: the model is never
        called; or its run stopped renewing its lease), else ask its run to stop (it ends
        `cancelled` at its next write) and, when its conversation was deleted, mark it gone
        to readers until then."""
        lease_over = (session.attempt_id is not None
                      and (session.lease_until_ms or 0) < clock.now_ms())
        if session.attempt_id is None or lease_over:
            ending = RunEnding(status=CANCELLED, usage=session.usage, terminal_event=EventRecord(
                session_id=session.id, seq=session.last_seq + 1, event_type=CANCELLED,
                created_at=clock.now_iso()))
            fence = Fence.expired() if lease_over else Fence.unclaimed()
            try:
                self._store.finish(session, fence, [], ending)
                logger.info("session %s: cancelled with no run holding it", session.id)
                return
            except LeaseLost:
                pass  # a run claimed it (or renewed its lease) meanwhile: ask it to stop
        self._store.request_cancel(session.id, conversation_deleted)

    def health(self) -> dict[str, Any]:
        """Return ok if every table answers."""
        self._store.ping()
        return {"status": "ok"}

    def owned(self, owner_id: str, session_id: str) -> SessionRecord:
        """Return the caller's session; SessionNotFound if unknown, another owner's, or its
        conversation was deleted (all answered alike, so ids cannot be probed).

        A running session is marked when its conversation is deleted (the delete stops it),
        so only an ended one needs its conversation read: polls, nearly all of them of
        running sessions, cost one read less.
        """
        if not ID_PATTERN.fullmatch(session_id):
            raise SessionNotFound(session_id)
        session = self._store.get(session_id)
        if session is None or session.owner_id != owner_id or session.conversation_deleted:
            raise SessionNotFound(session_id)
        if not session.is_running:
            conversation = self._conversations.get(session.conversation_id)
            if conversation is None or conversation.deleted:
                raise SessionNotFound(session_id)
        return session

    def _dispatch(self, session: SessionRecord) -> None:
        try:
            self._dispatcher.dispatch(session.id)
        except DispatchFailed:
            self._end_undispatched(session)
            raise

    def _end_undispatched(self, session: SessionRecord) -> None:
        """End a session whose run never started as error, so it is never left running."""
        terminal = EventRecord(session_id=session.id, seq=session.last_seq + 1, event_type=ERROR,
                               created_at=clock.now_iso(), content=DISPATCH_ERROR)
        ending = RunEnding(status=ERROR, terminal_event=terminal, error=DISPATCH_ERROR)
        try:
            self._store.finish(session, Fence.unclaimed(), [], ending)
        except LeaseLost:
            # A run did start after all and owns the session now.
            logger.warning("session %s: dispatch reported failure but a run claimed it",
                           session.id)
