"""The conversation store: conversations' rows and their turns' inputs and endings.

A conversation is one partition of the conversations table: its row (sort key
`conversation`), then for each turn, in time order, the turn's input (`turn#<createdAt>#<id>`)
and, once it has ended, the turn's ending (the same key plus `#end`). So the turns of a
conversation, oldest first or newest first, are one Query, billed by the bytes it returns.
The row holds the turn running now: starting a turn and ending it update it in the same
transactions as the session (chalicelib/store.py).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Sequence

from chalicelib import clock
from chalicelib.dynamo import (
    ConditionFailed,
    batch_get,
    call_with_retries,
    get_item,
    index_page,
    quick_retries,
    raw_key,
    translate_errors,
)
from chalicelib.models import (
    CONVERSATION_ITEM,
    ENDING_SUFFIX,
    PURGE_QUEUE,
    TURN_PREFIX,
    BoundModels,
    ending_key,
    turn_key,
)
from chalicelib.records import (
    ConversationPage,
    ConversationRecord,
    HistoryTurn,
    TokenUsage,
    Turn,
    TurnEnding,
    TurnInput,
    TurnPage,
)
from chalicelib.text import json_text_bytes
from chalicelib.validation import ID_PATTERN


# Items per page of the history Query: the first (consistent) one holds this turn's input and
# the previous turn's two items; the later ones are larger (a Query is billed by its bytes,
# rounded up to 4 KB once a page).
FIRST_HISTORY_PAGE_ITEMS = 3
HISTORY_PAGE_ITEMS = 32


class ConversationGone(Exception):
    """No such conversation for this owner (unknown, another owner's, or deleted)."""


class ConversationStore:
    """Conversations and their turns in DynamoDB."""

    def __init__(self, models: BoundModels, sleep: Callable[[float], None] = time.sleep,
                 on_throttle: Callable[[bool], None] | None = None) -> None:
        self._conversation = models.conversation
        self._turn_item = models.turn_item
        self._ending = models.ending
        self._sleep = sleep
        self._quick = quick_retries(on_throttle)

    # -- conversations --------------------------------------------------------

    def get(self, conversation_id: str) -> ConversationRecord | None:
        """Return the conversation's row (strongly consistent); None if unknown or expired.

        A deleted conversation is returned, marked `deleted`, until it is purged.
        """
        item = self._call(lambda: get_item(self._conversation, conversation_id, CONVERSATION_ITEM,
                                           consistent=True),
                          f"conversation {conversation_id}: read")
        return _conversation_record(item) if item is not None else None

    def owned(self, conversation_id: str, owner_id: str) -> ConversationRecord | None:
        """Return the owner's live conversation; None if the id names none (malformed,
        unknown, another owner's or deleted: one answer for all)."""
        conversation = (self.get(conversation_id) if ID_PATTERN.fullmatch(conversation_id)
                        else None)
        if conversation is None or conversation.owner_id != owner_id or conversation.deleted:
            return None
        return conversation

    def get_many(self, conversation_ids: Sequence[str]) -> dict[str, ConversationRecord]:
        """Return the live rows among these conversations, by id (strongly consistent)."""
        keys = [(cid, CONVERSATION_ITEM) for cid in dict.fromkeys(conversation_ids)]
        items = batch_get(self._conversation, keys, True, self._quick, self._sleep)
        records = (_conversation_record(item) for item in items)
        return {r.id: r for r in records if r is not None}

    def list_by_owner(self, owner_id: str, limit: int,
                      start_key: dict[str, str] | None = None) -> ConversationPage:
        """Return the owner's conversations, most recently active first.

        The order comes from the activity index (keys only); the rows are then read
        consistently, so a conversation deleted a moment ago is never listed.
        """
        page_keys, more = self._call(
            lambda: index_page(self._conversation.by_activity, owner_id, limit, start_key),
            f"owner {owner_id}: list conversations")
        rows = self.get_many([item.conversationId for item in page_keys])
        listed = tuple(rows[k.conversationId] for k in page_keys
                       if k.conversationId in rows and not rows[k.conversationId].deleted
                       and rows[k.conversationId].owner_id == owner_id)
        next_key = None
        if more:
            last = page_keys[-1]
            next_key = {"conversationId": last.conversationId, "item": CONVERSATION_ITEM,
                        "listOwner": owner_id, "updatedAt": last.updatedAt}
        return ConversationPage(conversations=listed, next_key=next_key)

    def rename(self, conversation_id: str, owner_id: str, title: str) -> ConversationRecord:
        """Set the title of the owner's live conversation; raise ConversationGone otherwise."""
        C = self._conversation
        return self._change_owned(conversation_id, owner_id, [C.title.set(title)], "rename")

    def mark_deleted(self, conversation_id: str, owner_id: str) -> ConversationRecord:
        """Hide the owner's conversation from every reader and queue it for the purge.

        Returns the row as it is after the change (its running turn included), so the caller
        can cancel that turn; raises ConversationGone if it is not the owner's live one.
        """
        C = self._conversation
        return self._change_owned(conversation_id, owner_id, [
            C.deletedAt.set(clock.now_iso()), C.purgeQueue.set(PURGE_QUEUE),
            C.listOwner.remove()], "delete")

    def clear_running(self, conversation_id: str, session_id: str) -> None:
        """Forget the conversation's running turn if it is still this (vanished) session."""
        C = self._conversation

        def update() -> None:
            with translate_errors():
                C(conversation_id, CONVERSATION_ITEM).update(
                    actions=[C.runningSessionId.remove()],
                    condition=C.runningSessionId == session_id)

        try:
            self._call(update, f"conversation {conversation_id}: clear a vanished turn")
        except ConditionFailed:
            pass  # another start or an ending changed it meanwhile

    def _change_owned(self, conversation_id: str, owner_id: str, actions: list[Any],
                      what: str) -> ConversationRecord:
        """Update the owner's live conversation's row; return it as changed."""
        C = self._conversation
        row = C(conversation_id, CONVERSATION_ITEM)

        def update() -> None:
            with translate_errors():
                row.update(actions=actions,
                           condition=(C.ownerId == owner_id) & C.deletedAt.does_not_exist())

        try:
            self._call(update, f"conversation {conversation_id}: {what}")
        except ConditionFailed:
            raise ConversationGone(conversation_id) from None
        record = _conversation_record(row)
        assert record is not None
        return record

    # -- turns ----------------------------------------------------------------

    def turns(self, conversation_id: str, limit: int,
              start_key: dict[str, str] | None = None,
              max_text_bytes: int | None = None) -> TurnPage:
        """Return up to `limit` turns, oldest first, and the position of the next page.

        With `max_text_bytes`, reading also stops once the turns' messages and answers, as
        JSON text, pass that size (the first turn is always returned): a page that a
        response could not hold is never read whole only to be cut.
        """
        items = self._partition_items(conversation_id, start_key, forward=True,
                                      page_size=2 * limit + 2)
        turns: list[Turn] = []
        more = False
        size = 0
        for item in items:
            if item.item.endswith(ENDING_SUFFIX):
                if turns and item.item == _input_key(turns[-1]) + ENDING_SUFFIX:
                    turns[-1] = Turn(turns[-1].input, _ending(item))
                    size += json_text_bytes(turns[-1].ending.answer)
                continue
            full = max_text_bytes is not None and size > max_text_bytes
            if len(turns) == limit or (turns and full):
                more = True
                break
            turns.append(Turn(_input(item)))
            size += json_text_bytes(item.message or "")
        next_key = None
        if more:
            last = turns[-1].input
            next_key = {"conversationId": conversation_id,
                        "item": ending_key(last.created_at, last.session_id)}
        return TurnPage(turns=tuple(turns), next_key=next_key)

    def turns_before(self, conversation_id: str, created_at: str,
                     session_id: str) -> Iterator[Turn]:
        """Yield the turn (created_at, session_id) and then the earlier ones, newest first.

        Lazy: the caller stops reading once it has the history it can use, so a long
        conversation costs only the turns that fit in the model's input. The first page (this
        turn's input and the previous turn's ending and input) is read strongly consistent: the
        previous turn may have ended a moment ago. Later pages are eventually consistent, at
        half the price: their items were written before the previous turn even started.
        """
        upper = turn_key(created_at, session_id)
        C = self._turn_item
        pending_ending: TurnEnding | None = None

        def page(start: dict | None) -> Any:
            first = start is None
            items = FIRST_HISTORY_PAGE_ITEMS if first else HISTORY_PAGE_ITEMS
            return C.query(conversation_id, C.item.between(TURN_PREFIX, upper),
                           scan_index_forward=False, consistent_read=first, limit=items,
                           page_size=items, last_evaluated_key=start)

        for item in self._pages(page, f"conversation {conversation_id}: read history"):
            if item.item.endswith(ENDING_SUFFIX):
                pending_ending = _ending(item)
                continue
            turn_input = _input(item)
            ending = (pending_ending if pending_ending is not None
                      and pending_ending.session_id == turn_input.session_id else None)
            pending_ending = None
            yield Turn(turn_input, ending)

    def ending(self, conversation_id: str, created_at: str, session_id: str) -> TurnEnding | None:
        """Return how a turn ended (strongly consistent), or None while it runs."""
        key = ending_key(created_at, session_id)
        item = self._call(lambda: get_item(self._ending, conversation_id, key, consistent=True),
                          f"session {session_id}: read the ending")
        return _ending(item) if item is not None else None

    # -- the purge ------------------------------------------------------------

    def queued_for_purge(self, limit: int) -> list[str]:
        """Return deleted conversations waiting to be purged, oldest deletion first."""
        C = self._conversation

        def query() -> list[str]:
            with translate_errors():
                return [item.conversationId
                        for item in C.to_purge.query(PURGE_QUEUE, limit=limit)]

        return self._call(query, "purge: list deleted conversations")

    def partition_keys(self, conversation_id: str) -> list[str]:
        """Return the sort keys of every item in the conversation's partition."""
        return [item.item for item in self._partition_items(conversation_id, None, True, 100,
                                                           attributes=["item"])]

    def delete_items(self, conversation_id: str, sort_keys: Sequence[str]) -> None:
        """Delete these items of the conversation's partition (batched)."""
        C = self._conversation

        def delete() -> None:
            with translate_errors():
                with C.batch_write() as batch:
                    for key in sort_keys:
                        batch.delete(C(conversation_id, key))

        self._call(delete, f"conversation {conversation_id}: purge items")

    # -- plumbing -------------------------------------------------------------

    def _partition_items(self, conversation_id: str, start_key: dict[str, str] | None,
                         forward: bool, page_size: int,
                         attributes: list[str] | None = None) -> Iterator[Any]:
        """Yield the turns' items (or, with `attributes`, every item) of the partition, lazily."""
        C = self._turn_item
        condition = C.item.startswith(TURN_PREFIX) if attributes is None else None

        def page(start: dict | None) -> Any:
            return C.query(conversation_id, condition, scan_index_forward=forward,
                           consistent_read=True, limit=page_size, page_size=page_size,
                           last_evaluated_key=start, attributes_to_get=attributes)

        return self._pages(page, f"conversation {conversation_id}: read turns",
                           raw_key(start_key))

    def _pages(self, query: Callable[[dict | None], Any], what: str,
               start: dict | None = None) -> Iterator[Any]:
        """Yield the items of a query one DynamoDB page at a time (never reading a page ahead
        of what the caller takes); a failed page is tried again from where the last one
        ended, so a retry never skips or repeats an item."""
        while True:
            def page(position: dict | None = start) -> tuple[list[Any], dict | None]:
                with translate_errors():
                    results = query(position)
                    raw = next(results.page_iter)
                    return ([self._turn_item.from_raw_data(item) for item in raw.get("Items", [])],
                            results.page_iter.last_evaluated_key)
            items, start = self._call(page, what)
            yield from items
            if not start:
                return

    def _call(self, operation: Callable[[], Any], what: str) -> Any:
        return call_with_retries(operation, self._quick, what, self._sleep)


def _input_key(turn: Turn) -> str:
    return turn_key(turn.input.created_at, turn.input.session_id)


def _conversation_record(item: Any) -> ConversationRecord | None:
    # An item without an owner is not a conversation anyone can see (see store.finish).
    expires = item.expiresAt
    if getattr(item, "ownerId", None) is None or (
            expires is not None and clock.is_past(int(expires.timestamp()))):
        return None
    return ConversationRecord(
        id=item.conversationId,
        owner_id=item.ownerId,
        title=item.title,
        created_at=item.createdAt,
        updated_at=item.updatedAt,
        turn_count=int(item.turnCount or 0),
        last_session_id=item.lastSessionId,
        last_status=item.lastStatus,
        running_session_id=item.runningSessionId,
        deleted=item.deletedAt is not None,
    )



def _input(item: Any) -> TurnInput:
    history = tuple(HistoryTurn(entry.role, entry.content) for entry in (item.history or []))
    return TurnInput(session_id=item.sessionId, created_at=item.createdAt, model=item.model,
                     message=item.message, history=history)


def _ending(item: Any) -> TurnEnding:
    return TurnEnding(
        session_id=item.sessionId, status=item.status, finished_at=item.finishedAt,
        answer=item.answer or "", error=item.error,
        usage=TokenUsage(int(item.inputTokens or 0), int(item.outputTokens or 0)),
    )



