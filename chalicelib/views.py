"""The JSON shapes of sessions, events, conversations and turns in responses (camelCase)."""
from __future__ import annotations

import json
from typing import Any

from chalicelib.records import (
    ConversationRecord,
    EventRecord,
    SessionRecord,
    TokenUsage,
    Turn,
)


def session_view(session: SessionRecord, answer: str | None = None,
                 include_answer: bool = True) -> dict[str, Any]:
    """Return the session object; lists leave out the answer to keep pages small."""
    view: dict[str, Any] = {
        "id": session.id,
        "status": session.status,
        "model": session.model,
        "title": session.title,
        "conversationId": session.conversation_id,
        "createdAt": session.created_at,
        "updatedAt": session.updated_at,
        "finishedAt": session.finished_at,
        **usage_view(session.usage),
        "lastSeq": session.last_seq,
        "error": session.error,
    }
    if include_answer:
        view["answer"] = answer
    return view


def start_view(session: SessionRecord) -> dict[str, Any]:
    """Return the start route's answer."""
    return {"sessionId": session.id, "conversationId": session.conversation_id,
            "status": session.status, "model": session.model, "createdAt": session.created_at}


def event_view(event: EventRecord) -> dict[str, Any]:
    """Return the event object; fields that do not apply are omitted."""
    view: dict[str, Any] = {
        "sessionId": event.session_id,
        "seq": event.seq,
        "eventType": event.event_type,
    }
    optional = {
        "content": event.content,
        "toolName": event.tool_name,
        "toolCallId": event.tool_call_id,
        "toolInput": event.tool_input,
    }
    view.update({key: value for key, value in optional.items() if value is not None})
    view["createdAt"] = event.created_at
    if event.usage is not None:
        view["usage"] = usage_view(event.usage)
    return view


def conversation_view(conversation: ConversationRecord) -> dict[str, Any]:
    """Return a conversation as lists show it."""
    return {
        "id": conversation.id,
        "title": conversation.title,
        "createdAt": conversation.created_at,
        "updatedAt": conversation.updated_at,
        "turnCount": conversation.turn_count,
        "lastSessionId": conversation.last_session_id,
        "lastStatus": conversation.last_status,
    }


def turn_view(turn: Turn, session: SessionRecord | None) -> dict[str, Any]:
    """Return one turn of a conversation: its input and how it ended (or, while it runs,
    its session's live state)."""
    ending = turn.ending
    if ending is not None:
        status, answer, error, finished, usage = (ending.status, ending.answer, ending.error,
                                                  ending.finished_at, ending.usage)
    elif session is not None:
        status, answer, error, finished, usage = (session.status, None, session.error,
                                                  session.finished_at, session.usage)
    else:  # the session expired before its conversation
        status, answer, error, finished, usage = ("error", None, None, None, TokenUsage())
    return {
        "sessionId": turn.input.session_id,
        "status": status,
        "model": turn.input.model,
        "message": turn.input.message,
        "answer": answer,
        "error": error,
        "createdAt": turn.input.created_at,
        "finishedAt": finished,
        **usage_view(usage),
    }


def usage_view(usage: TokenUsage) -> dict[str, int]:
    return {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
            "totalTokens": usage.total_tokens}


def json_size(view: Any) -> int:
    """Return the bytes a view takes in a response, as Chalice serialises it (ASCII-escaped:
    an emoji is 12 bytes, a control character 6)."""
    return len(json.dumps(view, separators=(",", ":")))
