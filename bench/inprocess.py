"""Measurements that need a hook inside the server: DynamoDB requests counted at the client,
and the moment a provider stream is closed.

They run backchat's own code (ChatService, Orchestrator, SessionStore, the demo provider)
in this process against the local stack's DynamoDB (its moto server). The stack's
`chalice local` process cannot be hooked from outside, and counting on the moto side would
not tell the run's requests from the poller's; here a botocore `before-call` handler on each
PynamoDB client counts every request by operation and by the thread that made it.
"""
from __future__ import annotations

import collections
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from chalicelib.changes import SessionChanges
from chalicelib.conversations import ConversationStore
from chalicelib.dispatch import Dispatcher, ThreadDispatcher
from chalicelib.orchestrator import Orchestrator
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import ModelRequest, Provider, ProviderStream, StreamItem
from chalicelib.providers.demo import DemoProvider
from chalicelib.service import ChatService
from chalicelib.settings import Settings
from chalicelib.store import SessionStore
from chalicelib.tools import default_tools

WRITE_OPERATIONS = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}
READ_OPERATIONS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
POLLER = "bench-poller"


class RequestCounter:
    """Counts DynamoDB requests per (thread role, operation) through botocore's event hooks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def attach(self, store: SessionStore) -> None:
        """Hook the store's botocore client (one for every table)."""
        client = store.models.session._get_connection().connection.client
        client.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        name = threading.current_thread().name
        role = "poller" if name.startswith(POLLER) else "run" if name.startswith("backchat-run") else "start"
        with self._lock:
            self.counts[(role, model.name)] += 1

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def total(self, operations: set[str], role: str | None = None) -> int:
        with self._lock:
            return sum(n for (r, op), n in self.counts.items()
                       if op in operations and (role is None or r == role))

    def by_operation(self) -> dict[str, int]:
        with self._lock:
            merged: collections.Counter[str] = collections.Counter()
            for (role, op), n in self.counts.items():
                merged[f"{role}:{op}"] += n
            return dict(sorted(merged.items()))


@dataclass
class Bench:
    """backchat's parts built in this process against the stack's DynamoDB."""

    settings: Settings
    store: SessionStore
    service: ChatService
    dispatcher: ThreadDispatcher
    counter: RequestCounter
    provider: "ClosingProbeProvider"


def build(ddb_url: str, owner: str, flush_mode: str = "merge", deployed_poll: bool = False,
          flush_interval: float = Settings.flush_interval) -> Bench:
    """Wire the service and orchestrator like wiring.py does, with a thread dispatcher.

    deployed_poll: long-polls re-read the store every 100 ms and hear no announcement of
    the run's writes, as on Lambda where the run is another process.
    """
    settings = Settings(dynamodb_endpoint=ddb_url, dispatch_mode="lambda" if deployed_poll else "thread",
                        flush_mode=flush_mode, flush_interval=flush_interval, local_owner=owner,
                        max_running_per_owner=100_000, cursor_secret="bench-" * 4)
    provider = ClosingProbeProvider(DemoProvider())
    providers = ProviderRegistry({"demo": provider})
    run_store = SessionStore(settings)
    orchestrator = Orchestrator(run_store, ConversationStore(run_store.models), providers,
                                default_tools(), settings)
    dispatcher = ThreadDispatcher(orchestrator.run, settings.local_max_runs)
    store = SessionStore(settings)
    if deployed_poll:
        # Another process's writes are never announced here.
        store.watch = SessionChanges().watch  # type: ignore[method-assign]
    service = ChatService(settings, store, ConversationStore(store.models), dispatcher, providers)
    counter = RequestCounter()
    counter.attach(store)
    counter.attach(run_store)
    return Bench(settings, store, service, dispatcher, counter, provider)


# -- request counts ----------------------------------------------------------------------------

@dataclass
class CostResult:
    mode: str
    output_tokens: int
    writes: int
    reads_polling: int
    reads_other: int
    polls: int
    events: int
    operations: dict[str, int] = field(default_factory=dict)

    def per_1000(self, value: int) -> float:
        return value * 1000 / self.output_tokens if self.output_tokens else float("nan")


def run_cost(bench: Bench, mode: str, message: str, poll: str) -> CostResult:
    """Run one session to its end with a poller (`fixed` 1.5 s or `long`); count requests."""
    bench.counter.reset()
    owner = bench.settings.local_owner
    session_id = bench.service.start(owner, json.dumps({"message": message}).encode())["sessionId"]
    polls = 0
    events = 0
    output_tokens = 0

    def poller() -> None:
        nonlocal polls, events, output_tokens
        after = 0
        next_poll = time.monotonic()
        while True:
            wait = "0" if poll == "fixed" else "20"
            page = bench.service.events(owner, session_id, {"after": str(after), "wait": wait,
                                                             "limit": "1000"})
            polls += 1
            events += len(page["events"])
            for event in page["events"]:
                if event["eventType"] == "done":
                    output_tokens = event["usage"]["outputTokens"]
            after = page["lastSeq"]
            if page["status"] != "running" and not page["hasMore"]:
                return
            if poll == "fixed" and not page["hasMore"]:
                next_poll += 1.5
                time.sleep(max(0.0, next_poll - time.monotonic()))

    thread = threading.Thread(target=poller, name=POLLER)
    thread.start()
    thread.join()
    counter = bench.counter
    return CostResult(
        mode=mode,
        output_tokens=output_tokens,
        writes=counter.total(WRITE_OPERATIONS),
        reads_polling=counter.total(READ_OPERATIONS, "poller"),
        reads_other=counter.total(READ_OPERATIONS) - counter.total(READ_OPERATIONS, "poller"),
        polls=polls,
        events=events,
        operations=counter.by_operation(),
    )


@dataclass
class IdleReads:
    poll_wait0: float
    long_poll_per_second: float
    long_poll_seconds: int


def idle_reads(bench: Bench, wait_seconds: int = 3) -> IdleReads:
    """Reads of one poll of a running session with nothing new: wait=0, and a long-poll."""
    owner = bench.settings.local_owner
    session_id = bench.service.start(owner, json.dumps(
        {"message": "idle [demo tokens=1 rate=0.05]"}).encode())["sessionId"]
    # The run writes its first chunk at once, then nothing for 20 s: wait until it has.
    after = 0
    for _ in range(100):
        page = bench.service.events(owner, session_id, {"after": str(after), "wait": "2"})
        after = page["lastSeq"]
        if after:
            break

    def measure(wait: int, repeats: int) -> float:
        result: list[float] = []

        def poll() -> None:
            bench.counter.reset()
            for _ in range(repeats):
                bench.service.events(owner, session_id, {"after": str(after), "wait": str(wait)})
            result.append(bench.counter.total(READ_OPERATIONS, "poller") / repeats)

        thread = threading.Thread(target=poll, name=POLLER)
        thread.start()
        thread.join()
        return result[0]

    wait0 = measure(0, 20)
    long = measure(wait_seconds, 1) / wait_seconds
    bench.service.cancel(owner, session_id)
    return IdleReads(wait0, long, wait_seconds)


# -- flush interval trade-off ------------------------------------------------------------------

@dataclass
class FlushPoint:
    interval: float
    output_tokens: int
    writes: int
    visibility_ms: list[float]


def flush_point(ddb_url: str, interval: float, message: str) -> FlushPoint:
    """Run one session with a given flush interval; long-poll it in-process (no HTTP hop)."""
    from bench.stats import created_ms

    bench = build(ddb_url, f"bench-flush-{interval}", flush_interval=interval)
    owner = bench.settings.local_owner
    bench.counter.reset()
    session_id = bench.service.start(owner, json.dumps({"message": message}).encode())["sessionId"]
    visibility: list[float] = []
    output_tokens = 0
    after = 0
    while True:
        page = bench.service.events(owner, session_id, {"after": str(after), "wait": "20",
                                                         "limit": "1000"})
        received = time.time() * 1000
        for event in page["events"]:
            visibility.append(received - created_ms(event["createdAt"]))
            if event["eventType"] == "done":
                output_tokens = event["usage"]["outputTokens"]
        after = page["lastSeq"]
        if page["status"] != "running" and not page["hasMore"]:
            break
    return FlushPoint(interval, output_tokens, bench.counter.total(WRITE_OPERATIONS), visibility)


# -- profiles of the start and poll paths -------------------------------------------------------

class _NoDispatch(Dispatcher):
    """Accepts every session and runs none: the start path alone is profiled."""

    def dispatch(self, session_id: str) -> None:
        return None


@dataclass
class PathProfile:
    name: str
    calls: int
    wall_ms: float
    cpu_ms: float
    tree: str


def profile_paths(ddb_url: str, calls: int) -> list[PathProfile]:
    """Profile ChatService.start and an idle and a busy events poll with pyinstrument."""
    from pyinstrument import Profiler

    settings = Settings(dynamodb_endpoint=ddb_url, local_owner="bench-profile",
                        max_running_per_owner=100_000)
    store = SessionStore(settings)
    service = ChatService(settings, store, ConversationStore(store.models), _NoDispatch(),
                          ProviderRegistry({"demo": DemoProvider()}))
    owner = settings.local_owner
    body = json.dumps({"message": "profile me"}).encode()
    idle = service.start(owner, body)["sessionId"]
    busy = service.start(owner, body)["sessionId"]
    claimed = store.claim_lease(busy, "bench-profile")
    from chalicelib.writer import EventWriter, FlushPolicy

    writer = EventWriter(store, claimed, "bench-profile", policy=FlushPolicy(interval=0.0))
    for index in range(20):
        writer.append_delta(f"chunk {index} ")
    paths = (
        ("start (ChatService.start, dispatch excluded)", lambda: service.start(owner, body)),
        ("idle poll (events, wait=0, nothing new)",
         lambda: service.events(owner, idle, {"after": "0"})),
        ("busy poll (events, wait=0, 20 events)",
         lambda: service.events(owner, busy, {"after": "0"})),
    )
    results = []
    for name, call in paths:
        call()
        profiler = Profiler(interval=0.0005)
        wall, cpu = time.perf_counter(), time.process_time()
        profiler.start()
        for _ in range(calls):
            call()
        profiler.stop()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        tree = profiler.output_text(unicode=False, color=False, show_all=False)
        results.append(PathProfile(name, calls, wall * 1000 / calls, cpu * 1000 / calls, tree))
    return results


# -- cancel -> stream closed -----------------------------------------------------------------

class ClosingProbeStream(ProviderStream):
    """A provider stream that records when it was first closed."""

    def __init__(self, inner: ProviderStream, closed: dict[str, float], key: str) -> None:
        self._inner = inner
        self._closed = closed
        self._key = key

    def __iter__(self) -> Iterator[StreamItem]:
        return iter(self._inner)

    def close(self) -> None:
        self._closed.setdefault(self._key, time.monotonic())
        self._inner.close()


class ClosingProbeProvider(Provider):
    """Wraps a provider; records, per message, when its stream was closed."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner
        self.closed: dict[str, float] = {}

    def stream(self, request: ModelRequest) -> ProviderStream:
        key = request.messages[-1].content if request.messages else ""
        return ClosingProbeStream(self._inner.stream(request), self.closed, key)


def cancel_to_close(bench: Bench, runs: int, seed: int) -> list[float]:
    """Return cancel request -> provider stream closed (ms) for runs cancelled mid-stream."""
    rng = random.Random(seed)
    owner = bench.settings.local_owner
    latencies = []
    for index in range(runs):
        message = f"cancel me {index} [demo tokens=5000 rate=50]"
        session_id = bench.service.start(owner, json.dumps({"message": message}).encode())["sessionId"]
        after = 0
        # Wait until the answer is streaming, then cancel at a random moment.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            page = bench.service.events(owner, session_id, {"after": str(after), "wait": "5"})
            after = page["lastSeq"]
            if any(e["eventType"] == "delta" for e in page["events"]):
                break
        time.sleep(rng.uniform(0.0, 0.5))
        asked = time.monotonic()
        bench.service.cancel(owner, session_id)
        while message not in bench.provider.closed and time.monotonic() < asked + 10:
            time.sleep(0.002)
        if message in bench.provider.closed:
            latencies.append((bench.provider.closed[message] - asked) * 1000)
        # Let the run write its cancelled ending before the next one starts.
        while bench.service.events(owner, session_id, {"after": str(after), "wait": "5"})[
                "status"] == "running" and time.monotonic() < asked + 10:
            pass
    return latencies
