"""Plain values that cross the store boundary: sessions, events, conversations, turns, endings."""
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
    """One message of an imported history: a role ("user" or "assistant") and its text."""

    role: str
    content: str


@dataclass(frozen=True)
class NewSession:
    """What the start route stores for a new run: the session and its turn's input."""

    id: str
    owner_id: str
    model: str
    message: str
    conversation_id: str
    title: str
    history: tuple[HistoryTurn, ...] = ()
    idempotency_key: str | None = None
    request_hash: str | None = None
    # True when the start opens the conversation (its row is created with the turn).
    new_conversation: bool = False


@dataclass(frozen=True)
class SessionRecord:
    """A session row as read from the store (the run's state; no message, no answer)."""

    id: str
    owner_id: str
    conversation_id: str
    status: str
    model: str
    created_at: str
    updated_at: str
    title: str | None = None
    finished_at: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    last_seq: int = 0
    error: str | None = None
    attempt_id: str | None = None
    lease_until_ms: int | None = None
    reap_failures: int = 0
    cancel_requested: bool = False
    conversation_deleted: bool = False
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


@dataclass(frozen=True)
class ConversationRecord:
    """A conversation's row."""

    id: str
    owner_id: str
    title: str
    created_at: str
    updated_at: str
    turn_count: int = 0
    last_session_id: str | None = None
    last_status: str | None = None
    running_session_id: str | None = None
    deleted: bool = False


@dataclass(frozen=True)
class ConversationPage:
    """An owner's conversations, most recently active first, and where the next page starts."""

    conversations: tuple[ConversationRecord, ...]
    next_key: dict[str, str] | None


@dataclass(frozen=True)
class TurnInput:
    """A turn's input: the user's message and, on a first turn, the imported history."""

    session_id: str
    created_at: str
    model: str
    message: str
    history: tuple[HistoryTurn, ...] = ()


@dataclass(frozen=True)
class TurnEnding:
    """How a turn ended, as kept beside its input in the conversation."""

    session_id: str
    status: str
    finished_at: str
    answer: str = ""
    error: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation: its input and, once it has ended, its ending."""

    input: TurnInput
    ending: TurnEnding | None = None


@dataclass(frozen=True)
class TurnPage:
    """A conversation's turns, oldest first, and where the next page starts."""

    turns: tuple[Turn, ...]
    next_key: dict[str, str] | None
