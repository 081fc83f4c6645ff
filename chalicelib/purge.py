"""The purge removes deleted conversations from the tables: their turns, sessions and events.

Deleting a conversation hides it at once (chalicelib/conversations.py marks it); the purge
does the removal later, in the background (the reaper's schedule), so a delete answers at
once however long the conversation is. A conversation whose turn is still running waits for
the next pass: the delete cancelled that turn, and if its run is dead the reaper ends it.
"""
from __future__ import annotations

import logging

from chalicelib.conversations import ConversationStore
from chalicelib.models import CONVERSATION_ITEM, TURN_PREFIX
from chalicelib.store import SessionStore

logger = logging.getLogger(__name__)

# Conversations removed per pass: each costs a few requests per turn.
CONVERSATIONS_PER_PASS = 20


class Purger:
    """Removes deleted conversations and everything that belongs to them."""

    def __init__(self, sessions: SessionStore, conversations: ConversationStore) -> None:
        self._sessions = sessions
        self._conversations = conversations

    def purge(self) -> list[str]:
        """Remove the deleted conversations whose turns have all ended; return their ids."""
        removed = []
        for conversation_id in self._conversations.queued_for_purge(CONVERSATIONS_PER_PASS):
            try:
                if self._remove(conversation_id):
                    removed.append(conversation_id)
            except Exception:
                logger.exception("conversation %s: the purge failed; it tries again later",
                                 conversation_id)
        return removed

    def _remove(self, conversation_id: str) -> bool:
        keys = self._conversations.partition_keys(conversation_id)
        session_ids = sorted({key.split("#")[2] for key in keys if key.startswith(TURN_PREFIX)})
        sessions = self._sessions.get_many(session_ids)
        if any(session.is_running for session in sessions.values()):
            logger.info("conversation %s: a turn still runs; purged on a later pass",
                        conversation_id)
            return False
        for session_id in session_ids:
            self._sessions.delete_session(session_id)
        # The conversation's row goes last: until then the conversation stays in the queue.
        self._conversations.delete_items(conversation_id,
                                         [k for k in keys if k != CONVERSATION_ITEM])
        self._conversations.delete_items(conversation_id, [CONVERSATION_ITEM])
        logger.info("conversation %s: purged (%d turns)", conversation_id, len(session_ids))
        return True
