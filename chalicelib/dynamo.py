"""DynamoDB faults as backchat's errors, and the one retry loop every store call goes through.

botocore's own retries are off (chalicelib/models.py): a store call is tried here, at most
`tries` times, with jittered exponential backoff, and never past a deadline. A route's calls
share one deadline per request (`route_deadline`), so a slow, throttled or unreachable store
answers 503 well inside API Gateway's 29 s; a run's writes have their own budget.
"""
from __future__ import annotations

import contextvars
import logging
import random
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.errors import StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONDITION_FAILED = "ConditionalCheckFailedException"
# Error codes worth another try: DynamoDB throttles or is briefly unable to serve. Cancellation
# reasons of a transaction use their own spellings (no "Exception" suffix).
TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ProvisionedThroughputExceeded",
    "ThrottlingException", "Throttling", "ThrottlingError", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "ServiceUnavailable",
    "TransactionConflictException", "TransactionConflict", "TransactionInProgressException",
})


class StoreThrottled(StoreUnavailable):
    """DynamoDB refused a request for a transient reason; another try may succeed."""


class ConditionFailed(Exception):
    """A conditional write was refused; `reasons` has the transaction's reason codes by item."""

    def __init__(self, reasons: tuple[str | None, ...] = ()) -> None:
        super().__init__("condition failed")
        self.reasons = reasons


def response_code(error: BaseException | None) -> str | None:
    """Return a botocore error's code, or None (connection errors carry no response)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    return (response.get("Error") or {}).get("Code")


def _cause(error: PynamoDBException) -> BaseException | None:
    return error.cause if isinstance(error.cause, BaseException) else None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn PynamoDB's and botocore's errors into ConditionFailed, StoreThrottled, StoreUnavailable.

    A dropped or timed-out connection (no response at all) counts as transient: the request may
    not have reached DynamoDB, and another try is what a client would do.
    """
    try:
        yield
    except DoesNotExist:
        raise
    except TransactWriteError as error:
        reasons = tuple(r.code if r is not None else None for r in error.cancellation_reasons)
        if "ConditionalCheckFailed" in reasons:
            raise ConditionFailed(reasons) from error
        code = response_code(_cause(error))
        if set(reasons) & TRANSIENT_CODES or code in TRANSIENT_CODES or code is None:
            raise StoreThrottled(f"DynamoDB did not apply the transaction ({code or 'no answer'})"
                                 ) from error
        raise StoreUnavailable(f"DynamoDB refused the transaction: {code}") from error
    except PynamoDBException as error:
        _raise_translated(_cause(error) or error, error)
    except (BotoCoreError, ClientError) as error:
        _raise_translated(error, error)


def _raise_translated(cause: BaseException, error: BaseException) -> None:
    code = response_code(cause)
    if code == CONDITION_FAILED:
        raise ConditionFailed() from error
    if code is None or code in TRANSIENT_CODES:
        raise StoreThrottled(f"DynamoDB is not answering ({code or type(cause).__name__})"
                             ) from error
    logger.warning("DynamoDB request failed: %s", code)
    raise StoreUnavailable(f"DynamoDB refused the request ({code})") from error


# The deadline of the current request's store calls (monotonic seconds), set by the routes.
_route_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "backchat_route_deadline", default=None)


@contextmanager
def route_deadline(seconds: float) -> Iterator[None]:
    """Bound every store call (retries included) made in this block to `seconds` from now."""
    token = _route_deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _route_deadline.reset(token)


def extend_route_deadline(seconds: float) -> Callable[[], None]:
    """Move the current request's deadline `seconds` later (a long-poll's wait); return an undo."""
    current = _route_deadline.get()
    if current is None:
        return lambda: None
    token = _route_deadline.set(current + seconds)
    return lambda: _route_deadline.reset(token)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and for how long a store call is tried."""

    tries: int
    # Seconds from the first try after which no new try starts; None: only the route deadline.
    budget: float | None = None
    max_backoff: float = 2.0
    # Told of every throttled try, and whether another follows (metrics).
    on_throttle: Callable[[bool], None] | None = None


def quick_retries(on_throttle: Callable[[bool], None] | None = None) -> RetryPolicy:
    """Return the policy of reads and route writes: a few quick tries within the route's
    deadline."""
    return RetryPolicy(tries=3, max_backoff=0.5, on_throttle=on_throttle)


def call_with_retries(operation: Callable[[], T], policy: RetryPolicy, what: str,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Run a store call, retrying StoreThrottled within the policy and the route's deadline."""
    started = time.monotonic()
    limits = [d for d in (_route_deadline.get(),
                          started + policy.budget if policy.budget is not None else None)
              if d is not None]
    deadline = min(limits) if limits else None
    if deadline is not None and started >= deadline:
        raise StoreThrottled(f"{what}: the request ran out of time for the store")
    attempt = 1
    while True:
        try:
            return operation()
        except StoreThrottled as error:
            pause = backoff(attempt, policy.max_backoff)
            out_of_time = deadline is not None and time.monotonic() + pause >= deadline
            gives_up = attempt >= policy.tries or out_of_time
            if policy.on_throttle is not None:
                policy.on_throttle(not gives_up)
            if gives_up:
                logger.warning("%s: gave up after %d tries: %s", what, attempt, error)
                raise
            logger.info("%s: retry %d after %s", what, attempt, error)
            sleep(pause)
            attempt += 1


def backoff(attempt: int, ceiling: float = 2.0) -> float:
    """Return the pause before retry `attempt`: exponential with full jitter, at most `ceiling`."""
    return random.uniform(0, min(ceiling, 0.05 * 2 ** attempt))


def batch_get(model: Any, keys: Sequence[Any], consistent: bool, policy: RetryPolicy,
              sleep: Callable[[float], None] = time.sleep) -> list[Any]:
    """Return the items of `model` with these keys (hash keys, or (hash, range) pairs).

    Unlike PynamoDB's batch_get, keys DynamoDB leaves unprocessed (throttling) are asked for
    again with backoff, within the policy, instead of at once and without end.
    """
    found: list[Any] = []
    has_range = model._range_key_attribute() is not None
    serialized = []
    for key in dict.fromkeys(keys):
        hash_value, range_value = model._serialize_keys(*(key if has_range else (key,)))
        entry = {model._hash_key_attribute().attr_name: hash_value}
        if has_range:
            entry[model._range_key_attribute().attr_name] = range_value
        serialized.append(entry)
    connection = model._get_connection()
    table = model.Meta.table_name
    for start in range(0, len(serialized), 100):
        pending = serialized[start:start + 100]
        attempt = 1
        while pending:
            def page() -> Any:
                with translate_errors():
                    return connection.batch_get_item(pending, consistent_read=consistent)
            data = call_with_retries(page, policy, f"batch get from {table}", sleep)
            found += [model.from_raw_data(raw) for raw in data["Responses"].get(table, [])]
            pending = (data.get("UnprocessedKeys") or {}).get(table, {}).get("Keys") or []
            if pending:
                if attempt >= policy.tries:
                    raise StoreThrottled(f"DynamoDB left {len(pending)} keys of {table} unread")
                sleep(backoff(attempt, policy.max_backoff))
                attempt += 1
    return found


def transact_write(connection: Any, build: Callable[[TransactWrite], None], policy: RetryPolicy,
                   what: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """Apply one transaction, built by `build`, retrying transient failures.

    Every try sends the same items with one ClientRequestToken, so DynamoDB applies the
    transaction at most once even when an earlier try's answer was lost.
    """
    token = uuid.uuid4().hex

    def attempt() -> None:
        with translate_errors():
            with TransactWrite(connection=connection, client_request_token=token) as transaction:
                build(transaction)

    call_with_retries(attempt, policy, what, sleep)


def raw_key(key: dict[str, str] | None) -> dict[str, dict[str, str]] | None:
    """Return a key of string attributes (a list position) in DynamoDB's JSON form."""
    return None if key is None else {name: {"S": value} for name, value in key.items()}


def get_item(model: Any, *key: Any, consistent: bool = False) -> Any:
    """Return the model's item with this key, or None (errors translated)."""
    with translate_errors():
        try:
            return model.get(*key, consistent_read=consistent)
        except DoesNotExist:
            return None


def index_page(index: Any, hash_key: str, limit: int,
               start_key: dict[str, str] | None) -> tuple[list[Any], bool]:
    """Return up to `limit` keys from an index, newest (highest sort key) first, and whether
    more follow (one key past the page is read to know)."""
    with translate_errors():
        keys = list(index.query(hash_key, scan_index_forward=False, limit=limit + 1,
                                page_size=limit + 1, last_evaluated_key=raw_key(start_key)))
    return keys[:limit], len(keys) > limit
