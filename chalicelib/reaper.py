"""The reaper ends sessions whose orchestrator stopped answering (crash, timeout, kill)."""
from __future__ import annotations

import logging
import threading

from chalicelib import clock
from chalicelib.errors import LeaseLost
from chalicelib.records import DELTA, ERROR, EventRecord, RunEnding
from chalicelib.store import Fence, SessionStore

logger = logging.getLogger(__name__)

STOPPED_RESPONDING = "The run stopped responding and was ended. Try sending the message again."


class Reaper:
    """Finds running sessions with an expired lease and ends them as error."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    def reap(self) -> list[str]:
        """End every session whose lease has expired; return their ids."""
        ended = []
        for session_id in self._store.expired_runs():
            try:
                if self._end(session_id):
                    ended.append(session_id)
            except Exception:
                # One session that cannot be ended must not keep the others running.
                logger.exception("session %s: the reaper could not end it", session_id)
        return ended

    def _end(self, session_id: str) -> bool:
        session = self._store.get(session_id)
        if session is None or not session.is_running:
            return False
        answer = self._written_answer(session_id)
        terminal = EventRecord(session_id=session_id, seq=session.last_seq + 1,
                               event_type=ERROR, created_at=clock.now_iso(),
                               content=STOPPED_RESPONDING)
        ending = RunEnding(status=ERROR, terminal_event=terminal, answer=answer,
                           usage=session.usage, error=STOPPED_RESPONDING)
        try:
            self._store.finish(session_id, Fence.expired(), [], ending)
        except LeaseLost:
            return False  # the run renewed its lease or ended meanwhile
        logger.warning("session %s: lease expired; ended as error by the reaper", session_id)
        return True

    def _written_answer(self, session_id: str) -> str:
        """Return the concatenated deltas: the dead attempt never wrote its answer."""
        parts, after = [], 0
        while True:
            page = self._store.events_after(session_id, after, 1000)
            parts += [e.content or "" for e in page.events if e.event_type == DELTA]
            if not page.has_more:
                return "".join(parts)
            after = page.events[-1].seq


class LocalReaperLoop:
    """Runs the reaper every few seconds in a daemon thread (the local stack has no scheduler)."""

    def __init__(self, reaper: Reaper, interval: float) -> None:
        self._reaper = reaper
        self._interval = interval
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="backchat-reaper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._reaper.reap()
            except Exception:
                logger.exception("the local reaper failed; it tries again")
