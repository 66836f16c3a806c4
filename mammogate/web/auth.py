"""Local accounts (argon2), the session user, sign-in / sign-out and the role guards."""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from litestar import Controller, Request, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mammogate.config.settings import WebSettings
from mammogate.db import AuditEntry, Database, User, WebSession, utcnow
from mammogate.web import throttle
from mammogate.web.errors import MAX_NEXT_LENGTH, ForbiddenError, NotFoundError
from mammogate.web.formatting import role_label
from mammogate.web.http import read
from mammogate.web.i18n import N_, gettext, ngettext
from mammogate.web.oidc import PENDING_KEY, OidcClient, OidcError, OidcIdentity, callback_uri

log = logging.getLogger(__name__)

ROLES = ("admin", "radiologist", "viewer")
LOGIN_FAILED = N_("Invalid user name or password.")  # translated where shown
THROTTLED = N_("Too many failed sign-ins: try again in %(seconds)s s.")

_hasher = PasswordHasher()
# Verified against when the user does not exist, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("mammogate: no such user")


@dataclass(frozen=True)
class PortalUser:
    """The signed-in user, as request handlers and templates see it."""

    id: int
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def create_local_user(db: Database, username: str, role: str, password: str) -> User:
    """Add a local account with an argon2 hash of ``password``.

    Raises:
        ValueError: the role is not one of admin, radiologist, viewer; the user name is empty
            or taken; the password is empty.
    """
    username = username.strip()
    if not username:
        raise ValueError("username: must not be empty")
    if len(username) > 128 or _has_control_characters(username):
        raise ValueError("username: at most 128 characters, no control characters")
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not a role; use one of {', '.join(ROLES)}")
    check_password_policy(password, username)
    password_hash = hash_password(password)
    try:
        with db.session() as session:
            if session.scalar(select(User.id).where(User.username == username)) is not None:
                raise ValueError(f"username: a user called {username!r} already exists")
            user = User(
                username=username,
                role=role,
                password_hash=password_hash,
                created_at=utcnow(),
            )
            session.add(user)
            session.add(
                AuditEntry(
                    at=utcnow(),
                    actor="cli",
                    action="user created",
                    target=username,
                    detail=f"role={role}",
                )
            )
    except IntegrityError as exc:
        raise ValueError(f"username: a user called {username!r} already exists") from exc
    log.info("created local user %s with role %s", username, role)
    return user


MIN_PASSWORD_LENGTH = 12
# the most common passwords and the obvious ones for this system (a breached-password list
# cannot be downloaded here; length does most of the work)
_COMMON = {"password", "passw0rd", "123456", "12345678", "123456789", "1234567890",
           "qwerty", "azerty", "letmein", "welcome", "admin", "administrator", "mammogate",
           "radiology", "radiologist", "mammography", "changeme", "secret", "iloveyou"}


def check_password_policy(password: str, username: str = "") -> None:
    """Refuse a password that is easy to guess, with the rule it breaks (ValueError)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(gettext("password: at least %(minimum)d characters (a passphrase of a few "
                                 "words is best); this one has %(length)d")
                         % {"minimum": MIN_PASSWORD_LENGTH, "length": len(password)})
    lowered = password.lower()
    if len(set(lowered)) < 4:
        raise ValueError(gettext("password: uses fewer than 4 different characters"))
    if username and username.strip().lower() in lowered:
        raise ValueError(gettext("password: must not contain the user name"))
    stripped = lowered.strip("0123456789!?.-_ ")
    if lowered in _COMMON or stripped in _COMMON:
        raise ValueError(gettext("password: one of the most common passwords"))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_local_password(session: Session, username: str, password: str) -> User | None:
    """The enabled local user whose password this is, else None (same cost either way).
    Reads only: safe in a read-only transaction."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None or user.disabled or not user.password_hash:
        _verify(_DUMMY_HASH, password)
        return None
    if not _verify(user.password_hash, password):
        return None
    return user


def _rehash_if_needed(user: User, password: str) -> None:
    if user.password_hash and _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)


def verify_local_user(session: Session, username: str, password: str) -> User | None:
    """``check_local_password``, and the hash renewed when its parameters are outdated (the
    session must be a writing one)."""
    user = check_local_password(session, username, password)
    if user is not None:
        _rehash_if_needed(user, password)
    return user


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if len(target) > MAX_NEXT_LENGTH:
        return "/"
    if "\\" in target or _has_control_characters(target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _has_control_characters(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _end_sign_in(db_session: Session, request: Request[Any, Any, Any]) -> None:
    """Revoke the request's sign-in row (a copy of its cookie is then worthless) and clear
    the session."""
    session_id = request.session.get("sid") if request.session else None
    if isinstance(session_id, str):
        sign_in = db_session.get(WebSession, session_id)
        if sign_in is not None and sign_in.revoked_at is None:
            sign_in.revoked_at = utcnow()
    request.clear_session()


def user_of(connection: ASGIConnection[Any, Any, Any, Any]) -> PortalUser | None:
    user = connection.scope.get("user")
    return user if isinstance(user, PortalUser) else None


def make_user_loader(
    db: Database, max_age_seconds: int
) -> Callable[[dict[str, Any], ASGIConnection[Any, Any, Any, Any]], Any]:
    """The SessionAuth hook: the session's user, re-read from the database on every request."""

    def load(session_data: dict[str, Any]) -> PortalUser | None:
        user_id = session_data.get("user_id")
        signed_in_at = session_data.get("signed_in_at")
        session_id = session_data.get("sid")
        if not isinstance(user_id, int) or not isinstance(signed_in_at, int | float):
            return None
        if not isinstance(session_id, str) or time.time() - signed_in_at > max_age_seconds:
            return None
        with db.read_session() as session:
            sign_in = session.get(WebSession, session_id)
            if sign_in is None or sign_in.revoked_at is not None or sign_in.user_id != user_id:
                return None
            user = session.get(User, user_id)
            if user is None or user.disabled:
                return None
            return PortalUser(id=user.id, username=user.username, role=user.role)

    async def retrieve_user(
        session_data: dict[str, Any], _connection: ASGIConnection[Any, Any, Any, Any]
    ) -> PortalUser | None:
        return await anyio.to_thread.run_sync(load, session_data)

    return retrieve_user


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def requires_role(*roles: str) -> Guard:
    """A guard that lets through only signed-in users with one of ``roles``."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"roles: {sorted(unknown)} are not roles; use {', '.join(ROLES)}")

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        user = user_of(connection)
        if user is None or user.role not in roles:
            raise ForbiddenError(
                ngettext("This page is for the %(roles)s role; you are signed in as %(role)s.",
                         "This page is for the %(roles)s roles; you are signed in as %(role)s.",
                         len(roles))
                % {"roles": " / ".join(role_label(r) for r in roles),
                   "role": role_label(user.role) if user else gettext("nobody")}
            )

    return guard


any_role = requires_role(*ROLES)
radiologist_or_admin = requires_role("admin", "radiologist")
admin_only = requires_role("admin")


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
    writing.add(AuditEntry(at=utcnow(), actor=user.username, action="sign-in",
                           detail="" if method == "password" else method))
    _end_sign_in(writing, request)  # signing in over another sign-in ends that one
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
        writing.add(AuditEntry(at=utcnow(), actor="oidc", action="user created", target=name,
                               detail=f"role={identity.role} from the provider"))
        log.info("created single sign-on user %s with role %s", name, identity.role)
    elif user.disabled:
        raise OidcError("This account is disabled on this node: ask an administrator.", 403)
    elif user.role != identity.role:
        writing.add(AuditEntry(at=utcnow(), actor="oidc", action="role changed", target=user.username,
                               detail=f"{user.role} -> {identity.role} from the provider"))
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
                writing.add(AuditEntry(at=utcnow(), actor="", action="sign-in failed",
                                       detail=f"oidc from {address[:64]}: {str(exc)[:200]}"))
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
                writing.add(AuditEntry(
                    at=now, actor=username, action="sign-in throttled", detail=f"from {address[:64]}",
                ))
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
                writing.add(AuditEntry(at=now, actor=username, action="sign-in failed", detail=f"from {address[:64]}"))
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
            _rehash_if_needed(user, data.password)
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
                writing.add(AuditEntry(at=utcnow(), actor=user.username, action="sign-out"))
            _end_sign_in(writing, request)
        return Redirect("/login", status_code=303)
