"""`make bench`: measure backchat on the real local stack and write docs/BENCHMARKS.md.

Two stacks run side by side: `backchat` (merged writes, long-poll) and `baseline`
(FLUSH_MODE=per_chunk: one write per model chunk, as the seed design; its clients poll
every 1.5 s). On them, in order: cold start, profiles of the start and poll paths, event
visibility (both modes in the same run), DynamoDB requests per 1,000 tokens and per poll
(in-process, both modes), the flush interval trade-off, cancel -> stream closed, start ->
first event, resume exactness. Then, each on a stack of its own (so that the sessions and
runs one phase leaves do not weigh on the next): the scale curve, start latency back to back
and paced; in process on moto, the DynamoDB units one session costs at 0, 16 and 64 KB of
conversation (bench/conversation_costs.py) and the write rate per partition key of every
table and index (bench/index_writes.py); and growth (poll, list, start and start-up with 0,
100,000 and 1,000,000 stored events, bench/growth.py on data directories filled by
bench/seed_data.py).

`python -m bench.run [--quick] [--seed N]`; --quick shrinks every workload (a smoke run,
not for the report).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from dataclasses import asdict
from typing import Any, Callable, Iterator

from bench import coldstart, conversation_costs, growth, http_phases, index_writes, inprocess
from bench import machine, report
from bench.stack import REPO_ROOT, STACK_ENV, Stack, start_stack
from scripts.local_stack import FAKE_AWS_CREDENTIALS

RESULTS_JSON = REPO_ROOT / "build" / "bench-results.json"


class Sizes:
    """How big each workload is; the full run must finish in under 10 minutes on 2 cores."""

    def __init__(self, quick: bool) -> None:
        self.cold_start_runs = 3 if quick else 7
        self.starts = 60 if quick else 500
        self.visibility_sessions = 1 if quick else 3
        self.visibility_tokens = 100 if quick else 500
        self.cost_tokens = 200 if quick else 1000
        self.cancel_runs = 5 if quick else 20
        self.first_event_runs = 10 if quick else 50
        self.resume_sessions = 5 if quick else 20
        self.resume_reconnects = 150 if quick else 1000
        self.scale_levels = (1, 10) if quick else (1, 10, 50, 200)
        self.scale_tokens = 60 if quick else 100
        # The 50-session run of issue 13, repeated on fresh stacks: one run on this shared
        # machine varies by more than the changes it is meant to show.
        self.concurrent_sessions = 10 if quick else 50
        self.concurrent_runs = 1 if quick else 3
        self.sweep_tokens = 100 if quick else 500
        self.profile_calls = 20 if quick else 100
        self.growth_sizes = (0, 10_000) if quick else (0, 100_000, 1_000_000)
        self.growth_requests = 5 if quick else 20
        self.conversation_kb = (0, 16) if quick else (0, 16, 64)
        self.index_sessions = 4 if quick else 20
        self.index_seconds = 20 if quick else 40


PACED_STARTS_PER_SECOND = 10.0
FLUSH_INTERVALS = (0.1, 0.15, 0.2, 0.25, 0.3)


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def timed(name: str, results: dict[str, Any], phase: Callable[[], Any]) -> Any:
    say(f"{name}...")
    began = time.monotonic()
    value = phase()
    results.setdefault("phase_seconds", {})[name] = round(time.monotonic() - began, 1)
    say(f"{name}: {time.monotonic() - began:.1f} s")
    return value


def run_parallel(jobs: list[Callable[[], None]]) -> None:
    """Run the jobs on threads at once; re-raise the first failure."""
    failures: list[BaseException] = []

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:  # handed to the caller below
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads (smoke run)")
    parser.add_argument("--seed", type=int, default=20261124)
    args = parser.parse_args(argv)
    sizes = Sizes(args.quick)
    # The in-process measurements talk to the stacks' moto servers, never to AWS.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(FAKE_AWS_CREDENTIALS)
    os.environ.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    began = time.monotonic()
    results: dict[str, Any] = {"machine": machine.describe(), "seed": args.seed, "quick": args.quick}
    say("starting the backchat and baseline stacks")
    with running_stack("backchat") as backchat, \
            running_stack("baseline", FLUSH_MODE="per_chunk") as baseline:
        run_phases(results, sizes, backchat, baseline, args.seed)
    # Each of these starts on an empty stack of its own.
    results["scale"] = timed("scale curve", results, lambda: isolated(scale_curve, sizes))
    results["concurrency"] = timed(
        f"{sizes.concurrent_sessions} sessions at once, {sizes.concurrent_runs} times", results,
        lambda: isolated(concurrency_runs, sizes))
    start_message = "start latency [demo tokens=1 rate=1000]"
    with running_stack("starts") as stack:
        results["start_latency_ms"] = timed("start latency", results, lambda: (
            http_phases.start_latency(stack, sizes.starts, start_message)))
    results["paced_starts_per_second"] = PACED_STARTS_PER_SECOND
    with running_stack("paced-starts") as stack:
        results["start_latency_paced_ms"] = timed(
            "start latency (paced)", results, lambda: http_phases.paced_start_latency(
                stack, sizes.starts, start_message, PACED_STARTS_PER_SECOND))
    # In process, on moto: what DynamoDB would bill, and the write rate per partition key.
    results["conversation_costs"] = timed(
        "units per session by conversation length", results,
        lambda: conversation_costs.measure(sizes.conversation_kb))
    results["index_writes"] = timed(
        "writes per partition key", results, lambda: index_writes.measure(
            sizes.index_sessions, sizes.index_seconds).as_dict())
    results["growth"] = timed("growth with stored data", results, lambda: [
        asdict(point) for point in growth.measure(sizes.growth_sizes, sizes.growth_requests,
                                                  STACK_ENV, say)])
    results["machine"]["load average at end (1/5/15 min)"] = machine.load_average()
    results["total_seconds"] = round(time.monotonic() - began, 1)
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=1, default=str))
    report.write(results)
    say(f"done in {results['total_seconds']:.0f} s: {report.REPORT} and {report.PLOTS}/")
    return 0


def run_phases(results: dict[str, Any], sizes: Sizes, backchat: Stack, baseline: Stack,
               seed: int) -> None:
    results["cold_start"] = asdict(timed(
        "cold start", results, lambda: coldstart.measure(backchat.ddb_url, sizes.cold_start_runs)))

    results["profiles"] = [asdict(p) for p in timed(
        "profiles of the start and poll paths", results,
        lambda: inprocess.profile_paths(backchat.ddb_url, sizes.profile_calls))]

    def visibility() -> dict[str, Any]:
        message = f"visibility [demo tokens={sizes.visibility_tokens} rate=50]"
        runs: dict[str, list[http_phases.Followed]] = {}

        def side(name: str, stack: Stack, mode: str) -> None:
            runs[name] = http_phases.run_sessions(stack, [message] * sizes.visibility_sessions, mode)

        run_parallel([lambda: side("backchat", backchat, "long_poll"),
                      lambda: side("baseline", baseline, "fixed")])
        return {
            name: {
                "visibility_ms": [v for f in followed for v in f.visibility_ms],
                "events": sum(len(f.seqs) for f in followed),
                "polls": sum(f.polls for f in followed),
                "errors": sum(f.errors for f in followed),
                "exactness": asdict(http_phases.check_exact(
                    backchat if name == "backchat" else baseline, followed)),
            }
            for name, followed in runs.items()
        }

    results["visibility"] = timed("event visibility", results, visibility)

    def costs() -> dict[str, Any]:
        message = f"cost [demo tokens={sizes.cost_tokens} rate=50]"
        out: dict[str, Any] = {}
        variants = (
            ("baseline", baseline.ddb_url, "per_chunk", "fixed", False),
            ("backchat (local stack)", backchat.ddb_url, "merge", "long", False),
            ("backchat (deployed: 100 ms re-reads)", backchat.ddb_url, "merge", "long", True),
        )
        def one(name: str, url: str, flush: str, poll: str, deployed: bool) -> None:
            bench = inprocess.build(url, f"bench-cost-{len(name)}-{flush}-{deployed}", flush, deployed)
            out[name] = asdict(inprocess.run_cost(bench, name, message, poll))
            out[name]["idle"] = asdict(inprocess.idle_reads(bench))

        run_parallel([lambda v=v: one(*v) for v in variants])
        return out

    results["costs"] = timed("DynamoDB requests", results, costs)

    def flush_sweep() -> list[dict[str, Any]]:
        message = f"flush [demo tokens={sizes.sweep_tokens} rate=50]"
        points: dict[float, Any] = {}

        def one(interval: float) -> None:
            points[interval] = asdict(inprocess.flush_point(backchat.ddb_url, interval, message))

        run_parallel([lambda i=i: one(i) for i in FLUSH_INTERVALS])
        return [points[i] for i in FLUSH_INTERVALS]

    results["flush_sweep"] = timed("flush interval trade-off", results, flush_sweep)

    results["cancel_ms"] = timed("cancel -> stream closed", results, lambda: inprocess.cancel_to_close(
        inprocess.build(backchat.ddb_url, "bench-cancel"), sizes.cancel_runs, seed))

    results["first_event_sequential_ms"] = timed(
        "start -> first event", results, lambda: http_phases.first_event_sequential(
            backchat, sizes.first_event_runs, "first event [demo tokens=10 rate=50]"))

    results["resume"] = asdict(timed("resume exactness", results, lambda: http_phases.resume_exactness(
        backchat, sizes.resume_sessions, sizes.resume_reconnects,
        "resume [demo tokens=400 rate=100]", seed)))




def isolated(phase: Callable[[Sizes], Any], sizes: Sizes) -> Any:
    """Run a load phase's clients in a fresh interpreter.

    Hundreds of client threads share the process's GIL: run in this process after the
    earlier phases, 50 sessions at once showed first events 1.5-2.5x later than the same run
    from a fresh interpreter on the same machine minutes apart, a delay of the clients, not
    of the stack.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(phase, sizes).result()


def scale_curve(sizes: Sizes) -> list[dict[str, Any]]:
    """Every level on one stack, smallest first."""
    with running_stack("scale") as stack:
        return [_scale_point(stack, level, sizes) for level in sizes.scale_levels]


def concurrency_runs(sizes: Sizes) -> list[dict[str, Any]]:
    """The same burst of sessions, each time on an empty stack of its own."""
    points = []
    for index in range(sizes.concurrent_runs):
        with running_stack(f"concurrency-{index}") as stack:
            points.append(_scale_point(stack, sizes.concurrent_sessions, sizes))
    return points


def _scale_point(stack: Stack, sessions: int, sizes: Sizes) -> dict[str, Any]:
    point = http_phases.scale_level(
        stack, sessions, f"scale [demo tokens={sizes.scale_tokens} rate=50]")
    say(f"  {sessions} sessions: {point.events} events in {point.seconds:.1f} s, "
        f"{point.errors} errors, lost {point.exactness.lost}, "
        f"duplicated {point.exactness.duplicated}, first event median "
        f"{statistics.median(point.first_event_ms or [0]):.0f} ms, visibility median "
        f"{statistics.median(point.visibility_ms or [0]):.0f} ms")
    return asdict(point)


@contextlib.contextmanager
def running_stack(name: str, **env: str) -> Iterator[Stack]:
    """A local stack with the bench's environment (plus `env`), stopped afterwards."""
    stack = start_stack(name, {**STACK_ENV, **env})
    try:
        yield stack
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
