"""The exceptions the client raises: an API error answer, no usable answer, or a run that failed."""
from __future__ import annotations


class BackchatError(Exception):
    """Base of every error the backchat client raises."""


class ApiError(BackchatError):
    """The API answered with an error status; `status`, `code` and `message` say which and why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status = status
        self.code = code
        self.message = message


class ConnectionFailed(BackchatError):
    """The API gave no usable answer (unreachable, timed out, cut off), even after retrying."""


class RunFailed(BackchatError):
    """The run ended `error` or `cancelled`; `answer` holds the partial answer it had written."""

    def __init__(self, session_id: str, status: str, message: str, answer: str) -> None:
        super().__init__(f"session {session_id} ended {status}: {message}")
        self.session_id = session_id
        self.status = status
        self.message = message
        self.answer = answer
