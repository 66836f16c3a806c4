"""Local accounts (argon2) and the password policy, the session user and the role guards."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mammogate.db import Database, User, WebSession, audit, utcnow
from mammogate.web.errors import MAX_NEXT_LENGTH, ForbiddenError
from mammogate.web.formatting import role_label
from mammogate.web.i18n import N_, gettext, ngettext

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
            audit(session, actor="cli", action="user created", target=username, detail=f"role={role}")
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


def rehash_if_needed(user: User, password: str) -> None:
    if user.password_hash and _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)


def verify_local_user(session: Session, username: str, password: str) -> User | None:
    """``check_local_password``, and the hash renewed when its parameters are outdated (the
    session must be a writing one)."""
    user = check_local_password(session, username, password)
    if user is not None:
        rehash_if_needed(user, password)
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


def end_sign_in(db_session: Session, request: Request[Any, Any, Any]) -> None:
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
