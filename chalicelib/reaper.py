"""The reaper ends sessions whose orchestrator stopped answering (crash, timeout, kill).

It reads the sharded lease index, oldest first in each shard. A session it cannot end (a
write DynamoDB refuses for that session's own sake, not throttling) is tried once more with
the simplest ending there is (no answer to read or write back), then moved back in its queue
with a growing delay, and after MAX_REAP_FAILURES tries set aside with an error in the log:
one bad session can never keep the reaper from ending the others. Throttling counts against
no session: the next pass simply tries again.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from chalicelib import clock, telemetry
from chalicelib.dynamo import StoreThrottled
from chalicelib.errors import LeaseLost
from chalicelib.records import DELTA, ERROR, EventRecord, RunEnding, SessionRecord
from chalicelib.store import Fence, SessionStore

logger = logging.getLogger(__name__)

STOPPED_RESPONDING = "The run stopped responding and was ended. Try sending the message again."
# How long one pass may go on ending runs (the reaper's Lambda runs a minute at most).
PASS_SECONDS = 30.0
MAX_REAP_FAILURES = 5
# Seconds before a session the reaper could not end is tried again, doubling up to an hour.
FIRST_RETRY_SECONDS = 60
MAX_RETRY_SECONDS = 3600


class Reaper:
    """Finds running sessions with an expired lease and ends them as error."""

    def __init__(self, store: SessionStore, metrics: telemetry.Metrics | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._metrics = metrics
        self._monotonic = monotonic

    def reap(self, seconds: float = PASS_SECONDS) -> list[str]:
        """End the sessions whose lease has expired, batch after batch for up to `seconds`
        (when many runs died at once, each pass ends as many as it can); return their ids."""
        deadline = self._monotonic() + seconds
        ended: list[str] = []
        while self._monotonic() < deadline:
            batch = [sid for sid in self._store.expired_runs() if sid not in ended]
            ended_now = [sid for sid in batch if self._end_logged(sid)]
            ended += ended_now
            if not ended_now:
                break  # nothing (more) could be ended now: the next pass tries again
        if self._metrics is not None:
            self._metrics.runs_reaped(len(ended))
        return ended

    def _end_logged(self, session_id: str) -> bool:
        try:
            return self._end(session_id)
        except Exception:
            # One session that cannot be ended must not keep the others running.
            logger.exception("session %s: the reaper could not end it", session_id)
            return False

    def _end(self, session_id: str) -> bool:
        session = self._store.get(session_id)
        if session is None or not session.is_running:
            return False
        try:
            return self._finish(session, lambda: self._written_answer(session))
        except StoreThrottled:
            raise  # DynamoDB is busy, not this session's fault: the next pass tries again
        except Exception:
            logger.exception("session %s: the reaper's ending failed; trying a bare one",
                             session_id)
        try:
            return self._finish(session, lambda: "")
        except StoreThrottled:
            raise
        except Exception:
            # Refused for this session's own sake (not throttling): move it back in the
            # queue, and after MAX_REAP_FAILURES set it aside.
            logger.exception("session %s: the reaper could not end it", session_id)
            self._set_aside(session)
            return False

    def _finish(self, session: SessionRecord, answer: Callable[[], str]) -> bool:
        terminal = EventRecord(session_id=session.id, seq=session.last_seq + 1,
                               event_type=ERROR, created_at=clock.now_iso(),
                               content=STOPPED_RESPONDING)
        ending = RunEnding(status=ERROR, terminal_event=terminal, answer=answer(),
                           usage=session.usage, error=STOPPED_RESPONDING)
        try:
            self._store.finish(session, Fence.expired(), [], ending)
        except LeaseLost:
            return False  # the run renewed its lease or ended meanwhile
        logger.warning("session %s: lease expired; ended as error by the reaper", session.id)
        return True

    def _set_aside(self, session: SessionRecord) -> None:
        failures = session.reap_failures + 1
        if failures >= MAX_REAP_FAILURES:
            logger.error("session %s: set aside after %d failed endings; it stays running "
                         "until an operator ends it or it expires", session.id, failures)
            self._store.defer_reaping(session.id, failures, None)
            return
        delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (failures - 1))
        logger.error("session %s: could not be ended (%d of %d tries); next try in %d s",
                     session.id, failures, MAX_REAP_FAILURES, delay)
        self._store.defer_reaping(session.id, failures, clock.now_ms() + delay * 1000)

    def _written_answer(self, session: SessionRecord) -> str:
        """Return the concatenated deltas: the dead attempt never wrote its answer."""
        parts, after = [], 0
        while after < session.last_seq:
            page = self._store.events_after(session.id, after, 1000, session.last_seq)
            if not page.events:
                break
            parts += [e.content or "" for e in page.events if e.event_type == DELTA]
            after = page.events[-1].seq
        return "".join(parts)


class LocalHousekeeping:
    """Runs the reaper and the purge every few seconds in a daemon thread (the local stack
    has no scheduler)."""

    def __init__(self, chores: list[Callable[[], object]], interval: float) -> None:
        self._chores = chores
        self._interval = interval
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="backchat-housekeeping", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            for chore in self._chores:
                try:
                    chore()
                except Exception:
                    logger.exception("local housekeeping failed; it tries again")
