"""Parse and check request input; every error names the field and says why."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from chalicelib.errors import InvalidRequest, PayloadTooLarge
from chalicelib.records import HistoryTurn
from chalicelib.settings import Settings

# Ids the server issues are URL-safe base64 (sessions, conversations); anything else names
# nothing (and DynamoDB would refuse an empty or huge key).
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
START_FIELDS = ("message", "history", "model", "conversationId", "title")
HISTORY_ROLES = ("user", "assistant")
MAX_WAIT_SECONDS = 20
MAX_EVENTS_LIMIT = 1000
DEFAULT_EVENTS_LIMIT = 200
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20
DEFAULT_TURNS_LIMIT = 50
MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_MODEL_CHARS = 200
# More digits than any valid value has: longer numbers are refused before int() reads them
# (Python refuses to convert more than 4,300 digits at all).
MAX_NUMBER_DIGITS = 16
RENAME_FIELDS = ("title",)


@dataclass(frozen=True)
class StartRequest:
    """A checked start request."""

    message: str
    history: tuple[HistoryTurn, ...]
    model: str | None
    conversation_id: str | None
    title: str | None


@dataclass(frozen=True)
class EventsQuery:
    """Checked query parameters of the events route."""

    after: int
    limit: int
    wait: int


@dataclass(frozen=True)
class ListQuery:
    """Checked query parameters of the list route."""

    limit: int
    cursor: str | None


def parse_start_request(raw_body: bytes | None, settings: Settings) -> StartRequest:
    """Return the start request in the body, or raise InvalidRequest / PayloadTooLarge."""
    body = _json_object(raw_body, settings.max_body_bytes)
    unknown = sorted(set(body) - set(START_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"unknown field {unknown[0]!r}; the start request accepts {', '.join(START_FIELDS)}"
        )
    message = _text(body, "message", required=True, max_chars=settings.max_message_chars,
                    too_long=PayloadTooLarge)
    if not message.strip():
        raise InvalidRequest("message must not be empty or only white space")
    request = StartRequest(
        message=message,
        history=_history(body.get("history"), settings),
        model=_model(body),
        # Any string: an id the server never issued is simply an unknown conversation (404).
        conversation_id=_text(body, "conversationId"),
        title=_title(body, settings) if "title" in body else None,
    )
    if request.conversation_id is not None and request.history:
        raise InvalidRequest("history is only for starting a new conversation (an import); "
                             "with conversationId the server sends the conversation's own turns")
    if request.conversation_id is not None and request.title is not None:
        raise InvalidRequest("title names a new conversation; rename an existing one with "
                             "PATCH /api/chat/conversations/{id}")
    return request


def parse_rename_request(raw_body: bytes | None, settings: Settings) -> str:
    """Return the new title in a rename body, or raise InvalidRequest."""
    body = _json_object(raw_body, settings.max_body_bytes, example='{"title": "Trip plans"}')
    unknown = sorted(set(body) - set(RENAME_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}; the rename request accepts title")
    if "title" not in body:
        raise InvalidRequest("title is required")
    return _title(body, settings)


def parse_idempotency_key(header: str | None) -> str | None:
    """Return the Idempotency-Key header's value, or None when absent."""
    if header is None:
        return None
    if not 1 <= len(header) <= MAX_IDEMPOTENCY_KEY_CHARS or not all(
        33 <= ord(c) <= 126 for c in header
    ):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII "
            "characters without spaces (a UUID, say)"
        )
    return header


def parse_events_query(params: Mapping[str, str] | None) -> EventsQuery:
    """Return after/limit/wait from the query string, with their defaults."""
    params = params or {}
    return EventsQuery(
        after=_int_param(params, "after", 0, 0, 2**53),
        limit=_int_param(params, "limit", DEFAULT_EVENTS_LIMIT, 1, MAX_EVENTS_LIMIT),
        wait=_int_param(params, "wait", 0, 0, MAX_WAIT_SECONDS),
    )


def parse_list_query(params: Mapping[str, str] | None,
                     default_limit: int = DEFAULT_LIST_LIMIT) -> ListQuery:
    """Return limit/cursor from the query string of a list route."""
    params = params or {}
    cursor = params.get("cursor")
    if cursor is not None and not cursor:
        raise InvalidRequest("cursor must not be empty; omit it to start from the first page")
    return ListQuery(limit=_int_param(params, "limit", default_limit, 1, MAX_LIST_LIMIT),
                     cursor=cursor)


def _json_object(raw_body: bytes | None, max_bytes: int,
                 example: str = '{"message": "Hello"}') -> dict[str, Any]:
    if raw_body is None or not raw_body.strip():
        raise InvalidRequest(f"the body must be a JSON object such as {example}")
    if len(raw_body) > max_bytes:
        raise PayloadTooLarge(f"the body is {len(raw_body)} bytes; the limit is {max_bytes}")
    try:
        body = json.loads(raw_body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    except ValueError as error:
        raise InvalidRequest(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest("the body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, not {_json_type(body)}")
    return body


def _text(body: Mapping[str, Any], name: str, required: bool = False, max_chars: int = 0,
          too_long: type[Exception] = InvalidRequest) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, not {_json_type(value)}")
    if required and value == "":
        raise InvalidRequest(f"{name} must not be empty")
    _check_unicode(name, value)
    if max_chars and len(value) > max_chars:
        raise too_long(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    return value


def _model(body: Mapping[str, Any]) -> str | None:
    model = _text(body, "model", max_chars=MAX_MODEL_CHARS)
    if model is not None and not (model and all(33 <= ord(c) <= 126 for c in model)):
        raise InvalidRequest("model must be a model name such as demo or openai:gpt-4o-mini "
                             f"(1 to {MAX_MODEL_CHARS} printable ASCII characters, no spaces)")
    return model


def _title(body: Mapping[str, Any], settings: Settings) -> str:
    title = _text(body, "title", required=True, max_chars=settings.max_title_chars)
    if not title.strip():
        raise InvalidRequest("title must not be empty or only white space")
    return title.strip()


def _history(value: Any, settings: Settings) -> tuple[HistoryTurn, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest(f"history must be a list of turns, not {_json_type(value)}")
    if len(value) > settings.max_history_items:
        raise PayloadTooLarge(
            f"history has {len(value)} turns; the limit is {settings.max_history_items}"
        )
    turns = []
    size = 0
    for index, item in enumerate(value):
        where = f"history[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object with role and content")
        extra = sorted(set(item) - {"role", "content"})
        if extra:
            raise InvalidRequest(f"{where} has an unknown field {extra[0]!r}")
        role = item.get("role")
        if role not in HISTORY_ROLES:
            raise InvalidRequest(f'{where}.role must be "user" or "assistant"')
        content = item.get("content")
        if not isinstance(content, str):
            raise InvalidRequest(f"{where}.content must be a string")
        _check_unicode(f"{where}.content", content)
        size += len(content.encode("utf-8"))
        turns.append(HistoryTurn(role, content))
    if size > settings.max_history_bytes:
        raise PayloadTooLarge(
            f"history holds {size} bytes of text; the limit is {settings.max_history_bytes}"
        )
    return tuple(turns)


def _check_unicode(name: str, value: str) -> None:
    # JSON may carry lone surrogates ("\ud800") that no UTF-8 store can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{name} contains invalid Unicode (a lone surrogate)") from None


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_NUMBER_DIGITS:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}, not {shown!r}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be from {low} to {high}, not {value}")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
