"""Sign-in throttling per account and per client address: a password guesser is slowed to a
crawl, the right password waits out the lock, and every refusal is audited."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.config.settings import Settings, load_settings
from mammogate.db import AuditEntry, Database, utcnow
from mammogate.web import create_app, create_local_user
from mammogate.web.auth import throttle
from tests.unit.databases import open_migrated
from tests.unit.web.portal_sample import PASSWORDS, csrf_token


@pytest.fixture
def fast_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Settings:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    return load_settings(
        None, node={"data_dir": str(tmp_path / "data")}, database={"url": database_url},
        web={"sign_in_delay_seconds": 0.5, "sign_in_max_delay_seconds": 1.0},
    )


@pytest.fixture
def fast_db(fast_settings: Settings, sqlite_template: Path) -> Iterator[Database]:
    database = open_migrated(fast_settings.database_url, sqlite_template)
    create_local_user(database, "ada", "admin", PASSWORDS["ada"])
    yield database
    database.dispose()


@pytest.fixture
def fast_client(fast_settings: Settings, fast_db: Database) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(fast_settings, fast_db)) as client:
        yield client


def _attempt(client: TestClient[Litestar], password: str, username: str = "ada"):  # type: ignore[no-untyped-def]
    return client.post(
        "/login",
        data={"username": username, "password": password, "next": "/", "_csrf_token": csrf_token(client)},
        follow_redirects=False,
    )


@pytest.mark.slow
def test_sixty_wrong_passwords_then_the_right_one_is_refused_until_the_lock_ends(
    fast_client: TestClient[Litestar], fast_db: Database
) -> None:
    codes = [_attempt(fast_client, f"guess {n}").status_code for n in range(60)]
    assert codes[:5] == [401] * 5  # the free failures
    assert codes.count(429) >= 50  # then mostly refused without looking at the password
    # A guess that counts (401: the lock had run out) starts a fresh lock of up to 1 s; the
    # right password just after it must wait too. (Right after the sixtieth guess the lock may
    # be about to end on a loaded machine.)
    deadline = time.monotonic() + 10
    while _attempt(fast_client, "one more guess").status_code != 401:
        assert time.monotonic() < deadline, "the lock never ran out"
        time.sleep(0.05)
    locked = _attempt(fast_client, PASSWORDS["ada"])
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert "Too many failed sign-ins" in locked.text
    with fast_db.session() as session:
        actions = [a.action for a in session.scalars(select(AuditEntry))]
    assert actions.count("sign-in throttled") >= 50 and "sign-in" not in actions
    time.sleep(1.1)  # the lock (at most sign_in_max_delay_seconds) runs out
    assert _attempt(fast_client, PASSWORDS["ada"]).status_code == 303
    # a success clears the account: the next mistake is a plain failure again
    fast_client.post("/logout", data={"_csrf_token": csrf_token(fast_client, "/")})


def test_the_lock_doubles_up_to_the_maximum(fast_db: Database, fast_settings: Settings) -> None:
    web = fast_settings.web.model_copy(update={"sign_in_delay_seconds": 10.0, "sign_in_max_delay_seconds": 60.0})
    now = utcnow()
    keys = throttle.keys_for("Ada", "10.1.2.3")
    assert keys == ["user:ada", "addr:10.1.2.3"]  # names are not case-sensitive
    waits = []
    with fast_db.session() as session:
        for _ in range(web.sign_in_free_failures + 4):
            throttle.record_failure(session, keys[:1], now, web)
            waits.append(throttle.wait_seconds(session, keys[:1], now))
    assert waits == [0.0] * web.sign_in_free_failures + [10.0, 20.0, 40.0, 60.0]
    with fast_db.session() as session:  # other accounts and addresses are not locked
        assert throttle.wait_seconds(session, ["user:rita", "addr:10.1.2.4"], now) == 0.0


def test_one_address_trying_many_accounts_is_locked(fast_db: Database, fast_settings: Settings) -> None:
    web = fast_settings.web
    now = utcnow()
    with fast_db.session() as session:
        for number in range(web.sign_in_address_free_failures + 1):
            throttle.record_failure(session, throttle.keys_for(f"user{number}", "192.0.2.7"), now, web)
        assert throttle.wait_seconds(session, throttle.keys_for("newname", "192.0.2.7"), now) > 0
        assert throttle.wait_seconds(session, throttle.keys_for("newname", "192.0.2.8"), now) == 0


def test_old_failures_are_forgotten(fast_db: Database, fast_settings: Settings) -> None:
    web = fast_settings.web
    long_ago = utcnow() - timedelta(seconds=web.sign_in_failure_window_seconds + 10)
    keys = throttle.keys_for("ada", "127.0.0.1")
    with fast_db.session() as session:
        for _ in range(web.sign_in_free_failures):
            throttle.record_failure(session, keys, long_ago, web)
        throttle.record_failure(session, keys, utcnow(), web)
        assert throttle.wait_seconds(session, keys, utcnow()) == 0.0
