"""Small statistics helpers for the benchmark."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile (0-100) by the nearest-rank method; nan if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def created_ms(iso: str) -> float:
    """Return an event's createdAt (ISO-8601 UTC, milliseconds) as epoch milliseconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000
