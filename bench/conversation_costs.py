"""What one session costs in DynamoDB units as its conversation grows.

A session is metered as tests/test_deploy_requests.py meters it (the deployed settings, a
client long-polling as the page does, every request priced from the items' sizes: an update by
the larger of the old and new item, twice inside a transaction; a Query by its bytes; a
BatchGetItem per item), as the first turn of a conversation and as a turn of conversations
with 16 and 64 KB of earlier turns. The goal: from 0 to 64 KB, at most 1.1x the units.

    .venv/bin/python -m bench.conversation_costs [--kb 0 16 64]
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from tests.test_deploy_requests import app_on_moto, dev_stage_settings, measure_session

TOKENS = 300
RATE = 50


def measure(sizes_kb: Sequence[int]) -> list[dict[str, Any]]:
    """Meter one session per conversation size; return units, requests and the largest row."""
    points = []
    for kilobytes in sizes_kb:
        with app_on_moto(dev_stage_settings()) as (client, components, patch):
            measured = measure_session(client, components, patch.setattr, TOKENS, RATE, "long",
                                       conversation_kb=kilobytes)
        totals = measured.totals()
        points.append({
            "conversation_kb": kilobytes,
            "status": measured.status,
            "events": measured.events,
            "http_requests": measured.http_requests,
            "read_units": round(sum(row["read_units"] for row in totals.values()), 1),
            "write_units": round(sum(row["write_units"] for row in totals.values()), 1),
            "index_write_units": round(sum(row["index_write_units"]
                                           for row in totals.values()), 1),
            "history_read_units": round(totals["orchestrator"]["read_units"], 1),
            "largest_row_bytes": measured.log.largest_row,
        })
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, nargs="+", default=[0, 16, 64])
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.kb), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
