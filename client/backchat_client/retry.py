"""Which failed requests are worth another try, and how long to wait before it."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


def is_retryable_status(status: int) -> bool:
    """Return True for answers that may change by asking again: 408, 429 and every 5xx."""
    return status in (408, 429) or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """Try a request up to `attempts` times in a row, pausing with capped exponential backoff.

    The pause after the n-th failure in a row is `base_delay * 2**(n-1)`, at most `max_delay`,
    with ±20 % jitter so that many clients cut off together do not come back together. The
    defaults give up after about 45 s of failures.
    """

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def delay(self, failures: int, retry_after: float | None = None,
              jitter: Callable[[], float] = random.random) -> float:
        """Return the pause before the next try after `failures` failures in a row.

        A server's Retry-After (seconds) is honoured when it asks for longer, up to `max_delay`.
        """
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (failures - 1))
        backoff *= 0.8 + 0.4 * jitter()
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_delay))
        return backoff
