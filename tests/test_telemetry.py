"""chalicelib/telemetry.py: log lines that name their run, the run summary, and EMF metrics."""
from __future__ import annotations

import io
import json
import logging
import math
import threading
from typing import Any, Iterator, Mapping

import jsonschema
import pytest

from chalicelib import telemetry
from chalicelib.telemetry import (
    Metric,
    Metrics,
    RunStopwatch,
    RunSummary,
    StreamEmfSink,
    configure_logging,
    emf_document,
    fields,
    report_run,
    run_context,
)

# The embedded metric format's document structure (CloudWatch's specification), as a schema:
# root with _aws {Timestamp, CloudWatchMetrics: [MetricDirective]}; a directive has a
# Namespace, Dimensions (sets of at most 30 names, each 1-250 characters) and Metrics (1-100
# definitions: Name 1-1024 characters, Unit one of CloudWatch's, StorageResolution 1 or 60).
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024,
                                          "pattern": r"^[A-Za-z0-9._#:/-]+$"},
                            "Dimensions": {"type": "array", "items": {
                                "type": "array", "minItems": 1, "maxItems": 30,
                                "items": {"type": "string", "minLength": 1, "maxLength": 250}}},
                            "Metrics": {"type": "array", "minItems": 1, "maxItems": 100,
                                        "items": {
                                            "type": "object", "required": ["Name"],
                                            "properties": {
                                                "Name": {"type": "string", "minLength": 1,
                                                         "maxLength": 1024},
                                                "Unit": {"enum": sorted(telemetry.UNITS)},
                                                "StorageResolution": {"enum": [1, 60]}}}},
                        },
                    },
                },
            },
        },
    },
}


def emf_violations(document: Mapping[str, Any]) -> list[str]:
    """Return how a document breaks the specification's rules on its target members."""
    problems = []
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                value = document.get(name)
                if not isinstance(value, str) or not 1 <= len(value) <= 1024 \
                        or not value.isascii():
                    problems.append(f"dimension {name}: {value!r}")
        for metric in directive["Metrics"]:
            value = document.get(metric["Name"])
            values = value if isinstance(value, list) else [value]
            if not values or len(values) > 100 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in values):
                problems.append(f"metric {metric['Name']}: {value!r}")
    return problems


def check_emf(document: Mapping[str, Any]) -> None:
    jsonschema.validate(document, EMF_SCHEMA)
    assert emf_violations(document) == []


class Recorder(list):
    """A metrics sink that keeps the documents."""

    def write(self, document: Mapping[str, Any]) -> None:
        self.append(document)


SUMMARY = RunSummary(session_id="s-1", attempt_id="a-1", outcome="done", model="demo",
                     duration_ms=7800, time_to_first_event_ms=420, input_tokens=12,
                     output_tokens=300, total_tokens=312)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Give configure_logging the root logger, and put back what pytest had there."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def json_log(root_logging: None) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(json_lines=True, level=logging.DEBUG, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- logs --------------------------------------------------------------------------------


def test_every_line_inside_a_run_carries_its_session_and_attempt(json_log: io.StringIO) -> None:
    logging.getLogger("chalicelib.writer").info("before")
    with run_context("s-1", "a-1"):
        logging.getLogger("chalicelib.writer").info("flushed %d events", 3)
        logging.getLogger("botocore.retryhandler").debug("retrying")
        with run_context("s-2", "a-2"):
            logging.getLogger("chalicelib.orchestrator").warning("nested")
        logging.getLogger("chalicelib.store").info("back")
    logging.getLogger("chalicelib.writer").info("after")
    got = [(line["message"], line.get("sessionId"), line.get("attemptId"))
           for line in lines(json_log)]
    assert got == [("before", None, None), ("flushed 3 events", "s-1", "a-1"),
                   ("retrying", "s-1", "a-1"), ("nested", "s-2", "a-2"), ("back", "s-1", "a-1"),
                   ("after", None, None)]
    first = lines(json_log)[1]
    assert first["level"] == "INFO" and first["logger"] == "chalicelib.writer"
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-01-02T03:04:05.678Z")


def test_a_run_in_one_thread_does_not_tag_another_threads_lines(json_log: io.StringIO) -> None:
    inside, release = threading.Event(), threading.Event()

    def run() -> None:
        with run_context("s-thread", "a-thread"):
            inside.set()
            release.wait(5)
            logging.getLogger("chalicelib.orchestrator").info("in the run")

    worker = threading.Thread(target=run)
    worker.start()
    inside.wait(5)
    logging.getLogger("chalicelib.service").info("a request meanwhile")
    release.set()
    worker.join(5)
    by_message = {line["message"]: line.get("sessionId") for line in lines(json_log)}
    assert by_message == {"a request meanwhile": None, "in the run": "s-thread"}


def test_a_helper_thread_started_with_the_runs_context_carries_its_ids(
        json_log: io.StringIO) -> None:
    with run_context("s-1", "a-1"):
        plain = threading.Thread(target=lambda: logging.getLogger("p").info("plain thread"))
        carried = threading.Thread(target=telemetry.carry_context(
            lambda: logging.getLogger("p").info("carried thread")))
        for thread in (plain, carried):
            thread.start()
            thread.join(5)
    by_message = {line["message"]: line.get("sessionId") for line in lines(json_log)}
    assert by_message == {"plain thread": None, "carried thread": "s-1"}


def test_a_line_with_an_exception_stays_one_json_line(json_log: io.StringIO) -> None:
    with run_context("s-1", "a-1"):
        try:
            raise RuntimeError("store\nfailed")
        except RuntimeError:
            logging.getLogger("chalicelib.orchestrator").exception("the run failed")
    [line] = json_log.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "the run failed" and record["sessionId"] == "s-1"
    assert "Traceback" in record["exception"] and "RuntimeError: store\nfailed" in record[
        "exception"]


def test_fields_of_a_line_are_json_members_and_cannot_hide_the_run_ids(
        json_log: io.StringIO) -> None:
    with run_context("s-1", "a-1"):
        logging.getLogger("chalicelib.providers.openai").warning(
            "HTTP %s; retry", 429, extra=fields(provider="openai", retry=2, sessionId="forged"))
    [record] = lines(json_log)
    assert record["provider"] == "openai" and record["retry"] == 2
    assert record["sessionId"] == "s-1"


def test_readable_lines_name_the_run_and_keep_the_traceback_below(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(json_lines=False, stream=stream)
    with run_context("s-1", "a-1"):
        logging.getLogger("chalicelib.writer").info("ended %s", "done", extra=fields(seq=34))
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("chalicelib.writer").exception("boom")
    first, second, *traceback = stream.getvalue().splitlines()
    assert first.endswith(" INFO chalicelib.writer [session=s-1 attempt=a-1] ended done seq=34")
    assert second.endswith("ERROR chalicelib.writer [session=s-1 attempt=a-1] boom")
    assert traceback[0] == "Traceback (most recent call last):"
    assert not first.startswith("{")


def test_configure_logging_replaces_the_handlers_and_keeps_their_filters(
        root_logging: None) -> None:
    class RequestIdFilter(logging.Filter):  # what Lambda's runtime puts on its handler
        def filter(self, record: logging.LogRecord) -> bool:
            record.aws_request_id = "req-123"
            return True

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    runtime_handler = logging.StreamHandler(io.StringIO())
    runtime_handler.addFilter(RequestIdFilter())
    root.addHandler(runtime_handler)
    stream = io.StringIO()
    configure_logging(json_lines=True, stream=stream)
    configure_logging(json_lines=True, stream=stream)  # a second call adds nothing
    assert len(root.handlers) == 1 and root.handlers[0] is not runtime_handler
    logging.getLogger("chalicelib.reaper").info("reaped")
    [record] = lines(stream)
    assert record["requestId"] == "req-123"
    assert runtime_handler.stream.getvalue() == ""


@pytest.mark.parametrize("environ, deployed", [
    ({"AWS_EXECUTION_ENV": "AWS_Lambda_python3.14"}, True),
    ({"AWS_LAMBDA_FUNCTION_NAME": "backchat-dev"}, False),  # not a Lambda runtime by itself
    ({}, False),
])
def test_on_lambda_only_in_a_lambda_runtime(environ: dict, deployed: bool) -> None:
    assert telemetry.on_lambda(environ) is deployed


def test_on_lambda_logs_default_to_json_lines(root_logging: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.14")
    stream = io.StringIO()
    configure_logging(stream=stream)
    logging.getLogger("x").info("deployed")
    assert lines(stream)[0]["message"] == "deployed"


# -- the run summary ---------------------------------------------------------------------


def test_report_run_writes_one_summary_line_and_one_metrics_document(
        json_log: io.StringIO) -> None:
    recorder = Recorder()
    with run_context("s-1", "a-1"):
        report_run(SUMMARY, Metrics("prod", recorder, now_ms=lambda: 1_700_000_000_000))
    [line] = lines(json_log)
    assert line["message"] == "run ended: done"
    assert {k: line[k] for k in ("sessionId", "attemptId", "outcome", "model", "durationMs",
                                 "timeToFirstEventMs", "inputTokens", "outputTokens",
                                 "totalTokens")} == {
        "sessionId": "s-1", "attemptId": "a-1", "outcome": "done", "model": "demo",
        "durationMs": 7800, "timeToFirstEventMs": 420, "inputTokens": 12,
        "outputTokens": 300, "totalTokens": 312}
    [document] = recorder
    check_emf(document)
    assert document["_aws"]["Timestamp"] == 1_700_000_000_000
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Backchat"
    assert directive["Dimensions"] == [["Stage"], ["Stage", "Outcome"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "Runs": "Count", "RunDuration": "Milliseconds", "OutputTokens": "Count",
        "TimeToFirstEvent": "Milliseconds"}
    assert (document["Stage"], document["Outcome"], document["Runs"], document["RunDuration"],
            document["TimeToFirstEvent"], document["OutputTokens"]) == (
        "prod", "done", 1, 7800, 420, 300)
    assert (document["sessionId"], document["model"]) == ("s-1", "demo")


def test_a_run_without_events_records_no_time_to_first_event() -> None:
    recorder = Recorder()
    summary = RunSummary("s-1", "a-1", "cancelled", "demo", 5, None, 0, 0, 0)
    Metrics("dev", recorder).run_finished(summary)
    [document] = recorder
    check_emf(document)
    assert "TimeToFirstEvent" not in document
    assert "TimeToFirstEvent" not in {m["Name"] for m in
                                      document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def test_stopwatch_measures_from_the_request_and_from_the_claim() -> None:
    clock = {"now": 10_000}
    stopwatch = RunStopwatch(requested_at_ms=9_900, now_ms=lambda: clock["now"])  # claimed
    clock["now"] = 10_150
    stopwatch.first_event()
    clock["now"] = 10_160
    stopwatch.first_event()  # only the first counts
    clock["now"] = 12_000
    assert stopwatch.time_to_first_event_ms() == 250
    assert stopwatch.duration_ms() == 2_000
    assert RunStopwatch(requested_at_ms=5, now_ms=lambda: 0).time_to_first_event_ms() is None


# -- metrics -----------------------------------------------------------------------------


def test_every_metric_document_follows_the_embedded_metric_format() -> None:
    recorder = Recorder()
    metrics = Metrics("dev", recorder)
    metrics.run_finished(SUMMARY)
    metrics.runs_reaped(0)
    metrics.runs_reaped(3)
    metrics.store_throttled(will_retry=True)
    metrics.store_throttled(will_retry=False)
    metrics.provider_failed("bedrock")
    for document in recorder:
        check_emf(document)
        assert document["Stage"] == "dev"
    assert [d["ReapedRuns"] for d in recorder if "ReapedRuns" in d] == [0, 3]
    assert [(d["StoreThrottles"], d["StoreRetries"]) for d in recorder
            if "StoreThrottles" in d] == [(1, 1), (1, 0)]
    [provider] = [d for d in recorder if "ProviderErrors" in d]
    assert provider["Provider"] == "bedrock"
    assert provider["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Stage"],
                                                                       ["Stage", "Provider"]]


def test_the_schema_check_finds_broken_documents() -> None:
    good = emf_document([Metric("Runs", 1)], {"Stage": "dev"}, [["Stage"]], 0)
    check_emf(good)
    no_value = {**good}
    del no_value["Runs"]
    assert emf_violations(no_value) == ["metric Runs: None"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "_aws": {"CloudWatchMetrics": []}}, EMF_SCHEMA)


@pytest.mark.parametrize("metrics, dimensions, sets, properties", [
    ([], {"Stage": "dev"}, [["Stage"]], {}),
    ([Metric("Runs", 1, "Requests")], {"Stage": "dev"}, [["Stage"]], {}),
    ([Metric("Runs", math.nan)], {"Stage": "dev"}, [["Stage"]], {}),
    ([Metric("Runs", 1)], {"Stage": "dev"}, [["Stage", "Outcome"]], {}),
    ([Metric("Runs", 1)], {"Stage": "dev"}, [["Stage"]], {"Runs": "shadowed"}),
    ([Metric(f"M{i}", 1) for i in range(101)], {"Stage": "dev"}, [["Stage"]], {}),
    ([Metric("Runs", 1)], {f"D{i}": "x" for i in range(31)}, [[f"D{i}" for i in range(31)]], {}),
])
def test_documents_the_specification_forbids_are_refused(metrics: list, dimensions: dict,
                                                         sets: list, properties: dict) -> None:
    with pytest.raises(ValueError):
        emf_document(metrics, dimensions, sets, 0, properties)


@pytest.mark.parametrize("call", [
    lambda m: m.run_finished(RunSummary("s", "a", "running", "demo", 1, 1, 0, 0, 0)),
    lambda m: m.provider_failed("OpenAI compatible"),
    lambda m: m.provider_failed("x" * 40),
])
def test_dimension_values_are_few_and_short(call) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError):
        call(Metrics("dev", recorder))
    assert recorder == []


def test_the_stream_sink_writes_one_json_line_per_document_from_many_threads() -> None:
    stream = io.StringIO()
    metrics = Metrics("dev", StreamEmfSink(stream))

    def work() -> None:
        for _ in range(50):
            metrics.store_throttled(will_retry=True)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    written = stream.getvalue().splitlines()
    assert len(written) == 400
    for line in written:
        check_emf(json.loads(line))


def test_locally_metrics_are_readable_debug_lines(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(json_lines=False, level=logging.DEBUG, stream=stream)
    metrics = telemetry.metrics_for("local", deployed=False)
    with run_context("s-1", "a-1"):
        metrics.run_finished(SUMMARY)
    [line] = stream.getvalue().splitlines()
    assert "DEBUG chalicelib.telemetry [session=s-1 attempt=a-1] metrics Runs=1" in line
    assert "RunDuration=7800" in line and "(Outcome=done Stage=local)" in line


def test_deployed_metrics_go_to_stdout_as_emf(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.metrics_for("prod", deployed=True).runs_reaped(2)
    document = json.loads(capsys.readouterr().out)
    check_emf(document)
    assert document["ReapedRuns"] == 2 and document["Stage"] == "prod"
