"""The purge removes deleted conversations from the tables: their turns, sessions and events.

Deleting a conversation hides it at once (chalicelib/conversations.py marks it); the purge
does the removal later, in the background (the reaper's schedule), so a delete answers at
once however long the conversation is. A conversation whose turn is still running waits for
the next pass: the delete cancelled that turn, and if its run is dead the reaper ends it.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from chalicelib.conversations import ConversationStore
from chalicelib.models import CONVERSATION_ITEM, TURN_PREFIX
from chalicelib.store import SessionStore

logger = logging.getLogger(__name__)

# Conversations looked at per pass, and how long a pass may take (the reaper's Lambda runs a
# minute at most, and reaps first).
CONVERSATIONS_PER_PASS = 20
PASS_SECONDS = 20.0


class Purger:
    """Removes deleted conversations and everything that belongs to them."""

    def __init__(self, sessions: SessionStore, conversations: ConversationStore,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._conversations = conversations
        self._monotonic = monotonic

    def purge(self, seconds: float = PASS_SECONDS) -> list[str]:
        """Remove the deleted conversations whose turns have all ended, within `seconds`;
        return their ids. A conversation not finished in time goes on at the next pass from
        where this one stopped."""
        deadline = self._monotonic() + seconds
        removed = []
        for conversation_id in self._conversations.queued_for_purge(CONVERSATIONS_PER_PASS):
            if self._monotonic() >= deadline:
                break
            try:
                if self._remove(conversation_id, deadline):
                    removed.append(conversation_id)
            except Exception:
                logger.exception("conversation %s: the purge failed; it tries again later",
                                 conversation_id)
        return removed

    def _remove(self, conversation_id: str, deadline: float) -> bool:
        keys = self._conversations.partition_keys(conversation_id)
        turns: dict[str, list[str]] = {}
        for key in keys:
            if key.startswith(TURN_PREFIX):
                turns.setdefault(key.split("#")[2], []).append(key)
        sessions = self._sessions.get_many(list(turns))
        if any(session.is_running for session in sessions.values()):
            logger.info("conversation %s: a turn still runs; purged on a later pass",
                        conversation_id)
            return False
        # Turn by turn, each with its session: a pass cut short keeps what it removed.
        for session_id, turn_keys in turns.items():
            if self._monotonic() >= deadline:
                logger.info("conversation %s: purge goes on at the next pass", conversation_id)
                return False
            self._sessions.delete_session(session_id)
            self._conversations.delete_items(conversation_id, turn_keys)
        # The conversation's row goes last: until then the conversation stays in the queue.
        self._conversations.delete_items(conversation_id, [CONVERSATION_ITEM])
        logger.info("conversation %s: purged (%d turns)", conversation_id, len(turns))
        return True
