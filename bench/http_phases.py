"""Measurements through the HTTP API of a running local stack.

Every time is taken by the client: `time.time()` when a response has been read, against an
event's `createdAt` (the server's clock; the stack runs on the same machine).
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.stack import Stack, new_http
from bench.stats import created_ms

TERMINAL = ("done", "error", "cancelled")
REQUEST_TIMEOUT = 60.0
FOLLOW_TIMEOUT = 240.0
BASELINE_POLL_SECONDS = 1.5
LONG_POLL_WAIT = 20


class BenchError(Exception):
    """A measurement could not be taken (the stack answered something unexpected)."""


def start_session(http: requests.Session, stack: Stack, message: str) -> tuple[str, float]:
    """POST a start; return the session id and the request's duration in ms."""
    began = time.perf_counter()
    response = http.post(f"{stack.api_url}/api/chat/session", json={"message": message},
                         timeout=REQUEST_TIMEOUT)
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 202:
        raise BenchError(f"start answered {response.status_code}: {response.text[:200]}")
    return response.json()["sessionId"], elapsed


def get_events(http: requests.Session, stack: Stack, session_id: str, after: int,
               wait: int = 0, limit: int = 1000, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    response = http.get(f"{stack.api_url}/api/chat/session/{session_id}/events",
                        params={"after": after, "wait": wait, "limit": limit}, timeout=timeout)
    if response.status_code != 200:
        raise BenchError(f"events answered {response.status_code}: {response.text[:200]}")
    return response.json()


def full_log(http: requests.Session, stack: Stack, session_id: str) -> list[dict[str, Any]]:
    """Return every event of a finished session, read afresh from the start."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = get_events(http, stack, session_id, after)
        events.extend(page["events"])
        after = page["lastSeq"]
        if not page["hasMore"]:
            return events


# -- start latency ------------------------------------------------------------------------

def start_latency(stack: Stack, starts: int, message: str, warmup: int = 20) -> list[float]:
    """Return the POST -> 202 durations (ms) of `starts` sequential starts on one connection."""
    with new_http() as http:
        for _ in range(warmup):
            start_session(http, stack, message)
        return [start_session(http, stack, message)[1] for _ in range(starts)]


def paced_start_latency(stack: Stack, starts: int, message: str, per_second: float) -> list[float]:
    """Return POST -> 202 durations (ms) of starts sent at a steady rate (open loop)."""
    durations = []
    next_start = time.monotonic()
    with new_http() as http:
        for _ in range(starts):
            time.sleep(max(0.0, next_start - time.monotonic()))
            next_start += 1 / per_second
            durations.append(start_session(http, stack, message)[1])
    return durations


# -- following a session ------------------------------------------------------------------

@dataclass
class Followed:
    """What one client saw of one session."""

    session_id: str
    started_at: float = 0.0  # time.time() just before the start request was sent
    seqs: list[int] = field(default_factory=list)
    visibility_ms: list[float] = field(default_factory=list)
    first_event_ms: float | None = None
    polls: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    status: str = "running"
    output_tokens: int = 0
    contents: dict[int, str] = field(default_factory=dict)


def _count_error(followed: Followed, error: Exception) -> None:
    followed.errors += 1
    kind = str(error).split(":")[0] if isinstance(error, BenchError) else type(error).__name__
    followed.error_kinds[kind] = followed.error_kinds.get(kind, 0) + 1


def _take(followed: Followed, page: dict[str, Any], received: float) -> None:
    for event in page["events"]:
        followed.seqs.append(event["seq"])
        followed.contents[event["seq"]] = event.get("content", "")
        followed.visibility_ms.append(received * 1000 - created_ms(event["createdAt"]))
        if followed.first_event_ms is None:
            followed.first_event_ms = (received - followed.started_at) * 1000
        if event["eventType"] == "done":
            followed.output_tokens = event["usage"]["outputTokens"]
    followed.status = page["status"]


def follow_long_poll(stack: Stack, followed: Followed, http: requests.Session | None = None) -> None:
    """Long-poll (wait=20) from seq 0 until the session is complete."""
    own = http is None
    http = http or new_http()
    after = 0
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    try:
        while time.monotonic() < deadline:
            try:
                page = get_events(http, stack, followed.session_id, after, wait=LONG_POLL_WAIT)
            except (requests.RequestException, BenchError) as error:
                _count_error(followed, error)
                time.sleep(0.1)
                continue
            _take(followed, page, time.time())
            followed.polls += 1
            after = page["lastSeq"]
            if page["status"] in TERMINAL and not page["hasMore"]:
                return
        followed.errors += 1
    finally:
        if own:
            http.close()


def follow_fixed_interval(stack: Stack, followed: Followed, interval: float) -> None:
    """Poll (wait=0) every `interval` seconds on a fixed schedule until the session is complete."""
    after = 0
    next_poll = time.monotonic()
    deadline = next_poll + FOLLOW_TIMEOUT
    with new_http() as http:
        while time.monotonic() < deadline:
            try:
                page = get_events(http, stack, followed.session_id, after)
            except (requests.RequestException, BenchError):
                followed.errors += 1
                page = None
            if page is not None:
                _take(followed, page, time.time())
                followed.polls += 1
                after = page["lastSeq"]
                if page["status"] in TERMINAL and not page["hasMore"]:
                    return
            if page is not None and page["hasMore"]:
                continue
            next_poll += interval
            time.sleep(max(0.0, next_poll - time.monotonic()))
        followed.errors += 1


def run_sessions(stack: Stack, messages: list[str], mode: str) -> list[Followed]:
    """Start one session per message at once; follow each (`long_poll` or `fixed`) to its end."""
    results: list[Followed] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(messages))

    def one(message: str) -> None:
        with new_http(pool=1) as http:
            barrier.wait()
            started = time.time()
            try:
                session_id, _ = start_session(http, stack, message)
            except (requests.RequestException, BenchError):
                with lock:
                    results.append(Followed("", started_at=started, errors=1, status="not started"))
                return
            followed = Followed(session_id, started_at=started)
            if mode == "fixed":
                follow_fixed_interval(stack, followed, BASELINE_POLL_SECONDS)
            else:
                follow_long_poll(stack, followed, http)
        with lock:
            results.append(followed)

    threads = [threading.Thread(target=one, args=(m,), name=f"follow-{i}")
               for i, m in enumerate(messages)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# -- exactness ------------------------------------------------------------------------------

@dataclass
class Exactness:
    """Events a client missed or saw twice, against the session's stored log."""

    lost: int = 0
    duplicated: int = 0
    text_mismatches: int = 0


def check_exact(stack: Stack, followed: list[Followed]) -> Exactness:
    """Compare what each client saw with a fresh read of the whole log."""
    result = Exactness()
    with new_http() as http:
        for one in followed:
            if not one.session_id:
                continue
            log = full_log(http, stack, one.session_id)
            stored = [e["seq"] for e in log]
            seen = set(one.seqs)
            result.lost += len(set(stored) - seen)
            result.duplicated += len(one.seqs) - len(seen)
            result.text_mismatches += sum(
                1 for e in log if e["seq"] in one.contents and one.contents[e["seq"]] != e.get("content", "")
            )
    return result


# -- scale ----------------------------------------------------------------------------------

@dataclass
class ScalePoint:
    sessions: int
    seconds: float
    events: int
    output_tokens: int
    visibility_ms: list[float]
    first_event_ms: list[float]
    probe_ms: list[float]
    errors: int
    error_kinds: dict[str, int]
    exactness: Exactness
    unfinished: int


def scale_level(stack: Stack, sessions: int, message: str) -> ScalePoint:
    """Start `sessions` sessions at once, long-poll each; probe wait=0 polls meanwhile."""
    probe_ms: list[float] = []
    stop = threading.Event()
    ids: list[str] = []

    def probe() -> None:
        rng = random.Random(sessions)
        with new_http(pool=1) as http:
            while not stop.is_set():
                if ids:
                    began = time.perf_counter()
                    try:
                        get_events(http, stack, rng.choice(ids), after=0, limit=1)
                        probe_ms.append((time.perf_counter() - began) * 1000)
                    except (requests.RequestException, BenchError):
                        pass
                stop.wait(0.05)

    prober = threading.Thread(target=probe, name="probe")
    prober.start()
    began = time.monotonic()
    # The ids appear as the starts answer; the prober reads whichever exist.
    followed = _run_collecting_ids(stack, [message] * sessions, ids)
    seconds = time.monotonic() - began
    stop.set()
    prober.join()
    return ScalePoint(
        sessions=sessions,
        seconds=seconds,
        events=sum(len(f.seqs) for f in followed),
        output_tokens=sum(f.output_tokens for f in followed),
        visibility_ms=[v for f in followed for v in f.visibility_ms],
        first_event_ms=[f.first_event_ms for f in followed if f.first_event_ms is not None],
        probe_ms=probe_ms,
        errors=sum(f.errors for f in followed),
        error_kinds=_merged_kinds(followed),
        exactness=check_exact(stack, followed),
        unfinished=sum(1 for f in followed if f.status not in TERMINAL),
    )


def _merged_kinds(followed: list[Followed]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for one in followed:
        for kind, count in one.error_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + count
    return kinds


def _run_collecting_ids(stack: Stack, messages: list[str], ids: list[str]) -> list[Followed]:
    results: list[Followed] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(messages))

    def one(message: str) -> None:
        with new_http(pool=1) as http:
            barrier.wait()
            followed = Followed("", started_at=time.time())
            try:
                followed.session_id, _ = start_session(http, stack, message)
            except (requests.RequestException, BenchError) as error:
                _count_error(followed, error)
                followed.status = "not started"
            else:
                ids.append(followed.session_id)
                follow_long_poll(stack, followed, http)
        with lock:
            results.append(followed)

    threads = [threading.Thread(target=one, args=(m,), name=f"scale-{i}")
               for i, m in enumerate(messages)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# -- start -> first event, one at a time ------------------------------------------------------

def first_event_sequential(stack: Stack, runs: int, message: str) -> list[float]:
    """Return start -> first event visible (ms) for sessions started one after another."""
    latencies = []
    with new_http() as http:
        for _ in range(runs):
            followed = Followed("", started_at=time.time())
            followed.session_id, _ = start_session(http, stack, message)
            follow_long_poll(stack, followed, http)
            if followed.first_event_ms is None:
                raise BenchError(f"session {followed.session_id} showed no event")
            latencies.append(followed.first_event_ms)
    return latencies


# -- resume -----------------------------------------------------------------------------------

@dataclass
class ResumeResult:
    sessions: int
    reconnects: int
    aborted_requests: int
    repeats: int
    losses: int
    stored_mismatch: Exactness


def resume_exactness(stack: Stack, sessions: int, min_reconnects: int, message: str,
                     seed: int) -> ResumeResult:
    """Follow sessions with clients that drop their connection at random moments and resume.

    A reconnect closes the HTTP connection, often in the middle of a long-poll (a short client
    timeout abandons the request, and whatever it would have returned), waits a random
    moment and resumes from the last seq the client holds, as a reloaded page does.
    """
    per_session = -(-min_reconnects // sessions)
    totals = {"reconnects": 0, "aborted": 0, "repeats": 0, "losses": 0}
    lock = threading.Lock()
    followed_all: list[Followed] = []

    def one(index: int, session_id: str) -> None:
        rng = random.Random(seed * 1000 + index)
        followed = Followed(session_id)
        after = 0
        reconnects = aborted = repeats = losses = 0
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        complete = False
        while time.monotonic() < deadline and not (complete and reconnects >= per_session):
            http = new_http(pool=1)
            try:
                abandon = rng.random() < 0.5
                timeout = rng.uniform(0.005, 0.15) if abandon else REQUEST_TIMEOUT
                try:
                    page = get_events(http, stack, session_id, after, wait=rng.choice((0, 1, 2)),
                                      limit=rng.choice((1, 3, 10, 200)), timeout=timeout)
                except requests.Timeout:
                    aborted += 1
                    page = None
                if page is not None:
                    for event in page["events"]:
                        seq = event["seq"]
                        if seq <= after:
                            repeats += 1
                        elif seq > after + 1:
                            losses += seq - after - 1
                        if seq > after:
                            after = seq
                            followed.seqs.append(seq)
                            followed.contents[seq] = event.get("content", "")
                    complete = page["status"] in TERMINAL and not page["hasMore"]
                    followed.status = page["status"]
            finally:
                http.close()
            reconnects += 1
            time.sleep(rng.uniform(0.0, 0.05))
        with lock:
            totals["reconnects"] += reconnects
            totals["aborted"] += aborted
            totals["repeats"] += repeats
            totals["losses"] += losses
            followed_all.append(followed)

    with new_http() as http:
        ids = [start_session(http, stack, message)[0] for _ in range(sessions)]
    threads = [threading.Thread(target=one, args=(i, sid), name=f"resume-{i}")
               for i, sid in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ResumeResult(sessions, totals["reconnects"], totals["aborted"], totals["repeats"],
                        totals["losses"], check_exact(stack, followed_all))
