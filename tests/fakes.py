"""Fakes for unit tests: a scripted provider and a recording dispatcher."""
from __future__ import annotations

import threading
from typing import Iterator, Sequence

from chalicelib.dispatch import Dispatcher
from chalicelib.errors import DispatchFailed
from chalicelib.providers.base import ModelRequest, Provider, ProviderStream, StreamItem


class ScriptedStream(ProviderStream):
    """Yields a fixed list of items (an Exception item is raised), with an optional pause."""

    def __init__(self, items: Sequence[StreamItem | Exception], pause: float = 0.0) -> None:
        self._items = items
        self._pause = pause
        self.closed = threading.Event()
        self.yielded = 0

    def __iter__(self) -> Iterator[StreamItem]:
        for item in self._items:
            if self.closed.wait(self._pause) if self._pause else self.closed.is_set():
                return
            if isinstance(item, Exception):
                raise item
            self.yielded += 1
            yield item

    def close(self) -> None:
        self.closed.set()


class ScriptedProvider(Provider):
    """Plays one script per model call, in order, and records the requests."""

    def __init__(self, *scripts: Sequence[StreamItem | Exception], pause: float = 0.0) -> None:
        self._scripts = list(scripts)
        self._pause = pause
        self.requests: list[ModelRequest] = []
        self.streams: list[ScriptedStream] = []

    def stream(self, request: ModelRequest) -> ScriptedStream:
        self.requests.append(request)
        script = self._scripts[min(len(self.requests), len(self._scripts)) - 1]
        stream = ScriptedStream(script, self._pause)
        self.streams.append(stream)
        return stream


class RecordingDispatcher(Dispatcher):
    """Remembers what it was asked to dispatch; can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.dispatched: list[str] = []
        self._fail = fail

    def dispatch(self, session_id: str) -> None:
        if self._fail:
            raise DispatchFailed("the test dispatcher refuses")
        self.dispatched.append(session_id)
