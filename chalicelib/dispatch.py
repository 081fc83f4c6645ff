"""Dispatchers hand a session to the orchestrator without waiting for the run."""
from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from chalicelib.errors import DispatchFailed

logger = logging.getLogger(__name__)

RunSession = Callable[[str], None]


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
    """Local (`chalice local`): a bounded pool of background threads in the server process.

    Never use this in a deployed Lambda: the sandbox freezes once the response is sent.
    """

    def __init__(self, run_session: RunSession, workers: int) -> None:
        self._run_session = run_session
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backchat-run")

    def dispatch(self, session_id: str) -> None:
        try:
            self._pool.submit(self._run_logged, session_id)
        except RuntimeError as error:  # the pool is shutting down with the server
            raise DispatchFailed("The local server is shutting down") from error

    def _run_logged(self, session_id: str) -> None:
        try:
            self._run_session(session_id)
        except Exception:
            logger.exception("session %s: the background run crashed", session_id)

    def shutdown(self) -> None:
        """Wait for the running sessions and stop the pool (tests, benchmarks)."""
        self._pool.shutdown(wait=True)


class InlineDispatcher(Dispatcher):
    """Tests: run the session before returning, in the caller's thread."""

    def __init__(self, run_session: RunSession) -> None:
        self._run_session = run_session

    def dispatch(self, session_id: str) -> None:
        self._run_session(session_id)
