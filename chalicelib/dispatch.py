"""Dispatchers hand a session to the orchestrator without waiting for the run."""
from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

from chalicelib.errors import DispatchFailed

logger = logging.getLogger(__name__)

# Run a session: its id, and a function that tells the seconds left before the deadline.
RunSession = Callable[[str, Optional[Callable[[], float]]], None]
# A Lambda invocation lasts at most 15 minutes; a local run gets the same.
RUN_SECONDS = 900.0
# Lambda runs an asynchronous invocation that raised twice more (after about 1 and 2
# minutes); a local run that raised is retried the same number of times, sooner: what
# makes a local run raise (the embedded DynamoDB overloaded) passes in seconds.
LOCAL_RETRY_DELAYS = (2.0, 10.0)


class Dispatcher(ABC):
    """Starts the run of a stored session somewhere else."""

    @abstractmethod
    def dispatch(self, session_id: str) -> None:
        """Hand the session over; raise DispatchFailed if it could not be handed over."""


class LambdaDispatcher(Dispatcher):
    """Deployed: an asynchronous invoke of the orchestrator function (InvocationType=Event)."""

    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._client = lambda_client
        self._function_name = function_name

    def dispatch(self, session_id: str) -> None:
        try:
            response = self._client.invoke(
                FunctionName=self._function_name,
                InvocationType="Event",
                Payload=json.dumps({"sessionId": session_id}).encode("utf-8"),
            )
        except Exception as error:  # any failure to hand over means the run never starts
            logger.error("session %s: async invoke of %s failed: %s",
                         session_id, self._function_name, error)
            raise DispatchFailed("The run could not be started; try again shortly") from error
        if response.get("StatusCode") != 202:
            logger.error("session %s: async invoke answered %s", session_id,
                         response.get("StatusCode"))
            raise DispatchFailed("The run could not be started; try again shortly")


class ThreadDispatcher(Dispatcher):
    """Local (`chalice local`): each run on a thread of its own in the server process, as
    Lambda gives each run an invocation of its own, with the same deadline as a Lambda run.

    At most `max_runs` at once (a high cap, like an account's Lambda concurrency); a start past
    it fails at once rather than waiting behind slow runs. A run that raises is delivered
    again, as Lambda retries an asynchronous invocation (the orchestrator makes a second
    delivery of a claimed or ended session a no-op), so a run whose claim met an overloaded
    store is not left to the reaper's claim timeout. Never use this in a deployed Lambda:
    the sandbox freezes once the response is sent.
    """

    def __init__(self, run_session: RunSession, max_runs: int,
                 run_seconds: float = RUN_SECONDS,
                 retry_delays: tuple[float, ...] = LOCAL_RETRY_DELAYS) -> None:
        self._run_session = run_session
        self._slots = threading.BoundedSemaphore(max_runs)
        self._run_seconds = run_seconds
        self._retry_delays = retry_delays
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def dispatch(self, session_id: str) -> None:
        with self._lock:
            if self._closing.is_set():
                raise DispatchFailed("The local server is shutting down")
            if not self._slots.acquire(blocking=False):
                raise DispatchFailed("Too many runs are going on this machine; try again shortly")
            thread = threading.Thread(target=self._run_logged, args=(session_id,),
                                      name=f"backchat-run-{session_id[:8]}", daemon=True)
            self._threads.add(thread)
            # Started under the lock: shutdown() must never join a thread not started yet.
            thread.start()

    def _run_logged(self, session_id: str) -> None:
        try:
            for delay in (*self._retry_delays, None):
                if self._delivered(session_id):
                    return
                if delay is None or self._closing.wait(delay):
                    logger.error("session %s: the background run failed; not delivered again",
                                 session_id)
                    return
                logger.warning("session %s: delivering the run again in %.0f s",
                               session_id, delay)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def _delivered(self, session_id: str) -> bool:
        """Run the session once, each delivery with a deadline of its own; False if it raised."""
        started = time.monotonic()
        try:
            self._run_session(session_id,
                              lambda: self._run_seconds - (time.monotonic() - started))
            return True
        except Exception:
            logger.exception("session %s: the background run crashed", session_id)
            return False

    def shutdown(self) -> None:
        """Refuse new runs and wait for the running ones (tests, benchmarks)."""
        with self._lock:
            self._closing.set()
            threads = list(self._threads)
        for thread in threads:
            thread.join()


class InlineDispatcher(Dispatcher):
    """Tests: run the session before returning, in the caller's thread.

    In a context of its own, as a run elsewhere would be: the start route's deadline for its
    store calls (chalicelib/dynamo.py) is not the run's.
    """

    def __init__(self, run_session: RunSession) -> None:
        self._run_session = run_session

    def dispatch(self, session_id: str) -> None:
        contextvars.Context().run(self._run_session, session_id, None)
