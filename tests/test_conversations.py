"""ConversationStore: turns page by count and by size, oldest first, without overlap."""
from __future__ import annotations

from chalicelib.conversations import ConversationStore
from chalicelib.store import Fence, SessionStore
from tests.builders import ending, start


def conversation_with_answers(store: SessionStore, turns: int, answer_chars: int) -> None:
    for index in range(turns):
        session_id = f"t{index:02d}"
        start(store, session_id, conversation_id="conv", new_conversation=index == 0,
              message=f"question {index}")
        store.claim_lease(session_id, "a")
        store.finish(store.get(session_id), Fence("a"), [],
                     ending(1, session_id=session_id, answer="ж" * answer_chars))


def test_turns_page_by_count_and_the_cursor_continues_without_overlap(store) -> None:
    conversation_with_answers(store, 5, 10)
    conversations = ConversationStore(store.models)
    first = conversations.turns("conv", 2)
    second = conversations.turns("conv", 2, first.next_key)
    third = conversations.turns("conv", 2, second.next_key)
    seen = [t.input.message for page in (first, second, third) for t in page.turns]
    assert seen == [f"question {i}" for i in range(5)]
    assert all(t.ending is not None for page in (first, second, third) for t in page.turns)
    assert third.next_key is None


def test_a_page_stops_reading_once_its_text_passes_the_budget(store) -> None:
    conversation_with_answers(store, 12, 50_000)  # 300 KB of JSON per answer (\\u escapes)
    conversations = ConversationStore(store.models)
    returned: list[int] = []
    client = store.models.session._get_connection().connection.client

    def count(parsed, **_):
        returned.append(len(parsed.get("Items", [])))

    client.meta.events.register("after-call.dynamodb.Query", count)
    page = conversations.turns("conv", 50, max_text_bytes=1_000_000)
    # 4 answers pass 1 MB of JSON: reading stopped within the first Query page (DynamoDB
    # returns at most 1 MB a page), where reading up to `limit` would go on to all 12 turns.
    assert len(page.turns) == 4 and page.next_key is not None
    assert len(returned) == 1 and returned[0] < 24
    rest = conversations.turns("conv", 50, page.next_key, max_text_bytes=100_000_000)
    assert [t.input.message for t in page.turns + rest.turns] == [
        f"question {i}" for i in range(12)]
