"""Growth: is the local stack as quick with a million stored events as with none?

For each size, a data directory is filled by bench/seed_data.py (not timed: the data is what
weeks of use would leave), a stack is started on it, and then, through the real HTTP API:

- start-up: from launching `python -m scripts.local_stack` to GET /api/health answering 200;
- poll: GET /api/chat/session/{id}/events?after=0&limit=50 of a stored 50-event session;
- list: GET /api/chat/sessions, the caller's newest 20 (every stored session is the caller's);
- start: POST /api/chat/session of a one-token demo run, one after another.

Each is the median of `requests` calls after a few warm-up calls. Every level holds at least a
full page of sessions and one to poll (LIST_PAGE + 1 sessions of 50 events), so each request
returns as much at the smallest level as at the largest: only the stored data grows.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import requests

from bench.seed_data import seed
from bench.stack import STACK_ENV, Stack, new_http, start_stack
from scripts.local_stack import FAKE_AWS_CREDENTIALS

EVENTS_PER_SESSION = 50
LIST_PAGE = 20  # GET /api/chat/sessions' default page
WARMUP = 3
START_MESSAGE = "growth [demo tokens=1 rate=1000]"
REQUEST_TIMEOUT = 60.0


class GrowthError(Exception):
    """A request of the growth benchmark was not answered as expected."""


@dataclass
class GrowthPoint:
    """The measurements at one size of stored data."""

    stored_events: int
    stored_sessions: int
    seed_seconds: float
    startup_seconds: float
    poll_ms: list[float]
    list_ms: list[float]
    start_ms: list[float]


def measure(sizes: tuple[int, ...], requests_per_measure: int, stack_env: dict[str, str],
            say: Callable[[str], None] = print) -> list[GrowthPoint]:
    """Return a GrowthPoint per size (events stored), each on a stack of its own."""
    points = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"backchat-growth-{size}-") as parent:
            directory = Path(parent) / "dynamodb"
            began = time.monotonic()
            least = (LIST_PAGE + 1) * EVENTS_PER_SESSION
            seeded = seed(directory, max(size, least), EVENTS_PER_SESSION)
            seed_seconds = time.monotonic() - began
            stack = start_stack(f"growth-{size}", stack_env, data_dir=str(directory))
            try:
                point = _measure_stack(stack, seeded.events, seeded.sessions, seed_seconds,
                                       random.Random(size).choice(seeded.session_ids),
                                       requests_per_measure)
            finally:
                stack.stop()
        say(f"  {point.stored_events:,} events: start-up {point.startup_seconds:.1f} s, poll "
            f"{statistics.median(point.poll_ms):.0f} ms, list "
            f"{statistics.median(point.list_ms):.0f} ms, start "
            f"{statistics.median(point.start_ms):.0f} ms")
        points.append(point)
    return points


def _measure_stack(stack: Stack, events: int, sessions: int, seed_seconds: float,
                   session_id: str, count: int) -> GrowthPoint:
    api = stack.api_url
    with new_http() as http:
        poll = _timed(count, lambda: _get(http, f"{api}/api/chat/session/{session_id}/events",
                                          {"after": 0, "limit": EVENTS_PER_SESSION},
                                          lambda body: len(body["events"]) == EVENTS_PER_SESSION))
        listed = _timed(count, lambda: _get(http, f"{api}/api/chat/sessions", {},
                                            lambda body: len(body["sessions"]) == LIST_PAGE))
        started = _timed(count, lambda: _start(http, api))
    return GrowthPoint(events, sessions, seed_seconds, stack.started_seconds, poll, listed,
                       started)


def _timed(count: int, call: Callable[[], None]) -> list[float]:
    """Return the durations (ms) of `count` calls, after WARMUP untimed ones."""
    for _ in range(WARMUP):
        call()
    durations = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        durations.append((time.perf_counter() - began) * 1000)
    return durations


def _get(http: requests.Session, url: str, params: dict[str, int],
         expected: Callable[[dict], bool]) -> None:
    response = http.get(url, params=params, timeout=REQUEST_TIMEOUT)
    if response.status_code != 200 or not expected(response.json()):
        raise GrowthError(f"GET {url} answered {response.status_code}: {response.text[:200]}")


def _start(http: requests.Session, api: str) -> None:
    response = http.post(f"{api}/api/chat/session", json={"message": START_MESSAGE},
                         timeout=REQUEST_TIMEOUT)
    if response.status_code != 202:
        raise GrowthError(f"start answered {response.status_code}: {response.text[:200]}")


def main(argv: list[str] | None = None) -> int:
    """Run the growth benchmark alone and print its points (`make bench` runs it too)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100000,1000000",
                        help="stored events per level, comma-separated")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per measure")
    args = parser.parse_args(argv)
    os.environ.update(FAKE_AWS_CREDENTIALS, AWS_DEFAULT_REGION="us-east-1")
    points = measure(tuple(int(size) for size in args.sizes.split(",")), args.requests,
                     STACK_ENV)
    print(json.dumps([asdict(point) for point in points], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
