"""ChatService: what each HTTP route does, with no HTTP in it."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from chalicelib import clock
from chalicelib.cursor import decode_cursor, encode_cursor
from chalicelib.dispatch import Dispatcher
from chalicelib.errors import (
    DispatchFailed,
    IdempotencyConflict,
    LeaseLost,
    SessionNotFound,
    TooManyRunningSessions,
)
from chalicelib.providers import ProviderRegistry
from chalicelib.records import (
    ERROR,
    EventPage,
    EventRecord,
    NewSession,
    RunEnding,
    SessionRecord,
)
from chalicelib.settings import Settings
from chalicelib.store import Fence, SessionExists, SessionStore
from chalicelib.validation import (
    StartRequest,
    parse_events_query,
    parse_idempotency_key,
    parse_list_query,
    parse_start_request,
)
from chalicelib.views import event_view, session_view

logger = logging.getLogger(__name__)

DISPATCH_ERROR = "The run could not be started (the background worker did not accept it)."
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Text per events page: JSON escaping can make a character 6 bytes; 6 MB is Lambda's limit.
MAX_PAGE_TEXT_CHARS = 500_000
# A Lambda invocation lasts at most 15 minutes.
MAX_RUN_SECONDS = 900
# How often a long-poll re-reads the store while it waits: often when runs write from other
# processes (deployed, Lambda dispatch), seldom when they run in this one and announce
# their writes (local server, tests): the announcement wakes the long-poll at once.
LONG_POLL_INTERVAL = 0.1
LOCAL_LONG_POLL_INTERVAL = 1.0
NO_EVENTS = EventPage(events=(), has_more=False)


def new_session_id() -> str:
    """Return a random, unguessable session id (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def _fit_page(events: Sequence[EventRecord], has_more: bool) -> tuple[Sequence[EventRecord], bool]:
    """Cut a page so its JSON stays far below Lambda's 6 MB response limit."""
    size = 0
    for index, event in enumerate(events):
        size += len(event.content or "") + len(json.dumps(event.tool_input or {}))
        if size > MAX_PAGE_TEXT_CHARS and index > 0:
            return events[:index], True
    return events, has_more


def _start_view(session: SessionRecord) -> dict[str, Any]:
    return {"sessionId": session.id, "status": session.status, "model": session.model,
            "createdAt": session.created_at}


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
    """The cancel route's answer: the body, and whether a running session was asked to stop."""

    body: dict[str, Any]
    accepted: bool


class ChatService:
    """Start, read, list and cancel sessions on behalf of an owner."""

    def __init__(self, settings: Settings, store: SessionStore, dispatcher: Dispatcher,
                 providers: ProviderRegistry,
                 new_id: Callable[[], str] = new_session_id) -> None:
        self._settings = settings
        self._store = store
        self._dispatcher = dispatcher
        self._providers = providers
        self._new_id = new_id
        self._poll_interval = (LONG_POLL_INTERVAL if settings.dispatch_mode == "lambda"
                               else LOCAL_LONG_POLL_INTERVAL)

    def start(self, owner_id: str, raw_body: bytes | None,
              idempotency_key: str | None = None) -> dict[str, Any]:
        """Store a new session, hand it to the orchestrator and return at once.

        With an idempotency key, a retried start returns the first session instead of
        starting a second run (the session id is derived from the owner and the key).
        """
        key = parse_idempotency_key(idempotency_key)
        request = parse_start_request(raw_body, self._settings)
        model = request.model or self._settings.default_model
        self._providers.resolve(model)
        new = NewSession(
            id=_idempotent_id(owner_id, key) if key else self._new_id(),
            owner_id=owner_id,
            model=model,
            message=request.message,
            history=request.history,
            title=request.title,
            conversation_id=request.conversation_id,
            idempotency_key=key,
            request_hash=_request_hash(request, model) if key else None,
        )
        if key and self._store.get(new.id) is not None:
            return _start_view(self._replayed(new))
        self._check_running_cap(owner_id)
        try:
            session = self._store.create(new)
        except SessionExists:
            if not key:
                # 128 random bits do not collide; a repeat means the id source is broken.
                raise RuntimeError(f"session id {new.id} is already taken") from None
            session = self._replayed(new)
        else:
            self._dispatch(session)
        return _start_view(session)

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

    def _replayed(self, new: NewSession) -> SessionRecord:
        """Return the session a retried start refers to; the run is not dispatched again."""
        existing = self._store.get(new.id)
        if existing is None:
            raise IdempotencyConflict(
                "this Idempotency-Key belonged to a session that has expired; use a new key"
            )
        if existing.owner_id != new.owner_id or existing.request_hash != new.request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body"
            )
        return existing

    def get(self, owner_id: str, session_id: str) -> dict[str, Any]:
        """Return the caller's session."""
        return session_view(self._owned(owner_id, session_id))

    def events(self, owner_id: str, session_id: str,
               params: Mapping[str, str] | None) -> dict[str, Any]:
        """Return events after a seq; with wait, hold the request until something changes."""
        query = parse_events_query(params)
        deadline = time.monotonic() + query.wait
        with self._store.watch(session_id) as watch:
            while True:
                seen = watch.writes()
                # The status is read before the events: a terminal status with hasMore false
                # then guarantees the page holds the terminal event.
                session = self._owned(owner_id, session_id)
                # lastSeq is written in the same transaction as the events: when it is not
                # past `after` there is nothing to query (an idle poll costs one read).
                page = (self._store.events_after(session_id, query.after, query.limit)
                        if session.last_seq > query.after else NO_EVENTS)
                if page.events or not session.is_running or time.monotonic() >= deadline:
                    break
                watch.wait(seen, min(self._poll_interval, max(0.0, deadline - time.monotonic())))
        events, has_more = _fit_page(page.events, page.has_more)
        return {
            "sessionId": session_id,
            "status": session.status,
            "events": [event_view(event) for event in events],
            "lastSeq": events[-1].seq if events else query.after,
            "hasMore": has_more,
        }

    def list(self, owner_id: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        """Return the caller's sessions, newest first, and the cursor of the next page."""
        query = parse_list_query(params)
        start = decode_cursor(query.cursor, owner_id) if query.cursor else None
        page = self._store.list_by_owner(owner_id, query.limit, start)
        return {
            "sessions": [session_view(s, include_answer=False) for s in page.sessions],
            "nextCursor": encode_cursor(page.next_key) if page.next_key else None,
        }

    def cancel(self, owner_id: str, session_id: str) -> CancelOutcome:
        """Ask a running session to stop; a finished one is returned unchanged."""
        session = self._owned(owner_id, session_id)
        if not session.is_running:
            return CancelOutcome({"id": session.id, "status": session.status}, accepted=False)
        self._store.request_cancel(session_id)
        current = self._owned(owner_id, session_id)
        return CancelOutcome({"id": current.id, "status": current.status},
                             accepted=current.is_running)

    def health(self) -> dict[str, Any]:
        """Return ok if both tables answer."""
        self._store.ping()
        return {"status": "ok"}

    def _owned(self, owner_id: str, session_id: str) -> SessionRecord:
        # Ids are URL-safe base64; anything else (empty, too long) names no session, and
        # DynamoDB would refuse it as a key.
        if not SESSION_ID_PATTERN.fullmatch(session_id):
            raise SessionNotFound(session_id[:64])
        session = self._store.get(session_id)
        # Another owner's session is answered exactly like an unknown one.
        if session is None or session.owner_id != owner_id:
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
            self._store.finish(session.id, Fence.unclaimed(), [], ending)
        except LeaseLost:
            # A run did start after all and owns the session now.
            logger.warning("session %s: dispatch reported failure but a run claimed it",
                           session.id)
