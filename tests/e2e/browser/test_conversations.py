"""The page reads its conversations from the server (issue 10): the list, a conversation's turns,
follow-up turns, resume from nothing, rename, delete, a second browser, and the old page's data.

"Another device" is a client calling the API directly, or a second browser context. Every test
shares the session's local stack (one owner), so conversations are found by their titles.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Request, Route, expect

from tests.e2e.browser.conftest import RUN_TIMEOUT_MS, ChatPage

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

QUICK_RUN = "[demo tokens=20 rate=100]"
LIST_PATH = "/api/chat/conversations"


def unique(text: str) -> str:
    """Return text with a tag of its own, so its conversation is told apart from other tests'."""
    return f"{text} {secrets.token_hex(3)}"


def start_elsewhere(chat: ChatPage, message: str, conversation_id: str | None = None) -> dict[str, Any]:
    """Start a turn as another device would (straight to the API); return the 202 body."""
    body = {"message": message, **({"conversationId": conversation_id} if conversation_id else {})}
    status, started = chat.call("POST", "/api/chat/session", body)
    assert status == 202, started
    return started


def wait_until_ended(chat: ChatPage, session_id: str) -> dict[str, Any]:
    """Long-poll a session's events until its log is complete; return the session."""
    after = 0
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        page = chat.api(f"/api/chat/session/{session_id}/events?after={after}&wait=5")
        after = page["lastSeq"]
        if page["status"] != "running" and not page["hasMore"]:
            return chat.session(session_id)
    raise AssertionError(f"session {session_id} did not end")


def run_elsewhere(chat: ChatPage, message: str, conversation_id: str | None = None) -> dict[str, Any]:
    """Run a whole turn as another device; return the 202 body."""
    started = start_elsewhere(chat, message, conversation_id)
    wait_until_ended(chat, started["sessionId"])
    return started


def smaller_pages(parameter: str, size: int):
    """Return a route handler that asks the real API for pages of `size` instead of the page's own."""
    def handle(route: Route) -> None:
        url = urlsplit(route.request.url)
        query = parse_qs(url.query)
        query[parameter] = [str(size)]
        route.continue_(url=url._replace(query=urlencode({k: v[0] for k, v in query.items()})).geturl())
    return handle


def first_polls(chat: ChatPage) -> dict[str, int]:
    """Record, per session, the `after` of the first events poll the page sends from now on."""
    seen: dict[str, int] = {}

    def record(request: Request) -> None:
        url = urlsplit(request.url)
        if url.path.endswith("/events"):
            seen.setdefault(url.path.split("/")[-2], int(parse_qs(url.query)["after"][0]))

    chat.page.on("request", record)
    return seen


@pytest.fixture
def unopened(page: Any, local_stack: RunningStack) -> ChatPage:
    """The page's test handle before the page is opened: for tests that prepare the server first."""
    return ChatPage(page, local_stack.api_url, local_stack.web_url)


@pytest.fixture
def second_browser(browser: Browser, local_stack: RunningStack) -> Iterator[ChatPage]:
    """Another browser (a context of its own: no shared storage), with the page open."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    other = ChatPage(page, local_stack.api_url, local_stack.web_url)
    other.open()
    yield other
    context.close()


def test_the_list_comes_from_the_server_newest_first_with_older_pages_on_request(unopened: ChatPage) -> None:
    titles = [unique(f"Listed {n}") for n in range(3)]
    chat, page = unopened, unopened.page
    for title in titles:
        run_elsewhere(chat, f"{title}\n{QUICK_RUN}")
    # The real API, asked for pages of two conversations instead of the page's fifty.
    page.route(re.compile(r".*/api/chat/conversations\?(?!.*cursor).*"), smaller_pages("limit", 2))
    chat.open()

    listed = page.locator("[data-testid=conversation-item] .conversation-title")
    expect(listed).to_have_text([titles[2], titles[1]])
    more = page.get_by_test_id("load-more")
    with page.expect_response(lambda r: LIST_PATH in r.url and "cursor=" in r.url):
        more.click()
    expect(listed.nth(2)).to_have_text(titles[0])

    # Another device starts a conversation; coming back to the window reads the list again, and the
    # older conversation loaded on request stays.
    newest = unique("Listed later")
    run_elsewhere(chat, f"{newest}\n{QUICK_RUN}")
    chat.refocus()
    expect(listed.first).to_have_text(newest)
    expect(chat.conversation_item(titles[0])).to_have_count(1)
    expect(chat.conversation_item(titles[1])).to_have_count(1)
    assert chat.console_errors == []


def test_opening_a_conversation_reads_all_its_turns_and_a_follow_up_sends_no_history(
    unopened: ChatPage,
) -> None:
    title = unique("Two turns elsewhere")
    chat, page = unopened, unopened.page
    first = run_elsewhere(chat, f"{title}\n{QUICK_RUN}")
    run_elsewhere(chat, f"And a second one. {QUICK_RUN}", first["conversationId"])
    # One turn per page, so reading the conversation takes every page.
    page.route(re.compile(r".*/api/chat/conversations/[^/?]+(\?.*)?$"), smaller_pages("limit", 1))
    chat.open()
    expect(chat.turns).to_have_count(0)

    chat.conversation_item(title).get_by_test_id("conversation-open").click()
    expect(page.get_by_test_id("chat-title")).to_have_text(title)
    served = chat.conversation(first["conversationId"])["turns"]
    expect(chat.turns).to_have_count(2)
    for turn, expected in zip(chat.turns.all(), served):
        expect(turn).to_have_attribute("data-session-id", expected["sessionId"])
        expect(turn).to_have_attribute("data-status", "done")
        expect(turn.get_by_test_id("user-text")).to_have_text(expected["message"])
        assert turn.get_by_test_id("answer").text_content() == chat.rendered_markdown_text(expected["answer"])
        expect(turn.get_by_test_id("usage")).to_have_text(
            f"Tokens: {expected['inputTokens']} in · {expected['outputTokens']} out · "
            f"{expected['totalTokens']} total")
    assert page.url.endswith(f"#c={first['conversationId']}")

    request, started = chat.send_and_capture_start(f"A third, from the page. {QUICK_RUN}")
    assert request.post_data_json == {"message": f"A third, from the page. {QUICK_RUN}",
                                      "conversationId": first["conversationId"]}
    assert started["conversationId"] == first["conversationId"]
    chat.wait_for_status(chat.turns.last, "done")
    expect(chat.turns.last.get_by_test_id("thinking").first).to_contain_text("history: 4 messages")


def test_a_running_turn_resumes_from_the_server_after_a_reload_with_local_storage_cleared(chat: ChatPage) -> None:
    phrase = "Picked up from nothing but the address."
    _, started = chat.send_and_capture_start(f"{phrase} [demo rate=10 tokens=60]")
    chat.wait_for_partial_answer(chat.turns.last)
    address = chat.page.url
    assert address == f"{chat.web_url}/#c={started['conversationId']}"

    # Leave the page (so it writes nothing more), clear its storage, and come back to the address.
    chat.page.goto(f"{chat.web_url}/favicon.svg")
    chat.page.evaluate("localStorage.clear()")
    polls = first_polls(chat)
    chat.page.goto(address)
    expect(chat.page.get_by_test_id("conversation-running")).not_to_have_count(0)
    turn = chat.page.locator(f'[data-session-id="{started["sessionId"]}"]')
    expect(turn).to_have_attribute("data-status", "running")
    chat.wait_for_status(turn, "done")

    # Followed from the first event: the text once, the steps rebuilt from the events.
    assert polls[started["sessionId"]] == 0
    session = chat.session(started["sessionId"])
    shown = turn.get_by_test_id("answer").text_content()
    assert shown == chat.rendered_markdown_text(session["answer"])
    assert shown.count(phrase) == 1
    expect(turn.get_by_test_id("thinking").first).to_be_attached()
    expect(turn.get_by_test_id("user-text")).to_have_text(f"{phrase} [demo rate=10 tokens=60]")
    expect(chat.turns).to_have_count(1)


def test_a_conversation_is_renamed_on_the_server(chat: ChatPage) -> None:
    _, started = chat.send_and_capture_start(unique("Name me") + f" {QUICK_RUN}")
    chat.wait_for_status(chat.turns.last, "done")
    old_title = chat.conversation(started["conversationId"])["title"]
    renames: list[Request] = []
    chat.page.on("request", lambda request: request.method == "PATCH" and renames.append(request))

    rename = chat.conversation_item(old_title).get_by_test_id("conversation-rename")
    rename.click()
    box = chat.page.get_by_test_id("rename-input")
    expect(box).to_be_focused()
    expect(box).to_have_value(old_title)
    box.press("Escape")
    expect(box).to_have_count(0)
    expect(chat.conversation_item(old_title)).to_have_count(1)

    new_title = unique("Поездка ✈️ <b>renamed</b>")
    rename.click()
    box.fill(f"  {new_title}  ")
    with chat.page.expect_response(lambda r: r.request.method == "PATCH") as answered:
        box.press("Enter")
    assert answered.value.status == 200
    assert [request.post_data_json for request in renames] == [{"title": new_title}]
    expect(chat.conversation_item(new_title)).to_have_count(1)
    expect(chat.page.get_by_test_id("chat-title")).to_have_text(new_title)
    assert chat.conversation(started["conversationId"])["title"] == new_title

    chat.page.reload()
    expect(chat.conversation_item(new_title)).to_have_count(1)
    expect(chat.conversation_item(old_title)).to_have_count(0)
    expect(chat.page.get_by_test_id("chat-title")).to_have_text(new_title)


def test_delete_asks_first_then_deletes_the_conversation_and_its_running_turn_on_the_server(chat: ChatPage) -> None:
    title = unique("Delete me while I run")
    _, started = chat.send_and_capture_start(f"{title}\n[demo rate=10 tokens=300]")
    chat.wait_for_partial_answer(chat.turns.last)
    delete = chat.conversation_item(title).get_by_test_id("conversation-delete")

    delete.click()
    assert chat.dialogs == [
        f"confirm: Delete “{title}”? It is deleted on the server, for every device, "
        "and an answer still being written is stopped."
    ]
    expect(chat.conversation_item(title)).to_have_count(1)
    assert chat.call("GET", f"/api/chat/conversations/{started['conversationId']}")[0] == 200

    chat.accept_dialogs = True
    with chat.page.expect_response(lambda r: r.request.method == "DELETE") as answered:
        delete.click()
    assert answered.value.status == 204
    expect(chat.conversation_item(title)).to_have_count(0)
    expect(chat.turns).to_have_count(0)
    expect(chat.page.get_by_test_id("empty-state")).to_be_visible()
    assert "#" not in chat.page.url
    for path in (f"/api/chat/conversations/{started['conversationId']}",
                 f"/api/chat/session/{started['sessionId']}",
                 f"/api/chat/session/{started['sessionId']}/events"):
        assert chat.call("GET", path)[0] == 404, path
    chat.page.reload()
    expect(chat.page.get_by_test_id("conversation-item").first).to_be_visible()
    expect(chat.conversation_item(title)).to_have_count(0)


def test_a_second_browser_sees_the_first_ones_conversation_and_each_sees_the_others_turns(
    chat: ChatPage, second_browser: ChatPage,
) -> None:
    title = unique("Seen from another browser")
    _, started = chat.send_and_capture_start(f"{title}\n{QUICK_RUN}")
    chat.wait_for_status(chat.turns.last, "done")

    second_browser.refocus()
    second_browser.conversation_item(title).get_by_test_id("conversation-open").click()
    theirs = second_browser.turns
    expect(theirs).to_have_count(1)
    expect(theirs.first).to_have_attribute("data-session-id", started["sessionId"])
    answer = chat.session(started["sessionId"])["answer"]
    assert theirs.first.get_by_test_id("answer").text_content() == chat.rendered_markdown_text(answer)

    _, follow_up = second_browser.send_and_capture_start(f"Sent from the second browser. {QUICK_RUN}")
    second_browser.wait_for_status(theirs.last, "done")
    assert follow_up["conversationId"] == started["conversationId"]

    # The first browser, back in focus, reads the list, sees its conversation moved on, reads it.
    chat.refocus()
    expect(chat.turns).to_have_count(2)
    mine = chat.page.locator(f'[data-session-id="{follow_up["sessionId"]}"]')
    chat.wait_for_status(mine, "done")
    expect(mine.get_by_test_id("user-text")).to_have_text(f"Sent from the second browser. {QUICK_RUN}")


def test_a_message_sent_while_another_device_runs_a_turn_is_refused_readably_then_retried(
    unopened: ChatPage,
) -> None:
    title = unique("Busy elsewhere")
    chat, page = unopened, unopened.page
    first = run_elsewhere(chat, f"{title}\n{QUICK_RUN}")
    page.goto(f"{chat.web_url}/#c={first['conversationId']}")
    expect(chat.turns).to_have_count(1)
    chat.wait_for_status(chat.turns.first, "done")
    expect(chat.conversation_item(title)).to_have_count(1)

    # Another device starts a turn this page has not heard of yet.
    other = start_elsewhere(chat, "From the other device. [demo rate=40 tokens=60]", first["conversationId"])
    mine = f"Mine, too early. {QUICK_RUN}"
    with page.expect_response(chat.is_start) as refused:
        chat.send(mine)
    assert refused.value.status == 409
    turn = chat.turns.filter(has_text=mine)
    expect(turn.get_by_test_id("error-message")).to_have_text(
        "Error: Another answer in this conversation is still being written (started on another device?). "
        "Wait for it to end, then press Retry.")

    # The page reads the conversation, shows the other device's turn and follows it to its end.
    theirs = page.locator(f'[data-session-id="{other["sessionId"]}"]')
    chat.wait_for_status(theirs, "done")
    with page.expect_response(chat.is_start) as retried:
        turn.get_by_test_id("retry-button").click()
    assert retried.value.status == 202
    chat.wait_for_status(turn, "done")
    served = chat.conversation(first["conversationId"])["turns"]
    retried_id = retried.value.json()["sessionId"]
    assert [t["sessionId"] for t in served] == [first["sessionId"], other["sessionId"], retried_id]
    expect(chat.turns).to_have_count(3)


def test_the_old_pages_local_data_is_taken_over_where_the_server_has_it_and_dropped_otherwise(
    unopened: ChatPage,
) -> None:
    title = unique("Kept by the old page")
    chat, page = unopened, unopened.page
    started = run_elsewhere(chat, f"{title}\n{QUICK_RUN}")
    session = chat.session(started["sessionId"])
    # What the old page kept: the conversation the server has (with a step only the page saw), one
    # the server never had, one with an id the server cannot have, a turn never started, garbage.
    known = {"id": started["conversationId"], "title": title, "createdAt": session["createdAt"],
             "updatedAt": session["updatedAt"], "turns": [
                 {"id": "old-turn", "user": f"{title}\n{QUICK_RUN}", "status": "done",
                  "sessionId": started["sessionId"], "lastSeq": session["lastSeq"], "answer": session["answer"],
                  "steps": [{"kind": "thinking", "text": "Only the old page saw this."}]},
                 {"id": "never-started", "user": "Never sent", "status": "sending", "sessionId": None}]}
    unknown = {"id": "0123456789abcdef0123456789abcdef", "title": "Never on the server",
               "createdAt": "2099-01-01T00:00:00.000Z", "updatedAt": "2099-01-01T00:00:00.000Z",
               "turns": [{"id": "t", "user": "x", "status": "done", "sessionId": "AAAAAAAAAAAAAAAAAAAAAA"}]}
    invalid = {"id": "not a server id!", "title": "Invalid id", "turns": [
        {"id": "t", "user": "x", "status": "done", "sessionId": "BBBBBBBBBBBBBBBBBBBBBB"}]}
    old = {
        "backchat.v1.conversations": [known, unknown, invalid, "garbage", {"id": 5}],
        "backchat.v1.pending": [{"conversationId": known["id"], "turnId": "never-started", "sessionId": None}],
        "backchat.v1.current": known["id"],
    }
    page.goto(f"{chat.web_url}/favicon.svg")
    page.evaluate("""(old) => { for (const [key, value] of Object.entries(old)) {
        localStorage.setItem(key, JSON.stringify(value)); } }""", old)
    starts: list[Request] = []
    page.on("request", lambda request: request.method == "POST" and starts.append(request))
    chat.open()

    expect(page.get_by_test_id("chat-title")).to_have_text(title)
    expect(chat.turns).to_have_count(1)
    turn = chat.turns.first
    expect(turn).to_have_attribute("data-session-id", started["sessionId"])
    expect(turn.get_by_test_id("thinking")).to_contain_text("Only the old page saw this.")
    expect(chat.conversation_item(title)).to_have_count(1)
    expect(chat.conversation_item("Never on the server")).to_have_count(0)
    expect(chat.conversation_item("Invalid id")).to_have_count(0)
    assert page.url.endswith(f"#c={known['id']}")
    keys = page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('backchat.')).sort()")
    assert keys == ["backchat.v2.conversations", "backchat.v2.current"]
    cached = {c["id"] for c in chat.cached_conversations()}
    assert known["id"] in cached and unknown["id"] not in cached
    assert starts == []
    assert chat.console_errors == []
    assert json.loads(page.evaluate("localStorage.getItem('backchat.v2.current')")) == known["id"]
