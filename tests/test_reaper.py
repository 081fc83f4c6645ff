"""Reaper: a run whose orchestrator died ends as error, with one terminal event and no gap."""
from __future__ import annotations

import threading
import time

from chalicelib import clock
from chalicelib.orchestrator import Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import TextChunk, Usage
from chalicelib.reaper import STOPPED_RESPONDING, LocalReaperLoop, Reaper
from chalicelib.records import NewSession, TokenUsage
from chalicelib.store import Fence, SessionStore
from chalicelib.tools import default_tools
from tests.fakes import ScriptedProvider


def after_lease(store: SessionStore, monkeypatch, session_id: str = "s1") -> None:
    """Move the clock past the session's lease."""
    lease_end = store.get(session_id).lease_until_ms
    monkeypatch.setattr(clock, "now_ms", lambda: lease_end + 1)


def test_expired_run_is_ended_error_after_its_last_event(store, monkeypatch) -> None:
    from chalicelib.records import DELTA, EventRecord

    store.create(NewSession(id="s1", owner_id="o", model="demo", message="m"))
    store.claim_lease("s1", "dead")
    store.append("s1", Fence("dead"), [EventRecord("s1", 1, DELTA, clock.now_iso(), content="Hal"),
                                       EventRecord("s1", 2, DELTA, clock.now_iso(), content="f")],
                 TokenUsage(4, 2))
    after_lease(store, monkeypatch)
    assert Reaper(store).reap() == ["s1"]
    events = store.events_after("s1", 0, 10).events
    session = store.get("s1")
    assert [(e.seq, e.event_type) for e in events] == [(1, "delta"), (2, "delta"), (3, "error")]
    assert (session.status, session.error, session.answer) == ("error", STOPPED_RESPONDING, "Half")
    assert session.usage == TokenUsage(4, 2)


def test_live_and_finished_runs_are_left_alone(store) -> None:
    store.create(NewSession(id="live", owner_id="o", model="demo", message="m"))
    store.claim_lease("live", "a1")
    assert Reaper(store).reap() == []
    assert store.get("live").status == "running"


def test_a_dispatch_never_claimed_is_reaped_after_the_claim_timeout(store, monkeypatch) -> None:
    store.create(NewSession(id="s1", owner_id="o", model="demo", message="m"))
    after_lease(store, monkeypatch)
    assert Reaper(store).reap() == ["s1"]
    assert store.get("s1").status == "error"


def test_zombie_cannot_write_after_the_reaper_ended_its_run(store, monkeypatch) -> None:
    from chalicelib.errors import LeaseLost
    from chalicelib.records import DELTA, EventRecord
    import pytest

    store.create(NewSession(id="s1", owner_id="o", model="demo", message="m"))
    store.claim_lease("s1", "zombie")
    real_now = clock.now_ms
    after_lease(store, monkeypatch)
    Reaper(store).reap()
    monkeypatch.setattr(clock, "now_ms", real_now)
    with pytest.raises(LeaseLost):
        store.append("s1", Fence("zombie"), [EventRecord("s1", 2, DELTA, clock.now_iso(), content="x")],
                     TokenUsage())
    assert [e.seq for e in store.events_after("s1", 0, 10).events] == [1]


def test_orchestrator_thread_that_stops_is_reaped_by_the_local_loop(store, settings,
                                                                    monkeypatch) -> None:
    """A run thread that simply stops (here: blocked forever) stops renewing its lease."""
    settings = settings.with_overrides(lease_seconds=2)
    stuck = threading.Event()
    real_append = store.append
    calls = []

    def append_then_stop(*args, **kwargs):
        calls.append(args)
        if len(calls) > 2:
            stuck.wait(30)
        return real_append(*args, **kwargs)

    monkeypatch.setattr(store, "append", append_then_stop)
    provider = ScriptedProvider([TextChunk(f"t{i} ") for i in range(50)] + [Usage(1, 1)],
                                pause=0.1)
    store.create(NewSession(id="s1", owner_id="o", model="demo", message="m"))
    orchestrator = Orchestrator(store, ProviderRegistry({"demo": provider}), default_tools(),
                                settings)
    loop = LocalReaperLoop(Reaper(store), interval=0.2)
    loop.start()
    run = threading.Thread(target=orchestrator.run, args=("s1",), daemon=True)
    try:
        run.start()
        deadline = time.monotonic() + 20
        while store.get("s1").status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        loop.stop()
        stuck.set()  # the zombie wakes up and tries to write: it must be refused
        run.join(10)
    events = store.events_after("s1", 0, 100).events
    session = store.get("s1")
    assert (session.status, session.error) == ("error", STOPPED_RESPONDING)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.event_type for e in events].count("error") == 1
    assert events[-1].event_type == "error"
    assert session.answer == "".join(e.content for e in events if e.event_type == "delta")
