"""Time in the two forms backchat stores: ISO-8601 UTC strings and epoch milliseconds."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def iso_from_ms(epoch_ms: int) -> str:
    """Return an ISO-8601 UTC string with millisecond precision, e.g. 2026-01-02T03:04:05.678Z."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def now_iso() -> str:
    """Return the current time as an ISO-8601 UTC string with milliseconds."""
    return iso_from_ms(now_ms())


def ms_from_iso(text: str) -> int:
    """Return the epoch milliseconds of an ISO-8601 UTC string made by iso_from_ms."""
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def is_past(epoch_seconds: int | None) -> bool:
    """Return True for a moment (epoch seconds, as DynamoDB's TTL has it) now or past."""
    return epoch_seconds is not None and epoch_seconds * 1000 <= now_ms()
