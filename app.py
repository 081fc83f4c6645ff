"""backchat's HTTP API and orchestrator entry point. Only wiring lives here."""
from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable

from chalice import (
    BadRequestError,
    Chalice,
    ChaliceViewError,
    CognitoUserPoolAuthorizer,
    CORSConfig,
    NotFoundError,
    Rate,
    Response,
    TooManyRequestsError,
    UnauthorizedError,
    UnprocessableEntityError,
)

from chalicelib import errors
from chalicelib.settings import Settings
from chalicelib.wiring import Components, build_components

app = Chalice(app_name="backchat")
app.log.setLevel(logging.INFO)


class PayloadTooLargeError(ChaliceViewError):
    STATUS_CODE = 413


class ServiceUnavailableError(ChaliceViewError):
    STATUS_CODE = 503


# The one place where the project's errors become HTTP statuses.
HTTP_ERRORS: dict[type[errors.BackchatError], type[ChaliceViewError]] = {
    errors.InvalidRequest: BadRequestError,
    errors.PayloadTooLarge: PayloadTooLargeError,
    errors.NotAuthenticated: UnauthorizedError,
    errors.SessionNotFound: NotFoundError,
    errors.IdempotencyConflict: UnprocessableEntityError,
    errors.TooManyRunningSessions: TooManyRequestsError,
    errors.DispatchFailed: ServiceUnavailableError,
    errors.StoreUnavailable: ServiceUnavailableError,
}

_components: Components | None = None
_components_lock = threading.Lock()


def get_components() -> Components:
    """Return the process's components, built on first use (once per container)."""
    global _components
    # `chalice local` serves requests on several threads; build one set, not one each.
    with _components_lock:
        if _components is None:
            _components = build_components(Settings.from_env())
        return _components


# Route decorators run at import, so what they need is read from the environment here.
_import_settings = Settings.from_env()
CORS = CORSConfig(
    allow_origin=_import_settings.cors_origin,
    allow_headers=["Content-Type", "Authorization", "X-Api-Key", "Idempotency-Key"],
    max_age=600,
)
AUTHORIZER = (
    CognitoUserPoolAuthorizer("backchat", provider_arns=[_import_settings.cognito_user_pool_arn])
    if _import_settings.auth_mode == "cognito"
    else None
)


def http_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's exceptions into Chalice's error responses."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except errors.BackchatError as error:
            chalice_error = HTTP_ERRORS.get(type(error))
            if chalice_error is None:
                raise
            raise chalice_error(str(error)) from error

    return wrapper


def owner() -> str:
    """Return the caller's owner id; raise NotAuthenticated (401) without valid credentials."""
    request = app.current_request
    return get_components().authenticator.owner(request.headers, request.context)


BODY_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded"]
# Routes that act for an owner: CORS, and the Cognito authorizer in cognito mode.
OWNER_ROUTE: dict[str, Any] = {"cors": CORS, "authorizer": AUTHORIZER}


@app.route("/api/chat/session", methods=["POST"], **OWNER_ROUTE, content_types=BODY_TYPES)
@http_errors
def start_session() -> Response:
    request = app.current_request
    body = get_components().service.start(owner(), request.raw_body,
                                           request.headers.get("idempotency-key"))
    return Response(body=body, status_code=202)


@app.route("/api/chat/session/{session_id}", methods=["GET"], **OWNER_ROUTE)
@http_errors
def get_session(session_id: str) -> dict[str, Any]:
    return get_components().service.get(owner(), session_id)


@app.route("/api/chat/session/{session_id}/events", methods=["GET"], **OWNER_ROUTE)
@http_errors
def session_events(session_id: str) -> dict[str, Any]:
    params = app.current_request.query_params
    return get_components().service.events(owner(), session_id, params)


@app.route("/api/chat/sessions", methods=["GET"], **OWNER_ROUTE)
@http_errors
def list_sessions() -> dict[str, Any]:
    return get_components().service.list(owner(), app.current_request.query_params)


@app.route("/api/chat/session/{session_id}/cancel", methods=["POST"], **OWNER_ROUTE,
           content_types=BODY_TYPES)
@http_errors
def cancel_session(session_id: str) -> Response:
    outcome = get_components().service.cancel(owner(), session_id)
    return Response(body=outcome.body, status_code=202 if outcome.accepted else 200)


@app.route("/api/health", methods=["GET"], cors=CORS)
@http_errors
def health() -> dict[str, Any]:
    return get_components().service.health()


@app.lambda_function(name="orchestrator")
def orchestrator(event: dict[str, Any], context: Any) -> None:
    """Run one session; Lambda invokes this asynchronously with {"sessionId": ...}."""
    get_components().orchestrator.run(event["sessionId"],
                                      remaining_time=lambda: context.get_remaining_time_in_millis() / 1000)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reaper")
def reaper(event: Any) -> None:
    """End running sessions whose orchestrator stopped renewing its lease."""
    get_components().reaper.reap()
