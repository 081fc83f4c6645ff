"""Long-poll on the events route (`wait=S`): it returns on a new event or a status change.

The changes come from another thread while the request waits, as they do from a run's
thread in the local server, which announces each write with the session's new lastSeq and
status: a woken request reads the new events and not the session again. That the request
returned because of the change (and not because its 20 s wait ran out) shows in what it
returns: the events and the status the change made, which the request's one read of the
session, made before the change, could not have seen. No test asserts how fast anything is.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from chalicelib.changes import PROCESS_CHANGES, SessionChanges
from chalicelib.records import EventPage, EventRecord, SessionRecord
from chalicelib.service import LOCAL_LONG_POLL_INTERVAL
from chalicelib.writer import EventWriter, FlushPolicy
from tests.fakes import RecordingDispatcher
from tests.test_app import start, use_dispatcher

ATTEMPT = "attempt-1"
# Long enough that a request ending because its wait ran out could not pass for an early return.
LONG_WAIT = 20


@dataclass
class ReadSpy:
    """Counts the session reads the request thread makes, and those once a change began."""

    request_thread: threading.Thread
    reads: int = 0
    reads_after_change: int = 0
    event_reads_after_change: int = 0
    changing: threading.Event = field(default_factory=threading.Event)
    first_read: threading.Event = field(default_factory=threading.Event)

    def wrap(self, read: Callable[[str], SessionRecord | None]) -> Callable[[str], SessionRecord | None]:
        def spied(session_id: str) -> SessionRecord | None:
            if threading.current_thread() is self.request_thread:
                self.reads += 1
                self.reads_after_change += self.changing.is_set()
                self.first_read.set()
            return read(session_id)

        return spied

    def wrap_events(self, read: Callable[..., EventPage]) -> Callable[..., EventPage]:
        def spied(*args: object) -> EventPage:
            if threading.current_thread() is self.request_thread:
                self.event_reads_after_change += self.changing.is_set()
            return read(*args)

        return spied


@pytest.fixture
def spy(components, monkeypatch) -> ReadSpy:
    """Spy on the app store's session and event reads; the request runs in the test's thread."""
    spy = ReadSpy(request_thread=threading.current_thread())
    monkeypatch.setattr(components.store, "get", spy.wrap(components.store.get))
    monkeypatch.setattr(components.store, "events_after",
                        spy.wrap_events(components.store.events_after))
    return spy


@pytest.fixture
def running(client, components, monkeypatch) -> tuple[str, EventWriter]:
    """A running session claimed by a run that writes only what the test tells it to."""
    use_dispatcher(components, monkeypatch, RecordingDispatcher())
    session_id = start(client, message="hello")
    session = components.store.claim_lease(session_id, ATTEMPT)
    assert session is not None
    # Interval 0: every chunk is written at once, so the test decides when writes happen.
    writer = EventWriter(components.store, session, ATTEMPT, policy=FlushPolicy(interval=0.0))
    return session_id, writer


def change_while_waiting(spy: ReadSpy, change: Callable[[], None]) -> threading.Thread:
    """On another thread: once the request has read the store, make the change."""

    def run() -> None:
        assert spy.first_read.wait(10), "the request never read the session"
        # Give the request time to find nothing and start waiting.
        time.sleep(0.3)
        spy.changing.set()
        change()

    thread = threading.Thread(target=run, name="run-thread")
    thread.start()
    return thread


def events_url(session_id: str, **query: object) -> str:
    params = "&".join(f"{name}={value}" for name, value in query.items())
    return f"/api/chat/session/{session_id}/events?{params}"


def test_event_written_during_the_wait_is_returned_at_the_next_read(client, running, spy) -> None:
    session_id, writer = running
    thread = change_while_waiting(spy, lambda: writer.append_delta("Hello, Привет 👋"))
    response = client.http.get(events_url(session_id, after=0, wait=LONG_WAIT))
    thread.join()
    assert response.status_code == 200
    page = response.json_body
    assert page["status"] == "running"
    assert [(e["seq"], e["eventType"], e["content"]) for e in page["events"]] == [
        (1, "delta", "Hello, Привет 👋")]
    assert (page["lastSeq"], page["hasMore"]) == (1, False)
    # The announcement carried the session's state and the event: nothing was read again.
    assert (spy.reads, spy.reads_after_change, spy.event_reads_after_change) == (1, 0, 0)


def test_run_ending_during_the_wait_returns_the_terminal_event_and_status(
        client, components, running, spy) -> None:
    session_id, writer = running
    writer.append_delta("partial")

    def cancel() -> None:
        components.store.request_cancel(session_id)
        writer.finish_cancelled()

    thread = change_while_waiting(spy, cancel)
    response = client.http.get(events_url(session_id, after=1, wait=LONG_WAIT))
    thread.join()
    page = response.json_body
    assert page["status"] == "cancelled"
    assert [(e["seq"], e["eventType"]) for e in page["events"]] == [(2, "cancelled")]
    assert (page["lastSeq"], page["hasMore"]) == (2, False)
    assert (spy.reads, spy.reads_after_change, spy.event_reads_after_change) == (1, 0, 0)


def test_status_change_alone_ends_the_wait(client, running, spy) -> None:
    # A client ahead of the log (after=5 while the run has written nothing) sees no event
    # when the run ends; the status change alone must end its wait.
    session_id, writer = running
    thread = change_while_waiting(spy, lambda: writer.finish_error("The model went away."))
    response = client.http.get(events_url(session_id, after=5, wait=LONG_WAIT))
    thread.join()
    page = response.json_body
    assert (page["status"], page["events"], page["lastSeq"], page["hasMore"]) == (
        "error", [], 5, False)
    assert (spy.reads, spy.reads_after_change) == (1, 0)


def test_wait_with_nothing_new_returns_an_empty_page_after_the_wait(client, running, spy) -> None:
    session_id, writer = running
    writer.append_delta("seen already")
    wait = 2
    began = time.monotonic()
    response = client.http.get(events_url(session_id, after=1, wait=wait))
    waited = time.monotonic() - began
    page = response.json_body
    assert response.status_code == 200
    assert (page["status"], page["events"], page["lastSeq"], page["hasMore"]) == (
        "running", [], 1, False)
    # A lower bound only: the request held on for the whole wait.
    assert waited >= wait
    # Cheap while waiting: it re-reads at intervals, not in a tight loop, and not once more
    # after the wait is over (in this process the run's writes wake it; the re-reads are a
    # safety net every LOCAL_LONG_POLL_INTERVAL).
    assert 2 <= spy.reads <= wait / LOCAL_LONG_POLL_INTERVAL + 1


def test_wait_zero_answers_at_once_with_one_read(client, running, spy) -> None:
    session_id, _ = running
    page = client.http.get(events_url(session_id, wait=0)).json_body
    assert (page["status"], page["events"]) == ("running", [])
    assert spy.reads == 1


def test_finished_session_answers_at_once_whatever_the_wait(client, running, spy) -> None:
    session_id, writer = running
    writer.finish_done()
    page = client.http.get(events_url(session_id, after=1, wait=LONG_WAIT)).json_body
    assert (page["status"], page["events"], page["hasMore"]) == ("done", [], False)
    assert spy.reads == 1


def test_wait_on_another_owners_session_is_404_before_any_wait(client, components, running,
                                                                monkeypatch) -> None:
    import app as app_module

    session_id, _ = running
    monkeypatch.setattr(app_module, "owner", lambda: "mallory")
    response = client.http.get(events_url(session_id, wait=LONG_WAIT))
    assert response.status_code == 404


@pytest.mark.parametrize("wait, words", [
    ("-1", "wait must be a whole number from 0 to 20, not '-1'"),
    ("21", "wait must be from 0 to 20, not 21"),
    ("x", "wait must be a whole number from 0 to 20, not 'x'"),
    ("1.5", "wait must be a whole number from 0 to 20, not '1.5'"),
    ("", "wait must be a whole number from 0 to 20, not ''"),
])
def test_wait_out_of_range_is_400(client, running, wait, words) -> None:
    session_id, _ = running
    response = client.http.get(events_url(session_id, wait=wait))
    assert response.status_code == 400
    assert response.json_body["Code"] == "BadRequestError"
    assert words in response.json_body["Message"]


def test_events_announced_by_a_run_are_the_events_the_store_reads_back(
        client, components, monkeypatch) -> None:
    """A woken long-poll answers from the announced events: they must be the very events a
    read of the store returns, for every kind of event and character."""
    announced: list[EventRecord] = []
    announce = PROCESS_CHANGES.announce

    def recorded(session_id: str, last_seq: int, status: str, events=()) -> None:
        announced.extend(events)
        announce(session_id, last_seq, status, events)

    monkeypatch.setattr(PROCESS_CHANGES, "announce", recorded)
    session_id = start(client, message="what is 17*23? \u00e9\U0001f600\\n [demo rate=100000]")
    session = components.store.get(session_id)
    stored = components.store.events_after(session_id, 0, 1000, session.last_seq).events
    assert {e.event_type for e in stored} >= {"thinking", "tool_call", "tool_result", "delta",
                                              "done"}
    assert tuple(announced) == stored


def _event(seq: int) -> EventRecord:
    return EventRecord(session_id="s", seq=seq, event_type="delta", created_at="t",
                       content=str(seq))


def test_announced_events_answer_only_a_contiguous_run_from_after() -> None:
    changes = SessionChanges()
    with changes.watch("s") as watch:
        assert watch.events_after(0, 10, 0) is None
        changes.announce("s", 3, "running", [_event(2), _event(3)])
        assert watch.events_after(0, 10, 3) is None  # seq 1 was not announced: read the store
        assert watch.events_after(1, 10, 3) == EventPage((_event(2), _event(3)), False)
        assert watch.events_after(1, 1, 3) == EventPage((_event(2),), True)
        assert watch.events_after(1, 10, 2) == EventPage((_event(2),), False)
        assert watch.events_after(3, 10, 3) is None
        changes.announce("s", 5, "running", [_event(5)])  # a gap at 4
        assert watch.events_after(1, 10, 5) == EventPage((_event(2), _event(3)), True)
    with changes.watch("s") as watch:
        assert watch.events_after(1, 10, 5) is None  # kept only while watched


def test_announcements_out_of_seq_order_never_skip_an_event() -> None:
    changes = SessionChanges()
    with changes.watch("s") as watch:
        for seq in (1, 3, 2, 5):
            changes.announce("s", seq, "running", [_event(seq)])
        assert watch.events_after(0, 10, 5) == EventPage(
            (_event(1), _event(2), _event(3)), True)
        changes.announce("s", 4, "running", [_event(4)])
        assert watch.events_after(0, 10, 5) == EventPage(
            tuple(_event(seq) for seq in range(1, 6)), False)
