"""Plain values that cross the store boundary: sessions, events, usage, run endings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNNING = "running"
DONE = "done"
ERROR = "error"
CANCELLED = "cancelled"
TERMINAL_STATUSES = (DONE, ERROR, CANCELLED)

THINKING = "thinking"
TOOL_CALL = "tool_call"
TOOL_RESULT = "tool_result"
DELTA = "delta"
# A terminal event's type is the session status it ends with.
TERMINAL_EVENT_TYPES = TERMINAL_STATUSES


@dataclass(frozen=True)
class TokenUsage:
    """Tokens billed by the model provider."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: "TokenUsage") -> "TokenUsage":
        return TokenUsage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True)
class HistoryTurn:
    """One earlier turn the client sends with a new message."""

    role: str
    content: str


@dataclass(frozen=True)
class NewSession:
    """What the start route stores for a new run."""

    id: str
    owner_id: str
    model: str
    message: str
    history: tuple[HistoryTurn, ...] = ()
    title: str | None = None
    conversation_id: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A session row as read from the store."""

    id: str
    owner_id: str
    status: str
    model: str
    created_at: str
    updated_at: str
    message: str = ""
    history: tuple[HistoryTurn, ...] = ()
    title: str | None = None
    conversation_id: str | None = None
    finished_at: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    last_seq: int = 0
    error: str | None = None
    answer: str | None = None
    attempt_id: str | None = None
    lease_until_ms: int | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    request_hash: str | None = None
    expires_at: int | None = None

    @property
    def is_running(self) -> bool:
        return self.status == RUNNING


@dataclass(frozen=True)
class EventRecord:
    """One event in a session's log."""

    session_id: str
    seq: int
    event_type: str
    created_at: str
    content: str | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_input: dict[str, Any] | None = None
    usage: TokenUsage | None = None


@dataclass(frozen=True)
class RunEnding:
    """How a run ends: its status, terminal event, answer and token totals."""

    status: str
    terminal_event: EventRecord
    answer: str = ""
    usage: TokenUsage = field(default_factory=TokenUsage)
    error: str | None = None


@dataclass(frozen=True)
class EventPage:
    """Events after a seq, oldest first, and whether more follow."""

    events: tuple[EventRecord, ...]
    has_more: bool


@dataclass(frozen=True)
class SessionPage:
    """An owner's sessions, newest first, and where the next page starts."""

    sessions: tuple[SessionRecord, ...]
    next_key: dict[str, str] | None
