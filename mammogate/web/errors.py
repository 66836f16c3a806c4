"""The portal's error family and the one place that maps errors to HTTP responses.

Pages get an HTML page that says what went wrong; ``/api/`` paths get ``{"error", "status"}``
JSON; an anonymous visitor is sent to the sign-in page (or gets 401 on the API).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.response import Redirect, Template

from mammogate.db.admin import NotOnThisNode, RequestRefused
from mammogate.web.i18n import N_, activate, gettext, language_of

log = logging.getLogger(__name__)


class PortalError(Exception):
    """Base of the errors a request handler may raise; ``status_code`` is its HTTP status."""

    status_code = 500
    title = N_("Something went wrong")  # translated where it is shown


class NotFoundError(PortalError):
    status_code = 404
    title = N_("Not found")


class ForbiddenError(PortalError):
    status_code = 403
    title = N_("Not allowed")


class ConflictError(PortalError):
    status_code = 409
    title = N_("Conflict")


class InvalidInputError(PortalError):
    status_code = 422
    title = N_("Invalid input")


_HTTP_TITLES = {
    400: N_("Bad request"),
    401: N_("Sign-in required"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    405: N_("Method not allowed"),
    409: N_("Conflict"),
    422: N_("Invalid input"),
}
SOMETHING_WENT_WRONG = N_("Something went wrong")
COULD_NOT_ANSWER = N_("The portal could not answer this request.")


MAX_NEXT_LENGTH = 2048  # characters of a return path carried through sign-in


def _is_api(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def _status_phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""


def _in_page_language(request: Request[Any, Any, Any]) -> None:
    """An error raised before the language middleware (no such route) or after it (sign-in,
    CSRF) is handled out here: its page in the request's language all the same."""
    if not _is_api(request):
        activate(language_of(request.scope))


def _error_response(
    request: Request[Any, Any, Any], status_code: int, title: str, message: str
) -> Response[Any]:
    """``title`` is a catalog message (translated here); ``message`` is already in the
    request's language, or English when it comes from outside the portal."""
    if _is_api(request):
        return Response(
            {"error": message, "status": status_code},
            status_code=status_code,
            media_type=MediaType.JSON,
        )
    return Template(
        template_name="errors/error.html",
        context={"status_code": status_code, "title": gettext(title), "message": message},
        status_code=status_code,
    )


def handle_portal_error(request: Request[Any, Any, Any], exc: PortalError) -> Response[Any]:
    _in_page_language(request)
    return _error_response(request, exc.status_code, exc.title, str(exc) or gettext(exc.title))


def handle_not_authorized(
    request: Request[Any, Any, Any], exc: NotAuthorizedException
) -> Response[Any]:
    if str(request.headers.get("authorization") or "").lower().startswith("bearer "):
        # a machine with an API token: say what is wrong with the token
        return _error_response(request, 401, N_("Sign-in required"), str(exc.detail))
    if _is_api(request):
        return _error_response(request, 401, N_("Sign-in required"), "sign in to use the API")
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
    _in_page_language(request)
    if status_code >= 500:
        log.error("request to %s failed: %s", request.url.path, exc.detail)
        return _error_response(request, status_code, SOMETHING_WENT_WRONG, gettext(COULD_NOT_ANSWER))
    title = _HTTP_TITLES.get(status_code, N_("Request refused"))
    message = exc.detail or gettext(title)
    if status_code == 403 and "csrf" in message.lower():
        message = gettext(
            "The form's security token is missing or has expired. Reload the page and try again."
        )
    elif status_code == 404 and message == "Not Found":
        message = gettext("There is no page at %(path)s.") % {"path": request.url.path}
    elif message == _status_phrase(status_code):  # Litestar's default detail: say it in the page's language
        message = gettext(title)
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
    _in_page_language(request)
    if "\x00" in request.url.path:  # the static files' path check meets a NUL
        return _error_response(request, 400, N_("Bad request"),
                               gettext("A path cannot hold a NUL character."))
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return _error_response(request, 500, SOMETHING_WENT_WRONG, gettext(COULD_NOT_ANSWER))


def handle_refused(request: Request[Any, Any, Any], exc: RequestRefused) -> Response[Any]:
    """A request the database layer refused (re-analysis, resubmission, a connection test):
    404 for what is not on this node, 409 for what cannot be done now; its reason as given
    (English, like every message from outside the portal)."""
    _in_page_language(request)
    error = NotFoundError if isinstance(exc, NotOnThisNode) else ConflictError
    return _error_response(request, error.status_code, error.title, str(exc))


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    PortalError: handle_portal_error,
    RequestRefused: handle_refused,
    NotAuthorizedException: handle_not_authorized,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
