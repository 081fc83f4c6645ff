"""In-process notice of new events, so a long-poll wakes when this process writes them.

A long-poll watches its session; the store announces every write that added events
(which includes every status change: a terminal write always adds the terminal event), with
the session's lastSeq and status as that write committed them and the events themselves, so
a woken long-poll can answer without reading the session or the events again. A watched
session keeps only its last few announced events: a long-poll that needs older ones (or any
the announcements did not carry) reads the store.
Only writes made in this process are announced: in the local server and in tests the
orchestrator runs in the API's process, but a deployed API function never sees the
orchestrator's writes, so a long-poll still re-reads the store at an interval.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from chalicelib.records import EventPage, EventRecord

# Announced events a watched session keeps: a woken long-poll usually needs the last write's.
KEPT_EVENTS = 32


@dataclass
class _Watched:
    """One session that long-polls wait on: a counter of announced writes."""

    condition: threading.Condition
    writes: int = 0
    watchers: int = 0
    # (lastSeq, status) as the latest announced write left them.
    state: tuple[int, str] | None = None
    # The latest announced events, committed, in seq order.
    events: deque[EventRecord] = field(default_factory=lambda: deque(maxlen=KEPT_EVENTS))


@dataclass
class SessionWatch:
    """A long-poll's hold on one session's announcements."""

    _watched: _Watched
    _lock: threading.Lock = field(repr=False)

    def writes(self) -> int:
        """Return how many writes were announced so far; read it before reading the store."""
        with self._lock:
            return self._watched.writes

    def state(self) -> tuple[int, str] | None:
        """Return (lastSeq, status) as the latest announced write committed them."""
        with self._lock:
            return self._watched.state

    def events_after(self, after: int, limit: int, last_seq: int) -> EventPage | None:
        """Return the page the store would, from the announced events: those contiguous from
        after + 1, at most `limit`, none past last_seq; None if they do not hold after + 1."""
        upper = min(last_seq, after + limit)
        with self._lock:
            kept = {e.seq: e for e in self._watched.events if after < e.seq <= upper}
        contiguous: list[EventRecord] = []
        # In seq order, up to the first gap: announcements are made after their commits,
        # so two writers' could arrive out of order.
        while (event := kept.get(after + 1 + len(contiguous))) is not None:
            contiguous.append(event)
        if not contiguous:
            return None
        return EventPage(events=tuple(contiguous), has_more=contiguous[-1].seq < last_seq)

    def wait(self, seen: int, timeout: float) -> None:
        """Return once a write after `seen` is announced, or after timeout seconds."""
        with self._lock:
            self._watched.condition.wait_for(lambda: self._watched.writes != seen, timeout)


class SessionChanges:
    """Announcements of writes to sessions, per session, within one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}

    def announce(self, session_id: str, last_seq: int, status: str,
                 events: Sequence[EventRecord] = ()) -> None:
        """Wake the long-polls watching this session (if any), telling them its new state
        and the events the write committed."""
        with self._lock:
            watched = self._watched.get(session_id)
            if watched is not None:
                watched.writes += 1
                watched.state = (last_seq, status)
                watched.events.extend(events)
                watched.condition.notify_all()

    @contextmanager
    def watch(self, session_id: str) -> Iterator[SessionWatch]:
        """Watch a session for the duration of the block."""
        with self._lock:
            watched = self._watched.get(session_id)
            if watched is None:
                watched = self._watched[session_id] = _Watched(threading.Condition(self._lock))
            watched.watchers += 1
        try:
            yield SessionWatch(watched, self._lock)
        finally:
            with self._lock:
                watched.watchers -= 1
                if watched.watchers == 0:
                    del self._watched[session_id]


# Every store in the process announces here, so a waiter hears a write made through any of them.
PROCESS_CHANGES = SessionChanges()
