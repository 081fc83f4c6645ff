"""backchat's Python client: start chat runs, follow their events without losing one, cancel them.

    from backchat_client import Client

    client = Client("http://127.0.0.1:8000")
    started = client.start("what is 17*23?")
    print(client.answer(started["sessionId"]))
"""
from __future__ import annotations

from backchat_client.client import DEFAULT_API, TERMINAL_STATUSES, Client, Event, __version__
from backchat_client.errors import ApiError, BackchatError, ConnectionFailed, RunFailed
from backchat_client.retry import RetryPolicy

__all__ = [
    "DEFAULT_API",
    "TERMINAL_STATUSES",
    "ApiError",
    "BackchatError",
    "Client",
    "ConnectionFailed",
    "Event",
    "RetryPolicy",
    "RunFailed",
    "__version__",
]
