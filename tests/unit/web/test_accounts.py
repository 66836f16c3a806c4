"""Local accounts an admin manages: the password policy, disable/enable, role, reset; each
audited, and each that takes rights away ends the user's sign-ins at once."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.db import AuditEntry, Database, User
from mammogate.web.auth.accounts import list_accounts, reset_password, set_disabled, set_role
from mammogate.web.auth.users import check_password_policy, create_local_user
from tests.unit.web.portal_sample import sign_in


@pytest.mark.parametrize(("password", "rule"), [
    ("abc", "at least 12 characters"),
    ("aaaaaaaaaaaaaaaa", "fewer than 4 different characters"),
    ("my name is hannah!", "must not contain the user name"),
    ("administrator123", "one of the most common passwords"),
    ("Mammography2024!", "one of the most common passwords"),
])
def test_the_password_policy_names_the_rule_broken(password: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        check_password_policy(password, "hannah")


def test_a_good_passphrase_passes() -> None:
    check_password_policy("correct horse battery staple", "hannah")


def test_accounts_are_listed_and_a_weak_password_is_refused_at_creation(db: Database) -> None:
    with pytest.raises(ValueError, match="at least 12 characters"):
        create_local_user(db, "eve", "viewer", "abc")
    with db.read_session() as session:
        accounts = {a.username: a for a in list_accounts(session)}
    assert {"ada", "rita", "vic"} <= set(accounts) and "eve" not in accounts
    assert accounts["ada"].role == "admin" and accounts["ada"].local and not accounts["ada"].disabled


def _audit(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_disabling_ends_the_sign_in_at_once_and_enabling_lets_the_user_back(
    client: TestClient[Litestar], db: Database
) -> None:
    sign_in(client, "vic")
    assert client.get("/", follow_redirects=False).status_code == 200
    assert set_disabled(db, "vic", True, actor="cli:test") == 1
    gone = client.get("/", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    with pytest.raises(AssertionError):
        sign_in(client, "vic")  # a disabled account cannot sign in
    (audited,) = _audit(db, "user disabled")
    assert audited.actor == "cli:test" and audited.target == "vic"
    set_disabled(db, "vic", False, actor="cli:test")
    sign_in(client, "vic")
    assert client.get("/", follow_redirects=False).status_code == 200


def test_a_new_role_or_password_ends_the_sign_ins(client: TestClient[Litestar], db: Database) -> None:
    sign_in(client, "rita")
    assert set_role(db, "rita", "viewer", actor="cli:test") == 1
    assert client.get("/", follow_redirects=False).status_code == 303
    with db.read_session() as session:
        assert session.scalars(select(User.role).where(User.username == "rita")).one() == "viewer"
    assert [e.detail for e in _audit(db, "user role changed")] == ["radiologist -> viewer"]
    with pytest.raises(ValueError, match="role"):
        set_role(db, "rita", "root", actor="cli:test")
    with pytest.raises(ValueError, match="at least 12"):
        reset_password(db, "rita", "short", actor="cli:test")
    reset_password(db, "rita", "a brand new passphrase", actor="cli:test")
    with pytest.raises(AssertionError):
        sign_in(client, "rita")  # the old password no longer works
    with pytest.raises(LookupError, match="no user 'nobody'"):
        set_disabled(db, "nobody", True, actor="cli:test")
