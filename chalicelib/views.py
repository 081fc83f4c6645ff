"""The JSON shapes of sessions and events in API responses (camelCase, per DESIGN)."""
from __future__ import annotations

from typing import Any

from chalicelib.records import EventRecord, SessionRecord


def session_view(session: SessionRecord, include_answer: bool = True) -> dict[str, Any]:
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
        "inputTokens": session.usage.input_tokens,
        "outputTokens": session.usage.output_tokens,
        "totalTokens": session.usage.total_tokens,
        "lastSeq": session.last_seq,
        "error": session.error,
    }
    if include_answer:
        view["answer"] = session.answer
    return view


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
        view["usage"] = {
            "inputTokens": event.usage.input_tokens,
            "outputTokens": event.usage.output_tokens,
            "totalTokens": event.usage.total_tokens,
        }
    return view
