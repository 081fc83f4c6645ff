"""Writes per second per partition key, from an instrumented run of many streaming sessions.

DynamoDB takes about 1,000 write units a second on one partition key (of a table or of an
index); an index that cannot keep up throttles the table's writes. This runs `--sessions`
demo sessions at once, each streaming for about `--seconds`, through the real app on moto with
the deployed settings (flush 0.2 s, heartbeat 1 s, lease 30 s, lease index 15 s) and Lambda
dispatch (each run on a thread of its own, as an invocation), records every item each request
writes and every index entry it changes, and reports the write rate of the busiest partition
key of each table and index, and the index writes per streaming session per second. The
scale arithmetic in docs/deploy.md is computed from these numbers.

    .venv/bin/python -m bench.index_writes [--sessions 20] [--seconds 40]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.test_deploy_requests import (
    RequestLog,
    _BackgroundInvoke,
    _hear_no_other_process,
    _start_turn,
    app_on_moto,
    dev_stage_settings,
)

RATE = 25  # tokens a second: a model streaming steadily


@dataclass(frozen=True)
class PartitionRates:
    """Write rates measured over the streaming window."""

    sessions: int
    seconds: float
    busiest_by_table: dict[str, tuple[str, float]]
    busiest_by_index: dict[str, tuple[str, float]]
    index_writes_per_session_second: float
    # Index writes made by flushes and heartbeats that do not renew the lease index: 0.
    per_flush_index_writes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions, "seconds": round(self.seconds, 1),
            "busiestTablePartitionPerSecond": {t: round(r, 2) for t, (_, r)
                                               in self.busiest_by_table.items()},
            "busiestIndexPartitionPerSecond": {i: round(r, 3) for i, (_, r)
                                               in self.busiest_by_index.items()},
            "indexWritesPerStreamingSessionSecond": round(self.index_writes_per_session_second, 3),
            "indexWritesByPlainFlushes": self.per_flush_index_writes,
        }


def measure(sessions: int, seconds: float) -> PartitionRates:
    """Stream `sessions` sessions for about `seconds`; return the write rates of their
    steady state (between the last start and the first end, so starts and ends, which
    write indexes by design, are left out)."""
    tokens = int(seconds * RATE)
    with app_on_moto(dev_stage_settings()) as (client, components, patch):
        log = RequestLog(meter=True)
        dispatcher = _BackgroundInvoke(log)
        patch.setattr(components.service, "_dispatcher", dispatcher)
        _hear_no_other_process(components, patch.setattr)
        with log.recording():
            with log.acting_as("api"):
                ids = [_start_turn(client, f"stream {index} [demo tokens={tokens} rate={RATE}]")
                       ["sessionId"] for index in range(sessions)]
            steady_from = time.monotonic()
            while all(components.store.get(i).status == "running" for i in ids):
                time.sleep(0.5)
            steady_to = time.monotonic()
            for thread in dispatcher.threads:
                thread.join()
    window = [r for r in log.requests if steady_from <= r.at <= steady_to
              and r.function == "orchestrator"]
    span = steady_to - steady_from
    tables: Counter[tuple[str, str]] = Counter()
    indexes: Counter[tuple[str, str]] = Counter()
    flush_index_writes = 0
    for request in window:
        tables.update(request.table_writes)
        indexes.update(request.index_writes)
        if request.operation == "TransactWriteItems" and not _renews_lease_index(request):
            flush_index_writes += len(request.index_writes)
    return PartitionRates(
        sessions=sessions, seconds=span,
        busiest_by_table=_busiest(tables, span), busiest_by_index=_busiest(indexes, span),
        index_writes_per_session_second=sum(indexes.values()) / span / sessions,
        per_flush_index_writes=flush_index_writes,
    )


def _renews_lease_index(request: Any) -> bool:
    """True for a run's write that moves its session in the reaper's index (or ends it)."""
    names = {value for entry in request.params.get("TransactItems", [])
             for item in entry.values()
             for value in item.get("ExpressionAttributeNames", {}).values()}
    return "reapAt" in names


def _busiest(counts: Counter[tuple[str, str]], span: float) -> dict[str, tuple[str, float]]:
    busiest: dict[str, tuple[str, float]] = {}
    for (name, key), count in counts.items():
        rate = count / span
        if rate > busiest.get(name, ("", -1.0))[1]:
            busiest[name] = (key, rate)
    return busiest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=40)
    args = parser.parse_args(argv)
    rates = measure(args.sessions, args.seconds)
    print(json.dumps(rates.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
