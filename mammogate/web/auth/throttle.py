"""Sign-in throttling, per account and per client address, kept in the database (so it holds
across restarts and across portal processes).

Each key (``user:<name>``, ``addr:<address>``) counts its recent failed sign-ins. Past its free
failures (``web.sign_in_free_failures`` for an account, ``web.sign_in_address_free_failures``
for an address, which many people may share behind one proxy), every further failure locks the
key for ``web.sign_in_delay_seconds`` doubled each time, at most
``web.sign_in_max_delay_seconds``. While a key is locked, a sign-in is refused without looking
at the password (HTTP 429 with Retry-After). A successful sign-in clears the account's count;
failures older than ``web.sign_in_failure_window_seconds`` are forgotten.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mammogate.config.settings import WebSettings
from mammogate.db import SignInThrottle


def keys_for(username: str, address: str) -> list[str]:
    return [f"user:{username.lower()[:128]}", f"addr:{address[:64]}"]


def wait_seconds(session: Session, keys: list[str], now: datetime) -> float:
    """How long until every one of ``keys`` is unlocked (0: none is locked)."""
    rows = session.scalars(select(SignInThrottle).where(SignInThrottle.key.in_(keys))).all()
    locked = [r.locked_until for r in rows if r.locked_until is not None and r.locked_until > now]
    return max(((until - now).total_seconds() for until in locked), default=0.0)


def record_failure(session: Session, keys: list[str], now: datetime, web: WebSettings) -> None:
    """Count a failure on each key (atomically: concurrent failures all count) and lock those
    past their free failures."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    window_start = now - timedelta(seconds=web.sign_in_failure_window_seconds)
    for key in keys:
        session.execute(
            insert(SignInThrottle).values(key=key, failures=0, last_failure_at=now).on_conflict_do_nothing(
                index_elements=["key"]
            )
        )
        # failures outside the window are forgotten before this one counts
        session.execute(
            update(SignInThrottle)
            .where(SignInThrottle.key == key, SignInThrottle.last_failure_at < window_start)
            .values(failures=0, locked_until=None)
        )
        session.execute(
            update(SignInThrottle).where(SignInThrottle.key == key)
            .values(failures=SignInThrottle.failures + 1, last_failure_at=now)
        )
        row = session.scalars(select(SignInThrottle).where(SignInThrottle.key == key)).one()
        free = web.sign_in_free_failures if key.startswith("user:") else web.sign_in_address_free_failures
        over = row.failures - free
        if over > 0:
            delay = min(web.sign_in_max_delay_seconds, web.sign_in_delay_seconds * 2 ** min(over - 1, 30))
            row.locked_until = now + timedelta(seconds=delay)


def clear(session: Session, key: str) -> None:
    row = session.get(SignInThrottle, key)
    if row is not None:
        session.delete(row)
