"""infra/alarms.yaml in the packaged template: what the alarms watch, and the dashboard.

The Backchat metrics they read must be ones chalicelib/telemetry.py writes, with the same
dimensions: a name that drifts apart would give an alarm that never fires.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any, Iterator, Mapping

import pytest

from chalicelib.telemetry import NAMESPACE, OUTCOMES, Metrics, RunSummary
from tests.test_deploy_package import packages, resources, templates  # noqa: F401 (fixtures)

REQUIRED_ALARMS = {
    # what the issue asks to watch: (namespace, metric) of an alarm that watches it
    "failure queue": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    "reaped runs": (NAMESPACE, "ReapedRuns"),
    "API 5xx": ("AWS/ApiGateway", "5XXError"),
    "store throttles": (NAMESPACE, "StoreThrottles"),
    "orchestrator errors": ("AWS/Lambda", "Errors"),
}
SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def written_metrics() -> dict[str, set[frozenset[str]]]:
    """Return each metric telemetry writes, with the dimension sets it writes it under."""
    documents: list[Mapping[str, Any]] = []

    class Recorder:
        def write(self, document: Mapping[str, Any]) -> None:
            documents.append(document)

    metrics = Metrics("dev", Recorder(), now_ms=lambda: 0)
    metrics.run_finished(RunSummary("s", "a", "done", "demo", 10, 5, 1, 2, 3))
    metrics.runs_reaped(0)
    metrics.store_throttled(will_retry=True)
    metrics.provider_failed("openai")
    written: dict[str, set[frozenset[str]]] = defaultdict(set)
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            for metric in directive["Metrics"]:
                written[metric["Name"]] |= {frozenset(s) for s in directive["Dimensions"]}
    return written


@pytest.fixture(scope="module")
def dev(templates: dict[str, dict]) -> dict:
    return templates["dev"]


def alarms(template: dict) -> dict[str, dict]:
    return {name: r["Properties"] for name, r in
            resources(template, "AWS::CloudWatch::Alarm").items()}


def watched(alarm: dict) -> Iterator[tuple[str, str, dict]]:
    """Yield (namespace, metric, dimensions) of every metric an alarm reads."""
    if "MetricName" in alarm:
        yield alarm["Namespace"], alarm["MetricName"], {
            d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
    for query in alarm.get("Metrics", []):
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            yield metric["Namespace"], metric["MetricName"], {
                d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def dashboard(template: dict) -> dict:
    """Return the dashboard's body as JSON, with each ${...} replaced by a placeholder."""
    [board] = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = board["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(SUB_VARIABLE.sub(lambda m: f"<{m.group(1)}>", body))


def dashboard_metrics(body: dict) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Yield (namespace, metric, dimensions) of every metric row of every graph."""
    for widget in body["widgets"]:
        for row in widget["properties"].get("metrics", []):
            values = [v for v in row if not isinstance(v, dict)]
            if values:
                namespace, name, *pairs = values
                yield namespace, name, dict(zip(pairs[::2], pairs[1::2]))


def test_alarms_watch_the_failure_queue_reaped_runs_5xx_throttles_and_orchestrator_errors(
        dev: dict) -> None:
    seen = {(namespace, metric): dims for alarm in alarms(dev).values()
            for namespace, metric, dims in watched(alarm)}
    for what, key in REQUIRED_ALARMS.items():
        assert key in seen, what
    assert seen[("AWS/SQS", "ApproximateNumberOfMessagesVisible")] == {
        "QueueName": {"Fn::GetAtt": ["OrchestratorFailures", "QueueName"]}}
    assert seen[("AWS/Lambda", "Errors")] == {"FunctionName": {"Ref": "Orchestrator"}}
    assert seen[("AWS/ApiGateway", "5XXError")]["ApiName"] == (
        dev["Resources"]["RestAPI"]["Properties"]["Name"])


def test_every_table_has_a_throttle_alarm_and_a_dashboard_graph(dev: dict) -> None:
    tables = resources(dev, "AWS::DynamoDB::Table")
    assert tables
    throttles = defaultdict(set)
    for alarm in alarms(dev).values():
        for namespace, metric, dims in watched(alarm):
            if namespace == "AWS/DynamoDB":
                throttles[dims["TableName"]["Ref"]].add(metric)
    graphed = defaultdict(set)
    for namespace, metric, dims in dashboard_metrics(dashboard(dev)):
        if namespace == "AWS/DynamoDB":
            graphed[dims["TableName"]].add(metric)
    for table in tables:
        assert throttles[table] == {"ReadThrottleEvents", "WriteThrottleEvents"}, table
        assert {"ReadThrottleEvents", "WriteThrottleEvents"} <= graphed[f"<{table}>"], table


def test_backchat_metrics_read_are_the_ones_telemetry_writes(dev: dict) -> None:
    written = written_metrics()
    read = [(metric, set(dims)) for alarm in alarms(dev).values()
            for namespace, metric, dims in watched(alarm) if namespace == NAMESPACE]
    body = dashboard(dev)
    read += [(metric, set(dims)) for namespace, metric, dims in dashboard_metrics(body)
             if namespace == NAMESPACE]
    # A SEARCH graph: {namespace,dimension,...} MetricName="..." (provider errors by provider).
    for search in [row[0]["expression"] for widget in body["widgets"]
                   for row in widget["properties"].get("metrics", [])
                   if isinstance(row[0], dict) and "expression" in row[0]]:
        namespace, *dims = re.search(r"\{([^}]+)\}", search).group(1).split(",")
        assert namespace == NAMESPACE
        read.append((re.search(r'MetricName="(\w+)"', search).group(1), set(dims)))
    assert {metric for metric, _ in read} == set(written)  # every metric is looked at
    for metric, dims in read:
        assert frozenset(dims) in written[metric], (metric, dims)
    outcomes = {dims["Outcome"] for namespace, _, dims in dashboard_metrics(body)
                if "Outcome" in dims}
    assert outcomes == set(OUTCOMES)


def test_backchat_alarms_select_this_stage(dev: dict) -> None:
    for alarm in alarms(dev).values():
        for namespace, _, dims in watched(alarm):
            if namespace == NAMESPACE:
                assert dims == {"Stage": {"Ref": "Stage"}}


def test_alarms_notify_a_topic_only_when_one_is_given(dev: dict) -> None:
    parameter = dev["Parameters"]["AlarmTopicArn"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch(
        "arn:aws:sns:eu-west-1:123456789012:backchat-alarms")
    assert not pattern.fullmatch("alerts@example.com")
    assert dev["Conditions"]["NotifyTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    actions = {"Fn::If": ["NotifyTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for name, alarm in alarms(dev).items():
        assert alarm["AlarmActions"] == actions == alarm["OKActions"], name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_the_dashboard_shows_every_alarm(dev: dict) -> None:
    [alarm_widget] = [w for w in dashboard(dev)["widgets"] if w["type"] == "alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(
        f"<{name}.Arn>" for name in alarms(dev))
