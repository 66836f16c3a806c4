"""API tokens for machines: ``Authorization: Bearer mg_…`` gives the JSON API the rights of the
user the token belongs to, no more (a disabled user's tokens stop working with them).

- Only the token's SHA-256 is stored; the token itself is shown once, when an admin makes it.
- A request with a Bearer token is authenticated by the token alone (a cookie it also carries is
  ignored), and, carrying no cookie, needs no CSRF token: a browser cannot send an
  Authorization header cross-site without a CORS preflight, which this portal never grants.
- ``last_used_at`` is written at most once a minute per token, so a polling client does not
  take the database's write lock on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.authentication import AuthenticationResult
from litestar.middleware.csrf import CSRFMiddleware
from litestar.security.session_auth.middleware import SessionAuthMiddleware
from litestar.types import Receive, Scope, Send
from sqlalchemy import select

from mammogate.db import ApiToken, Database, User, audit, utcnow
from mammogate.web.auth.users import PortalUser
from mammogate.web.i18n import gettext as _

PREFIX = "mg_"
TOUCH_INTERVAL = timedelta(minutes=1)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def bearer_token(headers: Any) -> str | None:
    value = str(headers.get("authorization") or "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_token(db: Database, username: str, name: str, *, actor: str) -> str:
    """A new token for ``username`` (ValueError naming the problem); the only time it is seen."""
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError(_("name the token (1 to 64 characters), e.g. the machine that will use it"))
    token = PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username.strip()))
        if user is None:
            raise ValueError(_("there is no user %(name)r") % {"name": username})
        if user.disabled:
            raise ValueError(_("user %(name)r is disabled") % {"name": username})
        session.add(ApiToken(name=name, user_id=user.id, token_sha256=_digest(token), created_at=utcnow()))
        audit(session, actor=actor, action="api token created", target=user.username, detail=f"token {name!r}")
    return token


def revoke_token(db: Database, token_id: int, *, actor: str) -> bool:
    with db.session() as session:
        row = session.get(ApiToken, token_id) if 0 < token_id < 2**63 else None
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        owner = session.get(User, row.user_id)
        audit(session, actor=actor, action="api token revoked", target=owner.username if owner else "", detail=f"token {row.name!r}")
    return True


def user_for_token(db: Database, token: str) -> PortalUser | None:
    """The user a valid, unrevoked token of an enabled user stands for; None otherwise."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = _digest(token)
    with db.read_session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
        if row is None or row.revoked_at is not None:
            return None
        user = session.get(User, row.user_id)
        if user is None or user.disabled:
            return None
        found = PortalUser(id=user.id, username=user.username, role=user.role)
        stale = row.last_used_at is None or utcnow() - row.last_used_at > TOUCH_INTERVAL
        token_id = row.id
    if stale:
        with db.session() as writing:
            touched = writing.get(ApiToken, token_id)
            if touched is not None:
                touched.last_used_at = utcnow()
    return found


def token_auth_middleware(db: Database) -> type[SessionAuthMiddleware]:
    """The session-auth middleware, taught Bearer tokens."""

    class TokenOrSessionAuthMiddleware(SessionAuthMiddleware):
        async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
            token = bearer_token(connection.headers)
            if token is None:
                return await super().authenticate_request(connection)
            user = await anyio.to_thread.run_sync(user_for_token, db, token)
            if user is None:
                raise NotAuthorizedException("the API token is not valid (unknown, revoked, or its user disabled)")
            return AuthenticationResult(user=user, auth="token")

    return TokenOrSessionAuthMiddleware


class TokenAwareCSRFMiddleware(CSRFMiddleware):
    """CSRF protection for browsers; a request with a Bearer token and no cookie is a machine's
    and has no cross-site forgery to fear."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if bearer_token(headers) is not None and "cookie" not in headers:
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
