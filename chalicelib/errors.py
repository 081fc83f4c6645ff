"""The project's exceptions; app.py maps each to an HTTP status in one place."""
from __future__ import annotations


class BackchatError(Exception):
    """Base of every error backchat raises on purpose."""


class InvalidRequest(BackchatError):
    """The request is malformed; the message names the field and why."""


class PayloadTooLarge(BackchatError):
    """The body or one of its fields is larger than the configured limit."""


class SessionNotFound(BackchatError):
    """No such session for this caller (unknown, expired or another owner's)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id[:64]} not found")
        self.session_id = session_id


class ConversationNotFound(BackchatError):
    """No such conversation for this caller (unknown, deleted or another owner's)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"Conversation {conversation_id[:64]} not found")
        self.conversation_id = conversation_id


class ConversationBusy(BackchatError):
    """A turn of the conversation is still running; one runs at a time."""


class NotAuthenticated(BackchatError):
    """The request carries no valid credentials."""


class Forbidden(BackchatError):
    """The request comes from somewhere this server does not serve (another site, another host)."""


class IdempotencyConflict(BackchatError):
    """An Idempotency-Key was reused with a different request body."""


class TooManyRunningSessions(BackchatError):
    """The owner already has the maximum number of running sessions."""


class DispatchFailed(BackchatError):
    """The run could not be handed to the orchestrator; the session was ended as error."""


class StoreUnavailable(BackchatError):
    """DynamoDB could not be reached or refused the request for a transient reason."""


class LeaseLost(BackchatError):
    """This orchestrator attempt no longer owns the session; it must stop writing."""


class CancelRequested(BackchatError):
    """The session's owner asked the run to stop."""


class ProviderError(BackchatError):
    """The model provider failed; the message is safe to show to the user."""


class ToolError(BackchatError):
    """A tool could not run with the given input; the message is shown to the model."""
