"""Managing local accounts: list, disable and enable, change role, reset the password. Each
change is audited with who made it, and disabling, a new role or a new password ends the
user's portal sign-ins at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mammogate.db import Database, User, WebSession, audit, utcnow
from mammogate.web.auth.users import ROLES, check_password_policy, hash_password
from mammogate.web.i18n import gettext as _


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    disabled: bool
    local: bool  # has a local password (else signs in by OpenID Connect only)
    created_at: datetime
    last_login_at: datetime | None


def list_accounts(session: Session) -> list[Account]:
    return [Account(u.username, u.role, u.disabled, bool(u.password_hash), u.created_at,
                    u.last_login_at)
            for u in session.scalars(select(User).order_by(User.username))]


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.strip()).with_for_update())
    if user is None:
        raise LookupError(_("no user %(name)r (`mammogate user list` shows them)") % {"name": username})
    return user


def _end_sign_ins(session: Session, user: User) -> int:
    ended = session.execute(
        update(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
        .values(revoked_at=utcnow()))
    return int(getattr(ended, "rowcount", 0) or 0)


def set_disabled(db: Database, username: str, disabled: bool, *, actor: str) -> int:
    """Disable (or enable) an account; disabling ends its sign-ins. Returns how many."""
    with db.session() as session:
        user = _user(session, username)
        user.disabled = disabled
        ended = _end_sign_ins(session, user) if disabled else 0
        audit(session, actor, "user disabled" if disabled else "user enabled", user.username,
               f"{ended} sign-in(s) ended" if disabled else "")
    return ended


def set_role(db: Database, username: str, role: str, *, actor: str) -> int:
    """Give an account another role (its sign-ins end: they carry the old one)."""
    if role not in ROLES:
        raise ValueError(_("role: %(role)r is not a role; use one of %(roles)s")
                         % {"role": role, "roles": ", ".join(ROLES)})
    with db.session() as session:
        user = _user(session, username)
        before, user.role = user.role, role
        ended = _end_sign_ins(session, user)
        audit(session, actor, "user role changed", user.username, f"{before} -> {role}")
    return ended


def reset_password(db: Database, username: str, password: str, *, actor: str) -> int:
    """A new local password (the policy applies); the account's sign-ins end."""
    check_password_policy(password, username)
    password_hash = hash_password(password)
    with db.session() as session:
        user = _user(session, username)
        user.password_hash = password_hash
        ended = _end_sign_ins(session, user)
        audit(session, actor, "user password reset", user.username, f"{ended} sign-in(s) ended")
    return ended
