"""Orchestrator: the agent loop, tool calls, terminal events, redelivery, cancel, failures."""
from __future__ import annotations

import threading
import time

from chalicelib.conversations import ConversationStore
from chalicelib.errors import ProviderError
from chalicelib.orchestrator import DEADLINE_ERROR, INTERNAL_ERROR, Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import TextChunk, ThinkingChunk, ToolCall, Usage
from chalicelib.records import HistoryTurn, TokenUsage
from chalicelib.settings import Settings
from chalicelib.store import Fence, SessionStore
from chalicelib.tools import default_tools
from tests import builders
from tests.builders import log, stored_answer
from tests.fakes import ScriptedProvider

ANSWER = ["The ", "answer ", "is ", "**391**", "."]


def answer_script(usage: Usage = Usage(10, 5)) -> list:
    return [ThinkingChunk("Thinking. "), *map(TextChunk, ANSWER), usage]


def make_orchestrator(store: SessionStore, settings: Settings,
                      provider: ScriptedProvider) -> Orchestrator:
    return Orchestrator(store, ConversationStore(store.models), ProviderRegistry({"demo": provider}),
                        default_tools(), settings)


def start(store: SessionStore, session_id: str = "s1", message: str = "what is 17*23?",
          **fields: object) -> None:
    builders.start(store, session_id, message=message, **fields)


def assert_well_formed(store: SessionStore, session_id: str = "s1") -> list:
    """Check invariants 1, 2 and 7 on a finished session and return its events."""
    events = log(store, session_id)
    session = store.get(session_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    terminal = [e for e in events if e.event_type in ("done", "error", "cancelled")]
    assert terminal == [events[-1]]
    assert session.status == events[-1].event_type
    assert session.last_seq == events[-1].seq
    assert "".join(e.content for e in events if e.event_type == "delta") == stored_answer(
        store, session_id)
    return events


def test_plain_answer_streams_deltas_and_ends_done(store, settings) -> None:
    start(store)
    make_orchestrator(store, settings, ScriptedProvider(answer_script())).run("s1")
    events = assert_well_formed(store)
    assert events[0].event_type == "thinking"
    assert stored_answer(store) == "".join(ANSWER)
    assert events[-1].usage == TokenUsage(10, 5)


def test_tool_calls_run_and_their_results_go_back_to_the_model(store, settings) -> None:
    start(store)
    provider = ScriptedProvider(
        [ThinkingChunk("Use the calculator."),
         ToolCall("c1", "calculator", {"expression": "17*23"}), Usage(8, 3)],
        answer_script(Usage(20, 6)),
    )
    make_orchestrator(store, settings, provider).run("s1")
    events = assert_well_formed(store)
    kinds = [e.event_type for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("delta")
    call = next(e for e in events if e.event_type == "tool_call")
    result = next(e for e in events if e.event_type == "tool_result")
    assert (call.tool_name, call.tool_input, call.tool_call_id) == (
        "calculator", {"expression": "17*23"}, "c1")
    assert (result.tool_call_id, result.content) == ("c1", "391")
    second = provider.requests[1].messages
    assert second[-2].tool_calls == (ToolCall("c1", "calculator", {"expression": "17*23"}),)
    assert (second[-1].role, second[-1].tool_call_id, second[-1].content) == ("tool", "c1", "391")
    assert events[-1].usage == TokenUsage(28, 9)


def test_imported_history_reaches_the_model_before_the_message(store, settings) -> None:
    start(store, message="и ещё?", history=(HistoryTurn("user", "Привет"),
                                           HistoryTurn("assistant", "Здравствуйте!")))
    provider = ScriptedProvider(answer_script())
    make_orchestrator(store, settings, provider).run("s1")
    messages = provider.requests[0].messages
    assert [(m.role, m.content) for m in messages] == [
        ("user", "Привет"), ("assistant", "Здравствуйте!"), ("user", "и ещё?")]


def test_a_later_turn_gets_the_conversations_earlier_turns_from_the_server(
        store, settings) -> None:
    history = (HistoryTurn("user", "seed question"), HistoryTurn("assistant", "seed answer"))
    start(store, "t1", message="first", conversation_id="conv", history=history)
    make_orchestrator(store, settings, ScriptedProvider(answer_script())).run("t1")
    start(store, "t2", message="second", conversation_id="conv", new_conversation=False)
    failing = ScriptedProvider([ProviderError("down")])
    make_orchestrator(store, settings, failing).run("t2")  # no answer text: left out
    start(store, "t3", message="third", conversation_id="conv", new_conversation=False)
    provider = ScriptedProvider(answer_script())
    make_orchestrator(store, settings, provider).run("t3")
    assert [(m.role, m.content) for m in provider.requests[0].messages] == [
        ("user", "seed question"), ("assistant", "seed answer"),
        ("user", "first"), ("assistant", "".join(ANSWER)), ("user", "third")]


def test_the_model_gets_the_most_recent_turns_that_fit_the_budget(store, settings) -> None:
    settings = settings.with_overrides(max_history_bytes=60)
    for index in range(4):
        start(store, f"t{index}", message=f"question {index}", conversation_id="conv",
              new_conversation=index == 0)
        make_orchestrator(store, settings, ScriptedProvider(answer_script())).run(f"t{index}")
    provider = ScriptedProvider(answer_script())
    start(store, "t9", message="last", conversation_id="conv", new_conversation=False)
    make_orchestrator(store, settings, provider).run("t9")
    # Each earlier turn is 10 + 24 bytes: only the latest one fits in 60.
    assert [(m.role, m.content) for m in provider.requests[0].messages] == [
        ("user", "question 3"), ("assistant", "".join(ANSWER)), ("user", "last")]


def test_a_cancel_before_the_run_starts_means_the_model_is_never_called(store, settings) -> None:
    from chalicelib.records import CANCELLED, EventRecord, RunEnding
    from chalicelib import clock

    start(store)
    session = store.get("s1")
    store.finish(session, Fence.unclaimed(), [], RunEnding(
        CANCELLED, EventRecord("s1", 1, CANCELLED, clock.now_iso())))
    provider = ScriptedProvider(answer_script())
    make_orchestrator(store, settings, provider).run("s1")
    assert provider.requests == []
    assert [e.event_type for e in assert_well_formed(store)] == ["cancelled"]


def test_bad_tool_input_becomes_an_error_result_not_a_failed_run(store, settings) -> None:
    start(store)
    provider = ScriptedProvider([ToolCall("c1", "calculator", {"expression": "__import__('os')"})],
                                answer_script())
    make_orchestrator(store, settings, provider).run("s1")
    events = assert_well_formed(store)
    result = next(e for e in events if e.event_type == "tool_result")
    assert result.content.startswith("error: ")
    assert events[-1].event_type == "done"


def test_long_tool_output_is_truncated_with_a_marker(store, settings) -> None:
    start(store)
    settings = settings.with_overrides(max_tool_output_chars=100)
    provider = ScriptedProvider([ToolCall("c1", "calculator", {"expression": "7**300"})],
                                answer_script())
    make_orchestrator(store, settings, provider).run("s1")
    result = next(e for e in log(store) if e.event_type == "tool_result")
    digits = str(7**300)
    assert result.content == digits[:100] + f"\n…[truncated {len(digits) - 100} characters]"


def test_provider_error_ends_the_run_as_error_keeping_the_partial_answer(store, settings) -> None:
    start(store)
    provider = ScriptedProvider([TextChunk("Partial "), TextChunk("answer"),
                                 ProviderError("The model provider failed: timeout")])
    make_orchestrator(store, settings, provider).run("s1")
    events = assert_well_formed(store)
    session = store.get("s1")
    assert (session.status, session.error) == ("error", "The model provider failed: timeout")
    assert events[-1].content == "The model provider failed: timeout"
    assert stored_answer(store) == "Partial answer"


def test_unexpected_exception_ends_the_run_with_a_readable_message(store, settings) -> None:
    start(store)
    provider = ScriptedProvider([TextChunk("x"), KeyError("internal detail")])
    make_orchestrator(store, settings, provider).run("s1")
    assert_well_formed(store)
    session = store.get("s1")
    assert (session.status, session.error) == ("error", INTERNAL_ERROR)
    assert "Traceback" not in session.error and "internal detail" not in session.error


def test_step_limit_ends_the_run_as_error(store, settings) -> None:
    start(store)
    loop = [ToolCall("c1", "calculator", {"expression": "1+1"})]
    make_orchestrator(store, settings.with_overrides(step_limit=3), ScriptedProvider(loop)).run("s1")
    events = assert_well_formed(store)
    assert [e.event_type for e in events].count("tool_call") == 3
    assert "step limit" in store.get("s1").error


def test_redelivery_after_done_writes_nothing(store, settings) -> None:
    start(store)
    orchestrator = make_orchestrator(store, settings, ScriptedProvider(answer_script()))
    orchestrator.run("s1")
    before = (log(store), store.get("s1"))
    orchestrator.run("s1")
    assert (log(store), store.get("s1")) == before


def test_redelivery_while_running_writes_nothing(store, settings) -> None:
    start(store)
    store.claim_lease("s1", "first-attempt")
    make_orchestrator(store, settings, ScriptedProvider(answer_script())).run("s1")
    assert log(store) == []
    assert store.get("s1").attempt_id == "first-attempt"


def test_concurrent_deliveries_make_one_run(store, settings) -> None:
    start(store)
    provider = ScriptedProvider(answer_script(), pause=0.01)
    orchestrator = make_orchestrator(store, settings, provider)
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        orchestrator.run("s1")

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(provider.requests) == 1
    events = assert_well_formed(store)
    assert [e.event_type for e in events].count("done") == 1


def test_attempt_that_lost_the_lease_stops_writing(store, settings) -> None:
    start(store)

    class Takeover(TextChunk):
        """A chunk whose arrival simulates another attempt taking the session over."""

    provider = ScriptedProvider([TextChunk("a"), Takeover("b"), TextChunk("c"), Usage(1, 1)],
                                pause=0.06)
    original_append = store.append

    def append_then_steal(session_id, fence, events, usage, **options):
        # "b" may arrive merged with "c" on a slow machine: any write holding it is the one.
        if any("b" in (e.content or "") for e in events):
            store.models.session(session_id).update(
                actions=[store.models.session.attemptId.set("other")])
        return original_append(session_id, fence, events, usage, **options)

    store.append = append_then_steal  # type: ignore[method-assign]
    make_orchestrator(store, settings, provider).run("s1")
    assert all("b" not in (e.content or "") for e in log(store))
    assert "done" not in [e.event_type for e in log(store)]
    assert provider.streams[0].closed.is_set()


def test_cancel_mid_stream_closes_the_provider_and_ends_cancelled(store, settings) -> None:
    start(store)
    provider = ScriptedProvider([TextChunk(f"t{i} ") for i in range(200)] + [Usage(1, 1)],
                                pause=0.02)
    orchestrator = make_orchestrator(store, settings, provider)
    runner = threading.Thread(target=orchestrator.run, args=("s1",))
    runner.start()
    while not any(e.event_type == "delta" for e in log(store)):
        time.sleep(0.01)
    store.request_cancel("s1")
    runner.join(timeout=10)
    assert not runner.is_alive()
    events = assert_well_formed(store)
    assert events[-1].event_type == "cancelled"
    assert provider.streams[0].closed.is_set()
    assert provider.streams[0].yielded < 200


def test_deadline_ends_the_run_cleanly(store, settings) -> None:
    start(store)
    provider = ScriptedProvider(answer_script())
    make_orchestrator(store, settings, provider).run("s1", remaining_time=lambda: 0.2)
    assert_well_formed(store)
    assert store.get("s1").error == DEADLINE_ERROR


def test_unknown_session_is_a_no_op(store, settings) -> None:
    make_orchestrator(store, settings, ScriptedProvider(answer_script())).run("missing")
    assert store.get("missing") is None


def test_cancel_keeps_the_usage_billed_before_the_stop(store, settings) -> None:
    start(store)
    provider = ScriptedProvider(
        [ToolCall("c1", "calculator", {"expression": "17*23"}), Usage(30, 4)],
        [TextChunk(f"t{i} ") for i in range(200)] + [Usage(50, 200)],
        pause=0.02,
    )
    runner = threading.Thread(target=make_orchestrator(store, settings, provider).run,
                              args=("s1",))
    runner.start()
    while not any(e.event_type == "delta" for e in log(store)):
        time.sleep(0.01)
    store.request_cancel("s1")
    runner.join(timeout=10)
    events = assert_well_formed(store)
    assert events[-1].event_type == "cancelled"
    assert provider.streams[1].closed.is_set()
    assert store.get("s1").usage == TokenUsage(30, 4)


def test_every_log_line_of_a_run_names_it_and_one_summary_line_ends_it(
        store, settings, caplog) -> None:
    import logging

    from chalicelib import telemetry

    class Recorded:
        def __init__(self) -> None:
            self.documents: list = []

        def write(self, document) -> None:
            self.documents.append(document)

    sink = Recorded()
    start(store)
    provider = ScriptedProvider([TextChunk("partial"), ProviderError("down")])
    orchestrator = Orchestrator(store, ConversationStore(store.models),
                                ProviderRegistry({"demo": provider}), default_tools(), settings,
                                telemetry.Metrics("test", sink))
    # The filter configure_logging puts on the process's handler, here on pytest's.
    caplog.handler.addFilter(telemetry.RunContextFilter())
    with caplog.at_level(logging.DEBUG, logger="chalicelib"):
        orchestrator.run("s1")
    run_lines = [r for r in caplog.records if r.name.startswith("chalicelib")]
    assert run_lines and all(getattr(r, "session_id", None) == "s1" for r in run_lines)
    assert len({r.attempt_id for r in run_lines}) == 1
    [summary] = [r for r in run_lines if r.getMessage() == "run ended: error"]
    fields = getattr(summary, telemetry.FIELDS_ATTRIBUTE)
    assert (fields["outcome"], fields["model"], fields["sessionId"]) == ("error", "demo", "s1")
    assert fields["timeToFirstEventMs"] is not None
    names = [m["Name"] for d in sink.documents for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "ProviderErrors" in names and "Runs" in names


def test_a_provider_faster_than_the_store_waits_instead_of_piling_up_text(
        store, settings, monkeypatch) -> None:
    from chalicelib.orchestrator import PUMP_QUEUE_ITEMS

    start(store)
    provider = ScriptedProvider([TextChunk("x") for _ in range(5_000)] + [Usage(1, 1)])
    release = threading.Event()
    real_append = store.append

    def slow_append(*args, **kwargs):
        release.wait(10)
        return real_append(*args, **kwargs)

    monkeypatch.setattr(store, "append", slow_append)
    runner = threading.Thread(target=make_orchestrator(store, settings, provider).run,
                              args=("s1",))
    runner.start()
    deadline = time.monotonic() + 10
    while not provider.streams and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # the store is stuck on the first write: the reader must be held back
    held_at = provider.streams[0].yielded
    release.set()
    runner.join(30)
    assert held_at <= PUMP_QUEUE_ITEMS + 2
    assert stored_answer(store) == "x" * 5_000


def test_a_local_run_whose_claim_met_an_overloaded_store_is_delivered_again(
        store, settings, monkeypatch) -> None:
    """Seen at 200 sessions at once on the local stack: the claim gave up on an overloaded
    embedded DynamoDB and the session waited for the reaper's claim timeout (5 minutes).
    The local dispatcher delivers the run again, as Lambda does, and the session ends done."""
    from chalicelib.dispatch import ThreadDispatcher
    from chalicelib.dynamo import StoreThrottled

    start(store)
    claim = store.claim_lease
    failures = iter([StoreThrottled("DynamoDB is not answering (ConnectTimeoutError)")])

    def overloaded_once(session_id: str, attempt_id: str):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return claim(session_id, attempt_id)

    monkeypatch.setattr(store, "claim_lease", overloaded_once)
    orchestrator = make_orchestrator(store, settings, ScriptedProvider(answer_script()))
    dispatcher = ThreadDispatcher(orchestrator.run, max_runs=1, retry_delays=(0.01, 0.01))
    dispatcher.dispatch("s1")
    deadline = time.monotonic() + 20
    while store.get("s1").is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    dispatcher.shutdown()
    assert_well_formed(store)
    assert store.get("s1").status == "done"
