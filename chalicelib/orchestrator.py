"""The orchestrator: one background run of a session, from lease claim to terminal event."""
from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

from chalicelib import clock, telemetry
from chalicelib.conversations import ConversationStore
from chalicelib.errors import CancelRequested, LeaseLost, ProviderError, StoreUnavailable, ToolError
from chalicelib.history import model_messages
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import (
    Message,
    ModelRequest,
    ProviderStream,
    StreamItem,
    TextChunk,
    ThinkingChunk,
    ToolCall,
    Usage,
)
from chalicelib.records import SessionRecord, TokenUsage, Turn
from chalicelib.settings import Settings
from chalicelib.store import SessionStore
from chalicelib.text import BoundedText
from chalicelib.tools import ToolRegistry
from chalicelib.writer import EventWriter, FlushPolicy

logger = logging.getLogger(__name__)

# Seconds left before the platform kills the run; None when there is no such limit.
RemainingTime = Callable[[], float]

INTERNAL_ERROR = "The run failed because of an internal error. The server log has the details."
DEADLINE_ERROR = "The run reached its time limit and was stopped."
TRUNCATION_MARKER = "\n…[truncated {dropped} characters]"
# The most of a tool call's id and name an event shows.
MAX_TOOL_ID_CHARS = 128
# Items the provider's reader thread may get ahead of the run before it waits (back-pressure).
PUMP_QUEUE_ITEMS = 256


class DeadlineReached(Exception):
    """The invocation is about to be killed; the run must end now."""


@dataclass(frozen=True)
class StepResult:
    """What one model call produced: its text and the tool calls it asked for."""

    text: str
    tool_calls: tuple[ToolCall, ...]


class Orchestrator:
    """Runs sessions: stream from the model, run tools, feed results back, until an answer."""

    def __init__(self, store: SessionStore, conversations: ConversationStore,
                 providers: ProviderRegistry, tools: ToolRegistry, settings: Settings,
                 metrics: telemetry.Metrics | None = None) -> None:
        self._store = store
        self._conversations = conversations
        self._providers = providers
        self._tools = tools
        self._settings = settings
        self._metrics = metrics or telemetry.metrics_for(settings.stage, deployed=False)

    def run(self, session_id: str, remaining_time: RemainingTime | None = None) -> None:
        """Run the session to its end; a second delivery of the same session does nothing."""
        attempt_id = uuid.uuid4().hex
        session = self._store.claim_lease(session_id, attempt_id)
        if session is None:
            logger.info("session %s: already claimed or ended; this delivery does nothing",
                        session_id)
            return
        with telemetry.run_context(session_id, attempt_id):
            logger.info("session %s: attempt %s claimed the run", session_id, attempt_id)
            stopwatch = telemetry.RunStopwatch(requested_at_ms=clock.ms_from_iso(session.created_at))
            writer = EventWriter(self._store, session, attempt_id,
                                 policy=_flush_policy(self._settings),
                                 on_first_event=stopwatch.first_event)
            history = lambda: self._conversations.turns_before(  # noqa: E731
                session.conversation_id, session.created_at, session.id)
            outcome = _Run(session, history, writer, self._providers, self._tools,
                           self._settings, remaining_time, self._metrics).execute()
            usage = writer.usage
            telemetry.report_run(telemetry.RunSummary(
                session_id=session_id, attempt_id=attempt_id, outcome=outcome,
                model=session.model, duration_ms=stopwatch.duration_ms(),
                time_to_first_event_ms=stopwatch.time_to_first_event_ms(),
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens), self._metrics)


def _flush_policy(settings: Settings) -> FlushPolicy:
    """Merge text for the flush interval, or write every chunk at once (FLUSH_MODE=per_chunk)."""
    interval = 0.0 if settings.flush_mode == "per_chunk" else settings.flush_interval
    return FlushPolicy(interval, settings.flush_max_chars, settings.heartbeat_interval,
                       index_interval=settings.lease_index_seconds,
                       max_answer_bytes=settings.max_answer_bytes, first_chunk_at_once=True)


class _Run:
    """One attempt at one session; ends with exactly one terminal event unless the lease is lost."""

    def __init__(self, session: SessionRecord, history: Callable[[], Iterator[Turn]],
                 writer: EventWriter, providers: ProviderRegistry, tools: ToolRegistry,
                 settings: Settings, remaining_time: RemainingTime | None,
                 metrics: telemetry.Metrics) -> None:
        self._session = session
        self._metrics = metrics
        self._history = history
        self._writer = writer
        self._providers = providers
        self._tools = tools
        self._settings = settings
        self._remaining_time = remaining_time

    def execute(self) -> str:
        """Run to the end; return the outcome (the terminal status, or lease_lost)."""
        sid = self._session.id
        try:
            self._agent_loop()
        except CancelRequested:
            self._end(self._writer.finish_cancelled)
        except LeaseLost:
            logger.warning("session %s: lease lost; this attempt stops without writing", sid)
            return "lease_lost"
        except ProviderError as error:
            logger.info("session %s: provider error: %s", sid, error)
            self._metrics.provider_failed(self._session.model.partition(":")[0])
            message = str(error)
            self._end(lambda: self._writer.finish_error(message))
        except DeadlineReached:
            self._end(lambda: self._writer.finish_error(DEADLINE_ERROR))
        except StoreUnavailable:
            logger.exception("session %s: the store failed during the run", sid)
            self._end(lambda: self._writer.finish_error(INTERNAL_ERROR))
        except Exception:
            logger.exception("session %s: the run failed", sid)
            self._end(lambda: self._writer.finish_error(INTERNAL_ERROR))
        # No terminal write: the lease was lost at the end, or the reaper ends it as error.
        return self._writer.ended_status or "error"

    def _end(self, finish: Callable[[], None]) -> None:
        try:
            finish()
        except LeaseLost:
            logger.warning("session %s: lease lost before the terminal write", self._session.id)
        except Exception:
            # The reaper ends the session once the lease runs out.
            logger.exception("session %s: could not write the terminal event", self._session.id)

    def _agent_loop(self) -> None:
        settings = self._settings
        ref = self._providers.resolve(self._session.model)
        provider = self._providers.provider(ref)
        messages = model_messages(self._history(), settings.max_history_bytes)
        for _ in range(settings.step_limit):
            request = ModelRequest(model=ref.name, messages=tuple(messages),
                                   tools=self._tools.specs())
            step = self._model_step(provider.stream(request))
            if not step.tool_calls:
                self._writer.finish_done()
                return
            messages.append(Message("assistant", step.text, tool_calls=step.tool_calls))
            for call in step.tool_calls:
                messages.append(Message("tool", self._run_tool(call), tool_call_id=call.id))
        self._writer.finish_error(
            f"The model did not finish its answer within {settings.step_limit} steps "
            "(the step limit); try a simpler request."
        )

    def _model_step(self, stream: ProviderStream) -> StepResult:
        """Stream one model call into the writer; always close the stream."""
        text = BoundedText(self._settings.max_answer_bytes)
        calls: list[ToolCall] = []
        try:
            for item in _pumped(stream, self._writer.seconds_until_due):
                self._check_deadline()
                if item is None:
                    self._writer.tick()
                elif isinstance(item, TextChunk):
                    text.add(item.text)
                    self._writer.append_delta(item.text)
                elif isinstance(item, ThinkingChunk):
                    self._writer.append_thinking(item.text)
                elif isinstance(item, ToolCall):
                    calls.append(item)
                elif isinstance(item, Usage):
                    self._writer.add_usage(TokenUsage(item.input_tokens, item.output_tokens))
        finally:
            # Closing stops the provider from producing (and billing) more tokens.
            stream.close()
        return StepResult(text.text, tuple(calls))

    def _run_tool(self, call: ToolCall) -> str:
        """Record the call, run the tool, record its (truncated) output and return it."""
        self._check_deadline()
        # What the model sent is shown, bounded: an id or a name of any length could make
        # an event too large to store.
        self._writer.append_tool_call(call.id[:MAX_TOOL_ID_CHARS], call.name[:MAX_TOOL_ID_CHARS],
                                      _shown_input(call.input, self._settings.max_tool_output_chars))
        try:
            output = self._tools.run(call.name, call.input)
        except ToolError as error:
            output = f"error: {error}"
        output = _truncate(output, self._settings.max_tool_output_chars)
        self._writer.append_tool_result(call.id[:MAX_TOOL_ID_CHARS], output)
        return output

    def _check_deadline(self) -> None:
        if self._remaining_time is None:
            return
        if self._remaining_time() < self._settings.deadline_margin_seconds:
            raise DeadlineReached()


_END = object()


def _pumped(stream: ProviderStream, wait_for: Callable[[], float]) -> Iterator[StreamItem | None]:
    """Yield the stream's items, and None whenever `wait_for()` seconds pass with no item.

    The stream is read on a helper thread so the run can flush text and notice a cancel
    request while the provider is silent. The queue between them is bounded: a provider
    faster than the store waits (back-pressure) instead of piling text up in memory, and once
    the run stops reading, the helper thread stops too.
    """
    items: queue.Queue = queue.Queue(maxsize=PUMP_QUEUE_ITEMS)
    stopped = threading.Event()

    def hand_over(item: object) -> None:
        while not stopped.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def pump() -> None:
        try:
            for item in stream:
                hand_over(item)
                if stopped.is_set():
                    return
        except BaseException as error:  # handed to the run, which decides what it means
            hand_over(error)
        finally:
            hand_over(_END)

    threading.Thread(target=telemetry.carry_context(pump), name="provider-stream",
                     daemon=True).start()
    try:
        while True:
            try:
                item = items.get(timeout=max(wait_for(), 0.001))
            except queue.Empty:
                yield None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()


def _shown_input(tool_input: dict, max_chars: int) -> dict:
    """Return a tool input as recorded in its event: whole, or cut down if it is huge."""
    text = json.dumps(tool_input, ensure_ascii=False)
    if len(text) <= max_chars:
        return tool_input
    return {"truncated": _truncate(text, max_chars)}


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    dropped = len(text) - max_chars
    return text[:max_chars] + TRUNCATION_MARKER.format(dropped=dropped)
