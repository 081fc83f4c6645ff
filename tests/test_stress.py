"""Concurrency stress: duplicate deliveries, a reaper whose clock runs ahead, random cancels and
many readers at once. Whatever interleaving happens, invariants 1-3 and 6 hold for every session.
"""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

import pytest

from chalicelib import clock
from chalicelib.conversations import ConversationStore
from chalicelib.dispatch import Dispatcher
from chalicelib.orchestrator import Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.demo import DemoProvider
from chalicelib.reaper import Reaper
from chalicelib.records import TERMINAL_STATUSES
from chalicelib.service import ChatService
from chalicelib.store import SessionStore
from chalicelib.tools import default_tools
from tests.builders import log, stored_answer

OWNER = "stress"
SESSIONS = 12
DELIVERIES = 3  # Lambda's async invoke is at-least-once: every run is delivered 3 times


class SkewedClock:
    """The wall clock, with a per-thread offset (the reaper's runs ahead)."""

    def __init__(self, real) -> None:
        self._real = real
        self._offsets = threading.local()

    def __call__(self) -> int:
        return self._real() + getattr(self._offsets, "ms", 0)

    def run_ahead(self, ms: int) -> None:
        self._offsets.ms = ms


class RepeatingDispatcher(Dispatcher):
    """Delivers every session several times at once, each on a thread of its own."""

    def __init__(self, run) -> None:
        self._run = run
        self.threads: list[threading.Thread] = []

    def dispatch(self, session_id: str) -> None:
        for _ in range(DELIVERIES):
            thread = threading.Thread(target=self._run, args=(session_id, None), daemon=True)
            self.threads.append(thread)
            thread.start()


@pytest.mark.timeout(240)
def test_invariants_hold_under_duplicates_a_skewed_reaper_cancels_and_readers(
        store: SessionStore, settings, monkeypatch) -> None:
    # Writes every 0.3 s: often enough to race with the reaper, seldom enough that a reaper
    # reading a session's lastSeq sometimes writes the terminal event before the run does.
    settings = settings.with_overrides(lease_seconds=2, heartbeat_interval=0.3,
                                       flush_interval=0.3, lease_index_seconds=0.5)
    store = SessionStore(settings, store.models)
    skewed = SkewedClock(clock.now_ms)
    monkeypatch.setattr(clock, "now_ms", skewed)
    claims: Counter[str] = Counter()
    real_claim = store.claim_lease

    def counting_claim(session_id: str, attempt_id: str):
        claimed = real_claim(session_id, attempt_id)
        if claimed is not None:
            claims[session_id] += 1
        return claimed

    monkeypatch.setattr(store, "claim_lease", counting_claim)
    conversations = ConversationStore(store.models)
    orchestrator = Orchestrator(store, conversations, ProviderRegistry({"demo": DemoProvider()}),
                                default_tools(), settings)
    dispatcher = RepeatingDispatcher(orchestrator.run)
    service = ChatService(settings, store, conversations, dispatcher,
                          ProviderRegistry({"demo": DemoProvider()}))
    rng = random.Random(20261202)
    stop = threading.Event()
    problems: list[str] = []

    def reaper() -> None:
        skewed.run_ahead(0)
        while not stop.is_set():
            # Now and then its clock runs a lease and a half ahead: it ends live runs, whose
            # attempts must then stop writing.
            skewed.run_ahead(3_000 if rng.random() < 0.5 else 0)
            try:
                Reaper(store).reap()
            except Exception as error:  # noqa: BLE001 - collected, then failed below
                problems.append(f"reaper: {error!r}")
            time.sleep(0.05)

    seen: dict[str, list[int]] = {}

    def read(session_id: str) -> None:
        after, got = 0, []
        local = random.Random(session_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            page = service.events(OWNER, session_id, {"after": str(after),
                                                      "limit": str(local.randint(1, 4))})
            got += [event["seq"] for event in page["events"]]
            after = page["lastSeq"]
            if page["status"] in TERMINAL_STATUSES and not page["hasMore"]:
                seen[session_id] = got
                return
            time.sleep(local.uniform(0, 0.03))
        problems.append(f"reader of {session_id} never saw the end")

    reaping = threading.Thread(target=reaper, daemon=True)
    reaping.start()
    session_ids, helpers = [], []
    try:
        for index in range(SESSIONS):
            tokens = rng.choice([5, 100, 200])
            body = {"message": f"run {index}: what is {index}*7? [demo tokens={tokens} rate=50]"}
            session_id = service.start(OWNER, json.dumps(body).encode())["sessionId"]
            session_ids.append(session_id)
            started = [threading.Thread(target=read, args=(session_id,), daemon=True)]
            if index % 3 == 0:  # a cancel at a random moment: before its run starts, or during
                started.append(threading.Timer(rng.uniform(0, 1.0), service.cancel,
                                               args=(OWNER, session_id)))
            for thread in started:
                thread.start()
            helpers += started
        for thread in helpers + dispatcher.threads:
            thread.join(180)
    finally:
        stop.set()
        reaping.join(30)
        skewed.run_ahead(0)

    statuses = Counter(store.get(sid).status for sid in session_ids)
    assert problems == []
    # The mix this test is about: some runs were cancelled, some ended by the skewed reaper.
    assert statuses["cancelled"] and statuses["error"], statuses
    for session_id in session_ids:
        events = log(store, session_id)
        session = store.get(session_id)
        seqs = [event.seq for event in events]
        # 1: seq starts at 1 and is contiguous (a seq written twice would be refused).
        assert seqs == list(range(1, len(events) + 1)), session_id
        # 2: exactly one terminal event, the last, matching the status.
        terminal = [e for e in events if e.event_type in TERMINAL_STATUSES]
        assert terminal == [events[-1]] and session.status == events[-1].event_type, session_id
        # 3: one attempt claimed it, whatever the deliveries.
        assert claims[session_id] <= 1, session_id
        # 6: the reader saw every event once, in order.
        assert seen[session_id] == seqs, session_id
        # 7: the answer kept is the deltas' concatenation.
        assert stored_answer(store, session_id) == "".join(
            e.content or "" for e in events if e.event_type == "delta"), session_id
