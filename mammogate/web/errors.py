"""The portal's error family and the one place that maps errors to HTTP responses.

Pages get an HTML page that says what went wrong; ``/api/`` paths get ``{"error", "status"}``
JSON; an anonymous visitor is sent to the sign-in page (or gets 401 on the API).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.response import Redirect, Template

log = logging.getLogger(__name__)


class PortalError(Exception):
    """Base of the errors a request handler may raise; ``status_code`` is its HTTP status."""

    status_code = 500
    title = "Something went wrong"


class NotFoundError(PortalError):
    status_code = 404
    title = "Not found"


class ForbiddenError(PortalError):
    status_code = 403
    title = "Not allowed"


class ConflictError(PortalError):
    status_code = 409
    title = "Conflict"


class InvalidInputError(PortalError):
    status_code = 422
    title = "Invalid input"


_HTTP_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid input",
}


MAX_NEXT_LENGTH = 2048  # characters of a return path carried through sign-in


def _is_api(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def _error_response(
    request: Request[Any, Any, Any], status_code: int, title: str, message: str
) -> Response[Any]:
    if _is_api(request):
        return Response(
            {"error": message, "status": status_code},
            status_code=status_code,
            media_type=MediaType.JSON,
        )
    return Template(
        template_name="errors/error.html",
        context={"status_code": status_code, "title": title, "message": message},
        status_code=status_code,
    )


def handle_portal_error(request: Request[Any, Any, Any], exc: PortalError) -> Response[Any]:
    return _error_response(request, exc.status_code, exc.title, str(exc) or exc.title)


def handle_not_authorized(
    request: Request[Any, Any, Any], exc: NotAuthorizedException
) -> Response[Any]:
    if str(request.headers.get("authorization") or "").lower().startswith("bearer "):
        # a machine with an API token: say what is wrong with the token
        return _error_response(request, 401, "Sign-in required", str(exc.detail))
    if _is_api(request):
        return _error_response(request, 401, "Sign-in required", "sign in to use the API")
    if request.method != "GET":  # e.g. signing out after the session expired: nowhere to return
        return Redirect("/login", status_code=303)
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if len(target) > MAX_NEXT_LENGTH:  # a page no one links to: start from the history
        return Redirect("/login", status_code=303)
    return Redirect(f"/login?next={quote(target, safe='')}", status_code=303)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status_code = exc.status_code
    if status_code >= 500:
        log.error("request to %s failed: %s", request.url.path, exc.detail)
        return _error_response(
            request,
            status_code,
            "Something went wrong",
            "The portal could not answer this request.",
        )
    title = _HTTP_TITLES.get(status_code, "Request refused")
    message = exc.detail or title
    if status_code == 403 and "csrf" in message.lower():
        message = (
            "The form's security token is missing or has expired. Reload the page and try again."
        )
    elif status_code == 404 and message == "Not Found":
        message = f"There is no page at {request.url.path}."
    elif isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        problems = [
            f"{item.get('key')}: {item.get('message')}"
            for item in exc.extra
            if isinstance(item, dict) and item.get("key")
        ]
        if problems:  # which parameter, and what it must be
            message = "; ".join(problems)
    return _error_response(request, status_code, title, message)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if "\x00" in request.url.path:  # the static files' path check meets a NUL
        return _error_response(request, 400, "Bad request", "A path cannot hold a NUL character.")
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return _error_response(
        request, 500, "Something went wrong", "The portal could not answer this request."
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    PortalError: handle_portal_error,
    NotAuthorizedException: handle_not_authorized,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
