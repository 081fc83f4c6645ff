"""ConversationService: what each conversation route does (list, read, rename, delete)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from chalicelib.conversations import ConversationGone, ConversationStore
from chalicelib.cursor import CursorCodec
from chalicelib.errors import ConversationNotFound
from chalicelib.models import ending_key
from chalicelib.records import ConversationRecord
from chalicelib.service import MAX_PAGE_BYTES, ChatService, fit_page
from chalicelib.settings import Settings
from chalicelib.store import SessionStore
from chalicelib.validation import (
    DEFAULT_TURNS_LIMIT,
    ID_PATTERN,
    parse_list_query,
    parse_rename_request,
)
from chalicelib.views import conversation_view, turn_view

logger = logging.getLogger(__name__)

CONVERSATIONS_LIST = "conversations"
TURNS_LIST = "turns"


class ConversationService:
    """List, read, rename and delete an owner's conversations."""

    def __init__(self, settings: Settings, store: SessionStore, conversations: ConversationStore,
                 chat: ChatService) -> None:
        self._settings = settings
        self._store = store
        self._conversations = conversations
        self._chat = chat
        self._cursors = CursorCodec(settings.cursor_secret)

    def list(self, owner_id: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        """Return the caller's conversations, most recently active first."""
        query = parse_list_query(params)
        start = (self._cursors.decode(query.cursor, CONVERSATIONS_LIST, owner_id,
                                      "omit it to start from the most recent conversation")
                 if query.cursor else None)
        page = self._conversations.list_by_owner(owner_id, query.limit, start)
        return {
            "conversations": [conversation_view(c) for c in page.conversations],
            "nextCursor": (self._cursors.encode(CONVERSATIONS_LIST, owner_id, page.next_key)
                           if page.next_key else None),
        }

    def get(self, owner_id: str, conversation_id: str,
            params: Mapping[str, str] | None) -> dict[str, Any]:
        """Return the caller's conversation and a page of its turns, oldest first."""
        query = parse_list_query(params, default_limit=DEFAULT_TURNS_LIMIT)
        conversation = self._owned(owner_id, conversation_id)
        # The cursor is bound to the conversation too: a turn position means nothing elsewhere.
        scope = f"{owner_id}\n{conversation_id}"
        start = (self._cursors.decode(query.cursor, TURNS_LIST, scope,
                                      "omit it to start from the first turn")
                 if query.cursor else None)
        page = self._conversations.turns(conversation_id, query.limit, start,
                                         max_text_bytes=MAX_PAGE_BYTES)
        running = [turn.input.session_id for turn in page.turns if turn.ending is None]
        sessions = self._store.get_many(running) if running else {}
        views = [turn_view(turn, sessions.get(turn.input.session_id)) for turn in page.turns]
        count = fit_page(views)
        next_key = page.next_key
        if count < len(views):
            last = page.turns[count - 1].input
            next_key = {"conversationId": conversation_id,
                        "item": ending_key(last.created_at, last.session_id)}
        return {
            **conversation_view(conversation),
            "turns": views[:count],
            "nextCursor": (self._cursors.encode(TURNS_LIST, scope, next_key)
                           if next_key else None),
        }

    def rename(self, owner_id: str, conversation_id: str, raw_body: bytes | None) -> dict[str, Any]:
        """Give the caller's conversation a new title; return the conversation."""
        title = parse_rename_request(raw_body, self._settings)
        if not ID_PATTERN.fullmatch(conversation_id):
            raise ConversationNotFound(conversation_id)
        try:
            return conversation_view(self._conversations.rename(conversation_id, owner_id, title))
        except ConversationGone:
            raise ConversationNotFound(conversation_id) from None

    def delete(self, owner_id: str, conversation_id: str) -> None:
        """Delete the caller's conversation: gone for every reader at once, its running turn
        cancelled, its items removed from the tables by the purge soon after."""
        if not ID_PATTERN.fullmatch(conversation_id):
            raise ConversationNotFound(conversation_id)
        try:
            deleted = self._conversations.mark_deleted(conversation_id, owner_id)
        except ConversationGone:
            # Deleted already: a retried delete (the first may have failed after the mark)
            # still stops its running turn; anything else is not the caller's to delete.
            deleted = self._conversations.get(conversation_id)
            if deleted is None or deleted.owner_id != owner_id or not deleted.deleted:
                raise ConversationNotFound(conversation_id) from None
        logger.info("conversation %s: deleted by its owner", conversation_id)
        if deleted.running_session_id is not None:
            session = self._store.get(deleted.running_session_id)
            if session is not None and session.is_running:
                self._chat.stop(session, conversation_deleted=True)

    def _owned(self, owner_id: str, conversation_id: str) -> ConversationRecord:
        conversation = self._conversations.owned(conversation_id, owner_id)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        return conversation
