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
    ConflictError,
    CORSConfig,
    ForbiddenError,
    NotFoundError,
    Rate,
    Response,
    TooManyRequestsError,
    UnauthorizedError,
    UnprocessableEntityError,
)

from chalicelib import errors, telemetry
from chalicelib.dynamo import route_deadline
from chalicelib.settings import Settings
from chalicelib.wiring import Components, build_components

# JSON lines on Lambda, readable lines elsewhere; every line of a run names its session.
telemetry.configure_logging()
app = Chalice(app_name="backchat")
app.log.setLevel(logging.INFO)


class PayloadTooLargeError(ChaliceViewError):
    STATUS_CODE = 413


class ServiceUnavailableError(ChaliceViewError):
    STATUS_CODE = 503


# The one place where the project's errors become HTTP statuses. Looked up along the error's
# class hierarchy, so a new subclass (StoreThrottled of StoreUnavailable, say) is covered.
HTTP_ERRORS: dict[type[errors.BackchatError], type[ChaliceViewError]] = {
    errors.InvalidRequest: BadRequestError,
    errors.PayloadTooLarge: PayloadTooLargeError,
    errors.NotAuthenticated: UnauthorizedError,
    errors.Forbidden: ForbiddenError,
    errors.SessionNotFound: NotFoundError,
    errors.ConversationNotFound: NotFoundError,
    errors.ConversationBusy: ConflictError,
    errors.IdempotencyConflict: UnprocessableEntityError,
    errors.TooManyRunningSessions: TooManyRequestsError,
    errors.DispatchFailed: ServiceUnavailableError,
    errors.StoreUnavailable: ServiceUnavailableError,
}
UNEXPECTED = "The server could not answer because of an internal error; try again shortly."
# The share of the reaper function's remaining time the purge may take.
PURGE_SHARE = 0.8


def http_error(error: Exception) -> ChaliceViewError:
    """Return the HTTP error for any exception: by class hierarchy, else a 503 (never a 500)."""
    for cls in type(error).__mro__:
        if cls in HTTP_ERRORS:
            return HTTP_ERRORS[cls](str(error))
    return ServiceUnavailableError(UNEXPECTED)

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
    """Check where the request comes from, bound its store calls in time, and turn every
    exception into an error response (4xx, or 503; never 500)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            components = get_components()
            components.authenticator.check_origin(app.current_request.headers)
            with route_deadline(components.settings.store_route_budget):
                return view(*args, **kwargs)
        except ChaliceViewError:
            raise
        except errors.BackchatError as error:
            raise http_error(error) from error
        except Exception as error:
            app.log.exception("%s %s failed", app.current_request.method,
                              app.current_request.path)
            raise http_error(error) from error

    return wrapper


def owner() -> str:
    """Return the caller's owner id; raise NotAuthenticated (401) without valid credentials.

    Every owner route calls it first, so a request without credentials costs no store read.
    """
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


@app.route("/api/chat/conversations", methods=["GET"], **OWNER_ROUTE)
@http_errors
def list_conversations() -> dict[str, Any]:
    return get_components().conversations.list(owner(), app.current_request.query_params)


@app.route("/api/chat/conversations/{conversation_id}", methods=["GET"], **OWNER_ROUTE)
@http_errors
def get_conversation(conversation_id: str) -> dict[str, Any]:
    return get_components().conversations.get(owner(), conversation_id,
                                              app.current_request.query_params)


@app.route("/api/chat/conversations/{conversation_id}", methods=["PATCH"], **OWNER_ROUTE,
           content_types=BODY_TYPES)
@http_errors
def rename_conversation(conversation_id: str) -> dict[str, Any]:
    return get_components().conversations.rename(owner(), conversation_id,
                                                 app.current_request.raw_body)


@app.route("/api/chat/conversations/{conversation_id}", methods=["DELETE"], **OWNER_ROUTE)
@http_errors
def delete_conversation(conversation_id: str) -> Response:
    get_components().conversations.delete(owner(), conversation_id)
    return Response(body="", status_code=204)


@app.route("/api/models", methods=["GET"], **OWNER_ROUTE)
@http_errors
def list_models() -> dict[str, Any]:
    owner()
    components = get_components()
    return {"defaultModel": components.settings.default_model,
            "models": components.providers.choices()}


@app.route("/api/health", methods=["GET"], cors=CORS)
@http_errors
def health() -> dict[str, Any]:
    return get_components().service.health()


@app.lambda_function(name="orchestrator")
def orchestrator(event: dict[str, Any], context: Any) -> None:
    """Run one session; Lambda invokes this asynchronously with {"sessionId": ...}."""
    get_components().orchestrator.run(
        event["sessionId"], remaining_time=lambda: context.get_remaining_time_in_millis() / 1000)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="reaper")
def reaper(event: Any) -> None:
    """End running sessions whose orchestrator stopped renewing its lease; purge deleted
    conversations."""
    components = get_components()
    components.reaper.reap()
    # Most of what is left of the invocation goes to the purge; the rest is the margin to
    # log and return.
    left = event.context.get_remaining_time_in_millis() / 1000
    components.purger.purge(seconds=left * PURGE_SHARE)
