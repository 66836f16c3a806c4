"""The portal's one way into the audit log (``db.audit``): who did something, from the
request's signed-in user, and who looked at patient data. Writes that change the database add
their row to their own transaction with ``db.audit``; these helpers take a short transaction
of their own (the page itself was read in a read-only one)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection

from mammogate.db import Database, audit
from mammogate.web.auth.users import user_of


def actor_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The signed-in user's name, "" for nobody."""
    user = user_of(connection)
    return user.username if user else ""


def record_access(db: Database, request: Request[Any, Any, Any], action: str, target: str) -> None:
    """Who looked at patient data, and which (the detail is the path they asked for)."""
    record_action(db, request, action, target, request.url.path)


def record_action(db: Database, request: Request[Any, Any, Any], action: str, target: str = "",
                  detail: str = "") -> None:
    """An action of the request's user that changes no row of its own (an export, a purge's
    leftovers): one audit row in a transaction of its own."""
    with db.session() as writing:
        audit(writing, actor_of(request), action, target, detail)
