"""Sign-in (a local password, or OpenID Connect) and sign-out: the pages and the sign-in rows."""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammogate.config.settings import WebSettings
from mammogate.db import Database, User, WebSession, audit, utcnow
from mammogate.web.auth import throttle
from mammogate.web.auth.oidc import PENDING_KEY, OidcClient, OidcError, OidcIdentity, callback_uri
from mammogate.web.auth.users import (
    LOGIN_FAILED,
    THROTTLED,
    check_local_password,
    end_sign_in,
    rehash_if_needed,
    safe_next,
    user_of,
)
from mammogate.web.errors import NotFoundError
from mammogate.web.http import read
from mammogate.web.i18n import gettext

log = logging.getLogger(__name__)


def _sso_name(oidc: OidcClient | None) -> str:
    return oidc.settings.display_name if oidc is not None else ""


def _login_page(oidc: OidcClient | None, target: str, error: str = "", status_code: int = 200) -> Template:
    return Template("auth/login.html", status_code=status_code,
                    context={"next": target, "error": error, "sso_name": _sso_name(oidc)})


def _sign_in(writing: Session, request: Request[Any, Any, Any], user: User, *, method: str) -> str:
    """Record a sign-in of ``user`` (audit row, a new sign-in row; one the browser already
    had ends) and return the new sign-in's id for the session cookie."""
    session_id = secrets.token_hex(32)
    user.last_login_at = utcnow()
    audit(writing, actor=user.username, action="sign-in", detail="" if method == "password" else method)
    end_sign_in(writing, request)  # signing in over another sign-in ends that one
    writing.add(WebSession(id=session_id, user_id=user.id, created_at=utcnow()))
    return session_id


def _oidc_user(writing: Session, identity: OidcIdentity) -> User:
    """The account of the provider's user, made on first sign-in; its role follows the
    provider's on every sign-in. A disabled account stays out (OidcError 403)."""
    user = writing.scalar(select(User).where(User.oidc_subject == identity.subject))
    if user is None:
        name = identity.username
        taken = set(writing.scalars(select(User.username).where(User.username.like(f"{name}%"))))
        if name in taken:  # a local account (or another provider's user) has that name
            name = next(f"{identity.username} (sso {n})" for n in range(2, 10_000)
                        if f"{identity.username} (sso {n})" not in taken)
        user = User(username=name, role=identity.role, password_hash=None,
                    oidc_subject=identity.subject, created_at=utcnow())
        writing.add(user)
        writing.flush()
        audit(writing, actor="oidc", action="user created", target=name, detail=f"role={identity.role} from the provider")
        log.info("created single sign-on user %s with role %s", name, identity.role)
    elif user.disabled:
        raise OidcError("This account is disabled on this node: ask an administrator.", 403)
    elif user.role != identity.role:
        audit(writing, actor="oidc", action="role changed", target=user.username, detail=f"{user.role} -> {identity.role} from the provider")
        user.role = identity.role
    return user


@dataclass
class LoginForm:
    username: str = ""
    password: str = ""
    next: str = "/"


class AuthController(Controller):
    """Sign-in and sign-out. ``/login`` is the one page open to anonymous visitors."""

    @read("/login", sync_to_thread=False)
    def login_page(self, oidc: NamedDependency[OidcClient | None],
                   next_: Annotated[str, QueryParameter(name="next")] = "/") -> Template:
        return _login_page(oidc, safe_next(next_))

    @read("/login/oidc", sync_to_thread=True)
    def oidc_start(self, request: Request[Any, Any, Any], oidc: NamedDependency[OidcClient | None],
                   next_: Annotated[str, QueryParameter(name="next")] = "/") -> Template | Redirect:
        """Off to the OpenID provider (a link, not a form: the CSP's form-action stays 'self')."""
        target = safe_next(next_)
        if oidc is None:
            raise NotFoundError(gettext("Single sign-on is not configured on this node (oidc.enabled)."))
        try:
            url, pending = oidc.start(callback_uri(oidc.settings, str(request.base_url)), target)
        except OidcError as exc:
            return _login_page(oidc, target, str(exc), exc.status_code)
        data = dict(request.session or {})
        data[PENDING_KEY] = pending
        request.set_session(data)
        return Redirect(url, status_code=303)

    @read("/login/oidc/callback", sync_to_thread=True)
    def oidc_callback(self, request: Request[Any, Any, Any], db: NamedDependency[Database],
                      oidc: NamedDependency[OidcClient | None]) -> Template | Redirect:
        """The provider's answer: the code exchanged, the ID token validated, the user signed in
        with the role the provider gives."""
        if oidc is None:
            raise NotFoundError(gettext("Single sign-on is not configured on this node (oidc.enabled)."))
        session = dict(request.session or {})
        pending = session.pop(PENDING_KEY, None)
        target = safe_next(pending.get("next")) if isinstance(pending, dict) else "/"
        address = request.client.host if request.client else "unknown"
        try:
            identity = oidc.finish(dict(request.query_params), pending)
            with db.session() as writing:
                user = _oidc_user(writing, identity)
                session_id = _sign_in(writing, request, user, method="oidc")
                username, user_id = user.username, user.id
        except OidcError as exc:
            with db.session() as writing:
                audit(writing, actor="", action="sign-in failed", detail=f"oidc from {address[:64]}: {str(exc)[:200]}")
            log.info("single sign-on failed: %s", str(exc)[:200])
            request.set_session(session) if session else request.clear_session()
            return _login_page(oidc, target, str(exc), exc.status_code)
        log.info("user %s signed in through the OpenID provider", username)
        request.set_session({"sid": session_id, "user_id": user_id, "signed_in_at": int(time.time())})
        return Redirect(target, status_code=303)

    @post("/login", sync_to_thread=True)
    def login(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[Session],
        db: NamedDependency[Database],
        web_settings: NamedDependency[WebSettings],
        oidc: NamedDependency[OidcClient | None],
        data: URLEncodedBody[LoginForm],
    ) -> Template | Redirect:
        """Checks (throttle, password) in the request's read-only transaction, outside the
        write lock; then one short write transaction records the outcome."""
        target = safe_next(data.next)
        # A NUL cannot be in a name or a password (and PostgreSQL text cannot hold one).
        username = data.username.replace("\x00", "").strip()[:128]
        address = request.client.host if request.client else "unknown"
        keys = throttle.keys_for(username, address)
        now = utcnow()
        wait = throttle.wait_seconds(db_session, keys, now)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            with db.session() as writing:
                audit(writing, actor=username, action="sign-in throttled", detail=f"from {address[:64]}", at=now)
            log.warning("sign-in throttled for %d s", retry)
            return Template(
                "auth/login.html",
                context={"sso_name": _sso_name(oidc), "next": target, "error": gettext(THROTTLED) % {"seconds": retry}, "username": username},
                status_code=429,
                headers={"Retry-After": str(retry)},
            )
        valid = bool(username) and "\x00" not in data.username + data.password
        checked = check_local_password(db_session, username, data.password) if valid else None
        if checked is None:
            with db.session() as writing:
                audit(writing, actor=username, action="sign-in failed", detail=f"from {address[:64]}", at=now)
                throttle.record_failure(writing, keys, now, web_settings)
            log.info("sign-in failed")
            request.clear_session()
            return Template(
                "auth/login.html",
                context={"sso_name": _sso_name(oidc), "next": target, "error": gettext(LOGIN_FAILED), "username": username},
                status_code=401,
            )
        with db.session() as writing:
            user = writing.get(User, checked.id)
            if user is None or user.disabled:  # disabled between the check and now
                request.clear_session()
                return Template(
                    "auth/login.html", context={"sso_name": _sso_name(oidc), "next": target, "error": gettext(LOGIN_FAILED), "username": username},
                    status_code=401,
                )
            rehash_if_needed(user, data.password)
            throttle.clear(writing, keys[0])
            session_id = _sign_in(writing, request, user, method="password")
        log.info("user %s signed in", checked.username)
        request.set_session(
            {"sid": session_id, "user_id": checked.id, "signed_in_at": int(time.time())}
        )
        return Redirect(target, status_code=303)

    @post("/logout", sync_to_thread=True)
    def logout(
        self, request: Request[Any, Any, Any], db: NamedDependency[Database]
    ) -> Redirect:
        user = user_of(request)
        with db.session() as writing:
            if user is not None:
                audit(writing, actor=user.username, action="sign-out")
            end_sign_in(writing, request)
        return Redirect("/login", status_code=303)
