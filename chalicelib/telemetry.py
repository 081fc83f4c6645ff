"""Telemetry: logs that name the run they belong to, one summary per run, and CloudWatch metrics.

- `configure_logging()` once at process start: JSON lines on Lambda (CloudWatch Logs Insights
  reads their fields), readable lines elsewhere.
- `with run_context(session_id, attempt_id):` around a run: every log line emitted inside it,
  by any module, carries both ids.
- `report_run(summary, metrics)` at the end of a run: its one summary line, and its metrics.
- `Metrics` writes CloudWatch embedded metric format (EMF) documents: on Lambda one JSON line
  each on stdout, which CloudWatch Logs turns into metrics with no API call; locally one
  readable DEBUG line. Names and dimensions are the ones infra/alarms.yaml reads.
"""
from __future__ import annotations

import contextvars
import functools
import json
import logging
import math
import os
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, TextIO

from chalicelib import clock

logger = logging.getLogger(__name__)

NAMESPACE = "Backchat"
# Metric names: infra/alarms.yaml's alarms and dashboard read these.
RUNS = "Runs"
RUN_DURATION = "RunDuration"
TIME_TO_FIRST_EVENT = "TimeToFirstEvent"
OUTPUT_TOKENS = "OutputTokens"
REAPED_RUNS = "ReapedRuns"
STORE_THROTTLES = "StoreThrottles"
STORE_RETRIES = "StoreRetries"
PROVIDER_ERRORS = "ProviderErrors"
# Dimensions: every metric has the stage; run metrics also by outcome, errors by provider.
STAGE, OUTCOME, PROVIDER = "Stage", "Outcome", "Provider"
# How a run can end: its terminal status, or lease_lost when another attempt or the reaper
# took the session over and this attempt stopped without writing.
OUTCOMES = ("done", "error", "cancelled", "lease_lost")
# A dimension value is a metric of its own in CloudWatch (and billed): only short names.
DIMENSION_VALUE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# CloudWatch's units, as EMF accepts them.
UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None"})
# The EMF specification's limits.
MAX_METRICS_PER_DOCUMENT = 100
MAX_DIMENSIONS_PER_SET = 30
# The LogRecord attribute that carries a line's own fields (see `fields`).
FIELDS_ATTRIBUTE = "backchat_fields"


# -- the run a line belongs to ---------------------------------------------------------------


@dataclass(frozen=True)
class RunIds:
    """The session a run works on and the attempt (lease holder) doing it."""

    session_id: str
    attempt_id: str


_current_run: contextvars.ContextVar[RunIds | None] = contextvars.ContextVar(
    "backchat_run", default=None)


@contextmanager
def run_context(session_id: str, attempt_id: str) -> Iterator[RunIds]:
    """Tag every log line emitted inside the block (in this thread) with the run's ids."""
    ids = RunIds(session_id, attempt_id)
    token = _current_run.set(ids)
    try:
        yield ids
    finally:
        _current_run.reset(token)


def current_run() -> RunIds | None:
    """Return the ids of the run this code runs in, or None outside a run."""
    return _current_run.get()


def carry_context(target: Callable[..., Any]) -> Callable[..., Any]:
    """Return target bound to the caller's context, for a thread a run starts.

    A new thread starts with an empty context: without this, lines logged on it (the
    provider stream's, say) would not name the run.
    """
    context = contextvars.copy_context()
    return functools.partial(context.run, target)


def fields(**values: Any) -> dict[str, Any]:
    """Return `extra=` for a log call: fields of the line's own, e.g. provider or retry."""
    return {FIELDS_ATTRIBUTE: values}


class RunContextFilter(logging.Filter):
    """Adds `session_id` and `attempt_id` to each record emitted inside `run_context`."""

    def filter(self, record: logging.LogRecord) -> bool:
        run = _current_run.get()
        if run is not None and not hasattr(record, "session_id"):
            record.session_id = run.session_id
            record.attempt_id = run.attempt_id
        return True


# -- log formats -----------------------------------------------------------------------------


class JsonLineFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, run ids, fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": clock.iso_from_ms(int(record.created * 1000)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if hasattr(record, "session_id"):
            line["sessionId"] = record.session_id
            line["attemptId"] = record.attempt_id
        # Lambda's own log filter sets the invocation's request id.
        if getattr(record, "aws_request_id", None):
            line["requestId"] = record.aws_request_id
        for key, value in _record_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class ReadableFormatter(logging.Formatter):
    """`time LEVEL logger [session=… attempt=…] message key=value …`, traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [clock.iso_from_ms(int(record.created * 1000)), record.levelname, record.name]
        if hasattr(record, "session_id"):
            parts.append(f"[session={record.session_id} attempt={record.attempt_id}]")
        parts.append(record.getMessage())
        parts += [f"{key}={value}" for key, value in _record_fields(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    values = getattr(record, FIELDS_ATTRIBUTE, None)
    return values if isinstance(values, dict) else {}


def on_lambda(environ: Mapping[str, str] | None = None) -> bool:
    """True inside an AWS Lambda runtime (not `chalice local`, tests or scripts)."""
    environ = os.environ if environ is None else environ
    return environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_")


def configure_logging(json_lines: bool | None = None, level: int | str = logging.INFO,
                      stream: TextIO | None = None) -> logging.Handler:
    """Send every log record through one handler of backchat's; return it.

    Replaces the root logger's handlers, as `logging.basicConfig(force=True)` would: Lambda's
    runtime and `chalice local` each install one with a format of their own. The filters of
    the handlers it replaces are kept (Lambda's adds the request id). JSON lines by default on
    Lambda, readable lines elsewhere; stdout on Lambda, stderr elsewhere.
    """
    deployed = on_lambda()
    json_lines = deployed if json_lines is None else json_lines
    root = logging.getLogger()
    kept = [f for h in root.handlers for f in h.filters if not isinstance(f, RunContextFilter)]
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or (sys.stdout if deployed else sys.stderr))
    handler.setFormatter(JsonLineFormatter() if json_lines else ReadableFormatter())
    handler.addFilter(RunContextFilter())
    for kept_filter in kept:
        handler.addFilter(kept_filter)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


# -- embedded metric format ------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One value of one metric, in one of CloudWatch's units."""

    name: str
    value: float
    unit: str = "Count"


def emf_document(metrics: Sequence[Metric], dimensions: Mapping[str, str],
                 dimension_sets: Sequence[Sequence[str]], timestamp_ms: int,
                 properties: Mapping[str, Any] | None = None,
                 namespace: str = NAMESPACE) -> dict[str, Any]:
    """Return one EMF document: the metrics, recorded under each set of dimensions."""
    properties = dict(properties or {})
    if not 1 <= len(metrics) <= MAX_METRICS_PER_DOCUMENT:
        raise ValueError(f"an EMF document holds 1-{MAX_METRICS_PER_DOCUMENT} metrics")
    names = [metric.name for metric in metrics]
    members = names + list(dimensions) + list(properties)
    if len(set(members)) != len(members) or "_aws" in members:
        raise ValueError(f"metric, dimension and property names must differ: {members}")
    for metric in metrics:
        if metric.unit not in UNITS:
            raise ValueError(f"{metric.name}: {metric.unit!r} is not a CloudWatch unit")
        if not math.isfinite(metric.value):
            raise ValueError(f"{metric.name}: {metric.value} is not a finite number")
    for dimension_set in dimension_sets:
        if not 1 <= len(dimension_set) <= MAX_DIMENSIONS_PER_SET:
            raise ValueError(f"a dimension set has 1-{MAX_DIMENSIONS_PER_SET} dimensions")
        missing = [name for name in dimension_set if name not in dimensions]
        if missing:
            raise ValueError(f"dimensions without a value: {missing}")
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [list(dimension_set) for dimension_set in dimension_sets],
                "Metrics": [{"Name": metric.name, "Unit": metric.unit} for metric in metrics],
            }],
        },
        **dimensions,
        **{metric.name: metric.value for metric in metrics},
        **properties,
    }


class MetricsSink(Protocol):
    """Where EMF documents go."""

    def write(self, document: Mapping[str, Any]) -> None: ...


class StreamEmfSink:
    """Writes each document as one JSON line (on Lambda, stdout goes to CloudWatch Logs)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, document: Mapping[str, Any]) -> None:
        line = json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n"
        stream = self._stream or sys.stdout
        with self._lock:  # a run's threads must not interleave two documents in one line
            stream.write(line)
            stream.flush()


class LoggedMetricsSink:
    """Logs each document as one readable DEBUG line (no CloudWatch to read it locally)."""

    def write(self, document: Mapping[str, Any]) -> None:
        [directive] = document["_aws"]["CloudWatchMetrics"]
        values = " ".join(f"{m['Name']}={document[m['Name']]:g}" for m in directive["Metrics"])
        dimensions = sorted({name for group in directive["Dimensions"] for name in group})
        labels = " ".join(f"{name}={document[name]}" for name in dimensions)
        logger.debug("metrics %s (%s)", values, labels)


@dataclass(frozen=True)
class RunSummary:
    """How one run went: what its one summary line and its metrics report."""

    session_id: str
    attempt_id: str
    outcome: str
    model: str
    duration_ms: int
    time_to_first_event_ms: int | None
    input_tokens: int
    output_tokens: int
    total_tokens: int

    def log_fields(self) -> dict[str, Any]:
        """Return the summary as the camelCase fields of a log line."""
        return {_camel(key): value for key, value in asdict(self).items()}


class Metrics:
    """Records backchat's metrics for one stage as EMF documents, one per event."""

    def __init__(self, stage: str, sink: MetricsSink,
                 now_ms: Callable[[], int] = clock.now_ms) -> None:
        self._stage = stage
        self._sink = sink
        self._now_ms = now_ms

    def run_finished(self, summary: RunSummary) -> None:
        """Record a run: Runs, RunDuration, TimeToFirstEvent and OutputTokens, by outcome."""
        _check_dimension(OUTCOME, summary.outcome, OUTCOMES)
        metrics = [Metric(RUNS, 1), Metric(RUN_DURATION, summary.duration_ms, "Milliseconds"),
                   Metric(OUTPUT_TOKENS, summary.output_tokens)]
        if summary.time_to_first_event_ms is not None:
            metrics.append(Metric(TIME_TO_FIRST_EVENT, summary.time_to_first_event_ms,
                                  "Milliseconds"))
        self._write(metrics, {OUTCOME: summary.outcome}, [[STAGE], [STAGE, OUTCOME]],
                    {"sessionId": summary.session_id, "attemptId": summary.attempt_id,
                     "model": summary.model})

    def runs_reaped(self, count: int) -> None:
        """Record one reaper pass: how many runs it ended (0 too, so the graph has no gaps)."""
        self._write([Metric(REAPED_RUNS, count)], {}, [[STAGE]])

    def store_throttled(self, will_retry: bool) -> None:
        """Record one throttled store request, and whether it is tried again."""
        self._write([Metric(STORE_THROTTLES, 1), Metric(STORE_RETRIES, int(will_retry))], {},
                    [[STAGE]])

    def provider_failed(self, provider: str) -> None:
        """Record one error from a model provider (demo, openai, bedrock)."""
        _check_dimension(PROVIDER, provider)
        self._write([Metric(PROVIDER_ERRORS, 1)], {PROVIDER: provider},
                    [[STAGE], [STAGE, PROVIDER]])

    def _write(self, metrics: list[Metric], dimensions: dict[str, str],
               dimension_sets: list[list[str]], properties: dict[str, Any] | None = None) -> None:
        properties = dict(properties or {})
        run = _current_run.get()
        if run is not None:
            properties.setdefault("sessionId", run.session_id)
            properties.setdefault("attemptId", run.attempt_id)
        self._sink.write(emf_document(metrics, {STAGE: self._stage, **dimensions},
                                      dimension_sets, self._now_ms(), properties))


def metrics_for(stage: str, deployed: bool | None = None) -> Metrics:
    """Return the stage's metrics: EMF on stdout on Lambda, DEBUG log lines elsewhere."""
    deployed = on_lambda() if deployed is None else deployed
    return Metrics(stage, StreamEmfSink() if deployed else LoggedMetricsSink())


def report_run(summary: RunSummary, metrics: Metrics) -> None:
    """Log the run's one summary line and record its metrics."""
    logger.info("run ended: %s", summary.outcome, extra=fields(**summary.log_fields()))
    metrics.run_finished(summary)


class RunStopwatch:
    """Times a run: its request to its first event, and its claim to its end (epoch ms).

    Time to first event starts at the session's createdAt, so it includes the dispatch and a
    cold start: what the person waiting sees.
    """

    def __init__(self, requested_at_ms: int, now_ms: Callable[[], int] = clock.now_ms) -> None:
        self._now_ms = now_ms
        self._requested_at_ms = requested_at_ms
        self._started_at_ms = now_ms()
        self._first_event_at_ms: int | None = None

    def first_event(self) -> None:
        """Note that the run wrote an event; only the first call counts."""
        if self._first_event_at_ms is None:
            self._first_event_at_ms = self._now_ms()

    def time_to_first_event_ms(self) -> int | None:
        if self._first_event_at_ms is None:
            return None
        # Clocks of two machines (API and orchestrator) may disagree by a little.
        return max(0, self._first_event_at_ms - self._requested_at_ms)

    def duration_ms(self) -> int:
        return max(0, self._now_ms() - self._started_at_ms)


def _check_dimension(name: str, value: str, allowed: Sequence[str] | None = None) -> None:
    if (allowed is not None and value not in allowed) or not DIMENSION_VALUE.fullmatch(value):
        raise ValueError(f"{name} {value!r} is not a known, short dimension value")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.title() for word in rest)
