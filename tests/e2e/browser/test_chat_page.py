"""The chat page in real Chromium against the real local stack: issue 4's acceptance list, as the
page works now that the server keeps the conversations (test_conversations.py has the rest)."""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Request, Route, expect

if TYPE_CHECKING:
    from tests.e2e.browser.conftest import ChatPage

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

XSS_PAYLOAD = (
    "<img src=x onerror=alert(1)> <script>alert(1)</script> <svg onload=alert(1)> "
    "[x](javascript:alert(1)) <javascript:alert(1)> [y](JaVaScRiPt:alert(1)) "
    '<img src=y onerror="window.__pwned=1"> [demo tokens=10 rate=100]'
)


def assert_shows_session_answer_once(chat: ChatPage, turn_id: str, session_id: str, phrase: str) -> None:
    """The turn shows the session's final answer: once, complete, as the API has it."""
    session = chat.session(session_id)
    turn = chat.page.locator(f'[data-turn-id="{turn_id}"]')
    shown = turn.get_by_test_id("answer").text_content()
    assert shown == chat.rendered_markdown_text(session["answer"])
    assert shown.count(phrase) == 1
    assert chat.stored_turn(turn_id)["answer"] == session["answer"]
    assert chat.page.get_by_test_id("answer").count() == 1


def test_sent_message_streams_answer_with_tool_steps_and_ends_with_usage(chat: ChatPage) -> None:
    request, started = chat.send_and_capture_start("What is 17*23? Answer **briefly**. [demo tokens=60 rate=20]")
    turn = chat.turns.last
    expect(turn.get_by_test_id("processing")).to_have_text("Background processing…")
    chat.wait_for_partial_answer(turn)
    chat.wait_for_status(turn, "done")

    session = chat.session(started["sessionId"])
    assert session["status"] == "done"
    expect(turn).to_have_attribute("data-session-id", started["sessionId"])
    expect(turn.get_by_test_id("usage")).to_have_text(
        f"Tokens: {session['inputTokens']} in · {session['outputTokens']} out · {session['totalTokens']} total"
    )
    expect(turn.get_by_test_id("tool-call")).to_have_count(1)
    expect(turn.get_by_test_id("tool-call")).to_contain_text("calculator")
    expect(turn.get_by_test_id("tool-result")).to_have_text("391")
    expect(turn.get_by_test_id("thinking").first).to_be_attached()
    expect(turn.locator("[data-testid=answer] strong").first).to_have_text("briefly")
    assert_shows_session_answer_once(chat, turn.get_attribute("data-turn-id"), started["sessionId"],
                                     "What is 17*23? Answer")
    expect(chat.page.get_by_test_id("processing")).to_have_count(0)
    assert chat.console_errors == []


def test_reload_during_a_slow_run_shows_the_answer_exactly_once(chat: ChatPage) -> None:
    phrase = "Лиловый жираф считает до сорока."
    _, started = chat.send_and_capture_start(f"{phrase} [demo rate=8 tokens=40]")
    turn = chat.turns.last
    chat.wait_for_partial_answer(turn)
    turn_id = turn.get_attribute("data-turn-id")
    stored_before = chat.stored_turn(turn_id)
    assert stored_before["status"] == "running" and stored_before["lastSeq"] > 0

    chat.page.reload()
    turn = chat.page.locator(f'[data-turn-id="{turn_id}"]')
    # The stored part of the answer is shown at once, before any new event arrives.
    expect(turn.get_by_test_id("answer")).not_to_be_empty()
    chat.wait_for_status(turn, "done")

    assert chat.session(started["sessionId"])["status"] == "done"
    expect(chat.turns).to_have_count(1)
    assert_shows_session_answer_once(chat, turn_id, started["sessionId"], phrase)


def test_every_unfinished_run_resumes_after_a_reload_from_its_last_seq(chat: ChatPage) -> None:
    _, first = chat.send_and_capture_start("Первый диалог. [demo rate=8 tokens=60]")
    chat.wait_for_partial_answer(chat.turns.last)
    chat.page.get_by_test_id("new-chat").click()
    _, second = chat.send_and_capture_start("Второй диалог. [demo rate=10 tokens=40]")
    chat.wait_for_partial_answer(chat.turns.last)

    first_polls: dict[str, int] = {}

    def record_poll(request: Request) -> None:
        url = urlsplit(request.url)
        if url.path.endswith("/events"):
            session_id = url.path.split("/")[-2]
            first_polls.setdefault(session_id, int(parse_qs(url.query)["after"][0]))

    chat.page.on("request", record_poll)
    chat.page.reload()
    chat.wait_until_nothing_runs()

    # Each run was picked up where the cached text ends, not from the start.
    assert first_polls.keys() == {first["sessionId"], second["sessionId"]}
    assert all(after > 0 for after in first_polls.values()), first_polls
    cached = {turn["sessionId"]: turn["status"]
              for conversation in chat.cached_conversations() for turn in conversation["turns"] or []}
    assert cached[first["sessionId"]] == cached[second["sessionId"]] == "done"
    for started, phrase in ((second, "Второй диалог."), (first, "Первый диалог.")):
        turn = chat.turns.last
        chat.wait_for_status(turn, "done")
        expect(turn).to_have_attribute("data-session-id", started["sessionId"])
        assert_shows_session_answer_once(chat, turn.get_attribute("data-turn-id"), started["sessionId"], phrase)
        chat.page.get_by_test_id("conversation-item").filter(has_text="Первый").get_by_test_id(
            "conversation-open").click()


def test_a_message_sent_while_the_api_is_unreachable_starts_once_it_is_back(chat: ChatPage) -> None:
    chat.page.route(f"{chat.api_url}/**", lambda route: route.abort())
    chat.send("Sent offline. [demo tokens=10 rate=100]")
    turn = chat.turns.last
    expect(turn.get_by_test_id("processing")).to_have_text("Background processing…")
    expect(chat.page.get_by_test_id("connection-status")).to_have_text("Reconnecting…")
    # Not started yet, and still not after a reload: the page keeps trying.
    chat.page.reload()
    expect(chat.page.get_by_test_id("connection-status")).to_have_text("Reconnecting…")

    with chat.page.expect_response(chat.is_start) as response_info:
        chat.page.unroute(f"{chat.api_url}/**")
    started = response_info.value.json()
    turn = chat.turns.last
    chat.wait_for_status(turn, "done")
    expect(turn).to_have_attribute("data-session-id", started["sessionId"])
    expect(chat.page.get_by_test_id("connection-status")).to_be_hidden()
    expect(chat.turns).to_have_count(1)
    assert chat.session(started["sessionId"])["status"] == "done"


def test_a_start_whose_answer_was_lost_is_sent_again_without_starting_a_second_run(chat: ChatPage) -> None:
    reached_server: list[dict[str, str]] = []

    def lose_the_first_answer(route: Route) -> None:
        if route.request.method != "POST" or reached_server:
            route.continue_()
            return
        # The request gets through and starts a run; only its answer never reaches the page.
        reached_server.append(route.fetch().json())
        route.abort()

    chat.page.route(chat.start_url, lose_the_first_answer)
    chat.send("Lost in transit. [demo tokens=10 rate=100]")
    turn = chat.turns.last
    chat.wait_for_status(turn, "done")

    [started] = reached_server
    expect(turn).to_have_attribute("data-session-id", started["sessionId"])
    # The conversation the first start created is the one on screen, with that one run in it.
    assert [t["sessionId"] for t in chat.conversation(started["conversationId"])["turns"]] == [started["sessionId"]]
    assert chat.page.url.endswith(f"#c={started['conversationId']}")
    expect(chat.turns).to_have_count(1)


def test_stop_during_a_run_ends_it_cancelled(chat: ChatPage) -> None:
    _, started = chat.send_and_capture_start("Tell me a long story. [demo rate=10 tokens=400]")
    turn = chat.turns.last
    chat.wait_for_partial_answer(turn)
    chat.page.get_by_test_id("stop-button").click()

    chat.wait_for_status(turn, "cancelled")
    expect(turn.get_by_test_id("cancelled")).to_have_text("Cancelled: the run was stopped.")
    session = chat.session(started["sessionId"])
    assert session["status"] == "cancelled"
    # The partial answer stays, and it is exactly what the run produced before it stopped.
    assert chat.stored_turn(turn.get_attribute("data-turn-id"))["answer"] == session["answer"] != ""
    expect(chat.page.get_by_test_id("send-button")).to_be_visible()
    expect(chat.page.get_by_test_id("stop-button")).to_be_hidden()


def test_failed_run_shows_the_error_and_retry_sends_it_again_as_a_new_turn(chat: ChatPage) -> None:
    message = "This one breaks. [demo fail_after=3 rate=50]"
    first_request, first = chat.send_and_capture_start(message)
    failed = chat.page.locator(f'[data-turn-id="{chat.turns.last.get_attribute("data-turn-id")}"]')
    chat.wait_for_status(failed, "error")
    expect(failed.get_by_test_id("error-message")).to_contain_text("failed after 3 tokens")

    with chat.page.expect_response(chat.is_start) as response_info:
        failed.get_by_test_id("retry-button").click()
    second_request, second = response_info.value.request, response_info.value.json()

    # The same message, as the next turn of the same conversation (the server keeps the failed one).
    assert first_request.post_data_json == {"message": message}
    assert second_request.post_data_json == {"message": message, "conversationId": first["conversationId"]}
    assert second_request.headers["idempotency-key"] != first_request.headers["idempotency-key"]
    assert second["sessionId"] != first["sessionId"]
    assert second["conversationId"] == first["conversationId"]
    expect(chat.turns).to_have_count(2)
    retried = chat.turns.last
    expect(retried).to_have_attribute("data-session-id", second["sessionId"])
    chat.wait_for_status(retried, "error")
    expect(retried.get_by_test_id("error-message")).to_contain_text("failed after 3 tokens")
    # Retry is offered on the last failed turn only; each turn shows its own run's partial answer.
    expect(failed.get_by_test_id("retry-button")).to_have_count(0)
    expect(retried.get_by_test_id("retry-button")).to_be_visible()
    for turn, started in ((failed, first), (retried, second)):
        shown = turn.get_by_test_id("answer").text_content()
        assert shown == chat.rendered_markdown_text(chat.session(started["sessionId"])["answer"])
    served = chat.conversation(first["conversationId"])["turns"]
    assert [(t["sessionId"], t["status"]) for t in served] == [
        (first["sessionId"], "error"), (second["sessionId"], "error")]


def test_markup_in_user_text_and_model_output_is_shown_as_text_and_runs_nothing(chat: ChatPage) -> None:
    chat.page.evaluate("window.__pwned = false")
    _, started = chat.send_and_capture_start(XSS_PAYLOAD)
    turn = chat.turns.last
    chat.wait_for_status(turn, "done")

    # The demo model quotes the message verbatim, so the answer carries the same payload.
    assert XSS_PAYLOAD in chat.session(started["sessionId"])["answer"]
    expect(turn.get_by_test_id("user-text")).to_have_text(XSS_PAYLOAD)
    answer = turn.get_by_test_id("answer")
    expect(answer).to_contain_text("<img src=x onerror=alert(1)> <script>alert(1)</script> <svg onload=alert(1)>")
    expect(answer).to_contain_text("[x](javascript:alert(1))")
    transcript = chat.page.get_by_test_id("transcript")
    expect(transcript.locator("img, script, svg, iframe, object, embed")).to_have_count(0)
    assert [href for href in chat.hrefs() if href.strip().lower().startswith("javascript:")] == []
    expect(chat.page.locator('a[href^="javascript:" i]')).to_have_count(0)
    assert chat.dialogs == []
    assert chat.page.evaluate("window.__pwned") is False


@pytest.mark.parametrize("locale", ["ru-RU"])
def test_cyrillic_and_emoji_round_trip_and_a_follow_up_goes_with_the_conversation_id_alone(chat: ChatPage) -> None:
    first_message = "Привет, мир! Ёжик в тумане 🦔🌫️ — 你好, e\u0301 👍🏽 [demo tokens=20 rate=100]"
    first_request, first = chat.send_and_capture_start(first_message)
    first_turn = chat.turns.last
    chat.wait_for_status(first_turn, "done")
    expect(first_turn.get_by_test_id("user-text")).to_have_text(first_message)
    first_answer = chat.session(first["sessionId"])["answer"]
    assert first_message in first_answer
    expect(first_turn.get_by_test_id("answer")).to_contain_text(first_message)
    assert chat.stored_turn(first_turn.get_attribute("data-turn-id"))["answer"] == first_answer

    second_message = "А теперь второй вопрос 🚀 [demo tokens=10 rate=100]"
    second_request, second = chat.send_and_capture_start(second_message)
    chat.wait_for_status(chat.turns.last, "done")

    # No history: the server builds it from the conversation's earlier turn (the demo model says
    # how many messages it was given before the new one).
    assert first_request.post_data_json == {"message": first_message}
    assert second_request.post_data_json == {"message": second_message, "conversationId": first["conversationId"]}
    assert second["conversationId"] == first["conversationId"]
    expect(chat.turns.last.get_by_test_id("thinking").first).to_contain_text("history: 2 messages")
    expect(chat.turns).to_have_count(2)
    served = chat.conversation(first["conversationId"])
    assert [t["message"] for t in served["turns"]] == [first_message, second_message]
    assert served["turns"][0]["answer"] == first_answer
    expect(chat.conversation_item(served["title"])).to_have_count(1)


@pytest.mark.parametrize("locale", ["ru-RU"])
def test_a_browser_preferring_russian_gets_the_russian_interface(chat: ChatPage) -> None:
    expect(chat.page.locator("html")).to_have_attribute("lang", "ru")
    expect(chat.page.get_by_test_id("send-button")).to_have_text("Отправить")
    expect(chat.page.get_by_test_id("new-chat")).to_have_text("Новый диалог")
    chat.send("Здравствуйте [demo tokens=5 rate=100]")
    turn = chat.turns.last
    expect(turn.get_by_test_id("processing")).to_have_text("Обработка в фоне…")
    chat.wait_for_status(turn, "done")
    expect(turn.get_by_test_id("usage")).to_contain_text("Токены:")


def test_api_outage_shows_reconnecting_then_recovers_with_no_gap_or_repeat(chat: ChatPage) -> None:
    phrase = "Связь пропадёт и вернётся."
    _, started = chat.send_and_capture_start(f"{phrase} [demo rate=20 tokens=120]")
    turn = chat.turns.last
    chat.wait_for_partial_answer(turn)

    chat.page.route(f"{chat.api_url}/**", lambda route: route.abort())
    expect(chat.page.get_by_test_id("connection-status")).to_have_text("Reconnecting…")
    time.sleep(3)
    chat.page.unroute(f"{chat.api_url}/**")
    expect(chat.page.get_by_test_id("connection-status")).to_be_hidden()

    chat.wait_for_status(turn, "done")
    assert_shows_session_answer_once(chat, turn.get_attribute("data-turn-id"), started["sessionId"], phrase)


def test_conversations_can_be_started_and_switched(chat: ChatPage) -> None:
    first, second = "First chat [demo tokens=5 rate=100]", "Second chat [demo tokens=5 rate=100]"
    chat.send(first)
    chat.wait_for_status(chat.turns.last, "done")
    chat.page.get_by_test_id("new-chat").click()
    expect(chat.turns).to_have_count(0)
    assert "#" not in chat.page.url
    chat.send(second)
    chat.wait_for_status(chat.turns.last, "done")

    # Most recently active first.
    titles = chat.page.locator("[data-testid=conversation-item] .conversation-title")
    expect(titles.nth(0)).to_have_text(second)
    expect(titles.nth(1)).to_have_text(first)
    chat.conversation_item(first).get_by_test_id("conversation-open").click()
    expect(chat.page.get_by_test_id("chat-title")).to_have_text(first)
    expect(chat.turns.get_by_test_id("user-text")).to_have_text(first)
    expect(chat.conversation_item(first)).to_have_attribute("class", re.compile(r"\bcurrent\b"))


@pytest.mark.parametrize("viewport", [{"width": 375, "height": 740}])
def test_phone_width_page_fits_and_opens_the_conversation_list(chat: ChatPage) -> None:
    chat.send("Small screen [demo tokens=30 rate=100]")
    chat.wait_for_status(chat.turns.last, "done")
    assert chat.page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(chat.page.get_by_test_id("sidebar")).not_to_be_in_viewport()
    chat.page.get_by_test_id("menu-button").click()
    expect(chat.page.get_by_test_id("sidebar")).to_be_in_viewport()
    expect(chat.conversation_item("Small screen [demo tokens=30 rate=100]")).to_be_in_viewport()


@pytest.mark.parametrize("viewport", [{"width": 900, "height": 480}])
def test_reader_scrolled_up_is_not_pulled_down_and_can_jump_to_latest(chat: ChatPage) -> None:
    chat.send("Long answer, please. [demo rate=50 tokens=400]")
    turn = chat.turns.last
    transcript = chat.page.get_by_test_id("transcript")
    chat.page.wait_for_function(
        "el => el.scrollHeight > el.clientHeight + 200", arg=transcript.element_handle()
    )
    transcript.evaluate("el => { el.scrollTop = 0; }")
    jump = chat.page.get_by_test_id("jump-to-latest")
    expect(jump).to_be_visible()
    length = len(turn.get_by_test_id("answer").text_content())
    chat.page.wait_for_function(
        "([answer, length]) => answer.textContent.length > length",
        arg=[turn.get_by_test_id("answer").element_handle(), length],
    )
    assert transcript.evaluate("el => el.scrollTop") == 0
    jump.click()
    chat.page.wait_for_function(
        "el => el.scrollHeight - el.scrollTop - el.clientHeight < 60", arg=transcript.element_handle()
    )
    expect(jump).to_be_hidden()
    chat.page.get_by_test_id("stop-button").click()
    chat.wait_for_status(turn, "cancelled")


def test_shift_enter_adds_a_line_and_enter_sends(chat: ChatPage) -> None:
    box = chat.page.get_by_test_id("message-input")
    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two [demo tokens=5 rate=100]")
    expect(chat.turns).to_have_count(0)
    box.press("Enter")
    expect(chat.turns.get_by_test_id("user-text")).to_have_text("line one\nline two [demo tokens=5 rate=100]")
    expect(box).to_have_value("")
    chat.wait_for_status(chat.turns.last, "done")


def test_event_replays_are_ignored_by_the_page_state(chat: ChatPage) -> None:
    """A poll that returns events the page already applied (a retried request) changes nothing."""
    result = chat.page.evaluate(
        """async () => {
            const { applyEvents, newTurn } = await import(new URL("turn.js", location.href));
            const turn = newTurn("hi");
            const events = [1, 2, 3].map((seq) => ({ seq, eventType: "delta", content: `${seq};` }));
            applyEvents(turn, events.slice(0, 2));
            applyEvents(turn, events);
            applyEvents(turn, [events[0], events[2]]);
            applyEvents(turn, [{ seq: 4, eventType: "done", usage: {} }, { seq: 5, eventType: "delta", content: "late" }]);
            return [turn.answer, turn.lastSeq, turn.status];
        }"""
    )
    assert result == ["1;2;3;", 4, "done"]
