"""EventWriter: turns a run's output into the session's event log.

It numbers events, merges consecutive text chunks so a long answer costs few writes,
renews the lease while the run is quiet, and writes the terminal event together with
the final status.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from chalicelib import clock
from chalicelib.records import (
    CANCELLED,
    DELTA,
    DONE,
    ERROR,
    THINKING,
    TOOL_CALL,
    TOOL_RESULT,
    EventRecord,
    RunEnding,
    SessionRecord,
    TokenUsage,
)
from chalicelib.store import Fence, SessionStore
from chalicelib.text import BoundedText

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlushPolicy:
    """When merged text is written: at most one write per interval, or when it grows large."""

    interval: float = 0.2
    # Also the most text one event holds: a larger chunk is split over several events.
    max_chars: int = 2_000
    heartbeat_interval: float = 1.0
    # How often a write also moves the session in the reaper's index (a GSI write).
    index_interval: float = 15.0
    # The answer kept in memory for the turn's ending; the events hold all of it.
    max_answer_bytes: int = 300_000
    # Write the run's first chunk at once rather than merging it: the lease claim just
    # before it is a write, but nothing is on the user's screen yet.
    first_chunk_at_once: bool = False


@dataclass
class _TextBuffer:
    """Consecutive chunks of one kind (delta or thinking) waiting to be written."""

    event_type: str
    first_chunk_ms: int
    parts: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class EventWriter:
    """The only writer of one session's events, for one orchestrator attempt."""

    def __init__(
        self,
        store: SessionStore,
        session: SessionRecord,
        attempt_id: str,
        policy: FlushPolicy = FlushPolicy(),
        monotonic: Callable[[], float] = time.monotonic,
        on_first_event: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_first_event = on_first_event
        self._session = session
        self._session_id = session.id
        self._fence = Fence(attempt_id)
        self._policy = policy
        self._monotonic = monotonic
        self._next_seq = session.last_seq + 1
        self._first_seq = self._next_seq
        self._buffer: _TextBuffer | None = None
        # Events built but not yet stored: a refused write keeps them for the terminal write.
        self._unwritten: list[EventRecord] = []
        self._answer = BoundedText(policy.max_answer_bytes)
        self._usage = TokenUsage()
        # The lease was just claimed (which also placed it in the reaper's index); treat that
        # as the last contact with the store.
        self._last_write = monotonic()
        self._last_index_renewal = self._last_write
        # The status of the terminal event, once written.
        self.ended_status: str | None = None

    @property
    def answer(self) -> str:
        """Return the answer text written so far (the delta events), up to the stored cap."""
        return self._answer.text

    @property
    def usage(self) -> TokenUsage:
        return self._usage

    def add_usage(self, usage: TokenUsage) -> None:
        """Add one model call's token counts to the run's total."""
        self._usage = self._usage + usage

    def append_delta(self, text: str) -> None:
        """Add a piece of the answer; it is written now or merged into the next write."""
        self._append_text(DELTA, text)

    def append_thinking(self, text: str) -> None:
        """Add a piece of reasoning text, merged like deltas."""
        self._append_text(THINKING, text)

    def append_tool_call(self, call_id: str, name: str, tool_input: dict[str, Any]) -> None:
        """Write a tool call at once, after any merged text before it."""
        self._write_now(TOOL_CALL, tool_name=name, tool_call_id=call_id, tool_input=tool_input)

    def append_tool_result(self, call_id: str, content: str) -> None:
        """Write a tool's output at once."""
        self._write_now(TOOL_RESULT, tool_call_id=call_id, content=content)

    def seconds_until_due(self) -> float:
        """Return how long the caller may wait for input before calling tick()."""
        since = self._monotonic() - self._last_write
        due_in = (self._policy.interval if self._buffer else self._policy.heartbeat_interval) - since
        return max(0.0, due_in)

    def tick(self) -> None:
        """Write merged text whose interval has passed, or renew the lease if the run is quiet.

        Raises CancelRequested or LeaseLost like any write.
        """
        if self.seconds_until_due() > 0:
            return
        if self._buffer is not None:
            self._flush()
        else:
            self._store.append(self._session_id, self._fence, [], self._usage,
                               renew_index=self._index_due())
            self._last_write = self._monotonic()

    def finish_done(self) -> None:
        """End the run as done, with the token usage on the terminal event."""
        self._finish(DONE, usage=self._usage)

    def finish_error(self, message: str) -> None:
        """End the run as error; the message is shown to the user."""
        self._finish(ERROR, content=message, error=message)

    def finish_cancelled(self) -> None:
        """End the run as cancelled; the partial answer stays in the earlier deltas."""
        self._finish(CANCELLED)

    # -- internals ------------------------------------------------------------

    def _append_text(self, event_type: str, text: str) -> None:
        if not text:
            return
        if self._buffer is not None and self._buffer.event_type != event_type:
            self._flush()
        while text:
            if self._buffer is None:
                self._buffer = _TextBuffer(event_type, first_chunk_ms=clock.now_ms())
            # A chunk larger than an event may hold is split, so no event grows past max_chars.
            room = self._policy.max_chars - self._buffer.size
            piece, text = text[:room], text[room:]
            self._buffer.add(piece)
            # The first chunk after a quiet spell goes out at once (low latency); while the
            # model streams, chunks merge until the interval passes (few writes).
            first = self._policy.first_chunk_at_once and self._next_seq == self._first_seq
            if (first or self._buffer.size >= self._policy.max_chars
                    or self.seconds_until_due() == 0):
                self._flush()

    def _flush(self) -> None:
        self._take_buffer()
        self._store_unwritten()

    def _write_now(self, event_type: str, **fields: Any) -> None:
        # The merged text comes first, so it takes the lower seq.
        self._take_buffer()
        self._unwritten.append(self._event(event_type, **fields))
        self._store_unwritten()

    def _take_buffer(self) -> None:
        """Turn the merged text into an event in the unwritten list."""
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            self._unwritten.append(self._event(buffer.event_type, content=buffer.text,
                                               created_ms=buffer.first_chunk_ms))

    def _store_unwritten(self) -> None:
        if not self._unwritten:
            return
        self._store.append(self._session_id, self._fence, self._unwritten, self._usage,
                           renew_index=self._index_due())
        self._mark_written()

    def _index_due(self) -> bool:
        """Return True (and count it as done) if this write should move the reaper's index."""
        now = self._monotonic()
        if now - self._last_index_renewal < self._policy.index_interval:
            return False
        self._last_index_renewal = now
        return True

    def _mark_written(self) -> None:
        if self._unwritten and self._on_first_event is not None:
            self._on_first_event()
            self._on_first_event = None
        for event in self._unwritten:
            if event.event_type == DELTA:
                self._answer.add(event.content or "")
        self._unwritten = []
        self._last_write = self._monotonic()

    def _finish(self, status: str, content: str | None = None, error: str | None = None,
                usage: TokenUsage | None = None) -> None:
        if self.ended_status is not None:
            raise RuntimeError(f"session {self._session_id}: the run has already ended")
        self._take_buffer()
        terminal = self._event(status, content=content, usage=usage)
        pending = list(self._unwritten)
        answer = self._answer.with_more(e.content or "" for e in pending if e.event_type == DELTA)
        ending = RunEnding(status=status, terminal_event=terminal, answer=answer,
                           usage=self._usage, error=error)
        try:
            self._store.finish(self._session, self._fence, pending, ending)
        except Exception:
            # The terminal event was not written: its seq is free for the next ending.
            self._next_seq -= 1
            raise
        self._mark_written()
        self.ended_status = status
        logger.info("session %s: ended %s at seq %d", self._session_id, status, terminal.seq)

    def _event(self, event_type: str, created_ms: int | None = None, **fields: Any) -> EventRecord:
        seq = self._next_seq
        self._next_seq += 1
        created = clock.iso_from_ms(created_ms if created_ms is not None else clock.now_ms())
        return EventRecord(session_id=self._session_id, seq=seq, event_type=event_type,
                           created_at=created, **fields)
