"""Sign-in, sign-out, the anonymous redirect, roles, CSRF and local accounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.config.settings import load_settings
from mammogate.db import AuditEntry, Database, User, WebSession
from mammogate.web import create_app, create_local_user, verify_local_user
from mammogate.web.auth.users import requires_role, safe_next
from tests.unit.passwords import CHEAP_ARGON2, ProductionArgon2
from tests.unit.web.portal_sample import PASSWORDS, STUDY_UID, csrf_token, sign_in

DISCLAIMER = "Research and decision-support tool — not a diagnostic device, not for clinical use."


@pytest.mark.parametrize("path", ["/", f"/studies/{STUDY_UID}", "/admin", "/?page=2"])
def test_anonymous_visitor_is_redirected_to_login_with_next(
    client: TestClient[Litestar], path: str
) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/login?next=")
    followed = client.get(location)
    assert followed.status_code == 200
    assert f'name="next" value="{path}"' in followed.text


def test_anonymous_api_call_gets_401_json(client: TestClient[Litestar]) -> None:
    response = client.get("/api/studies")
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_healthz_static_and_login_are_public(client: TestClient[Litestar]) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert set(health["storage"]) == {"accepting_images", "reason", "spool_free_bytes"}
    assert client.get("/static/portal.css").status_code == 200
    login = client.get("/login")
    assert login.status_code == 200
    assert DISCLAIMER in login.text


@pytest.mark.parametrize("username", ["rita", "nobody"])
def test_wrong_password_or_unknown_user_is_refused_without_session(
    client: TestClient[Litestar], db: Database, username: str
) -> None:
    response = client.post(
        "/login",
        data={"username": username, "password": "wrong", "_csrf_token": csrf_token(client)},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "Invalid user name or password." in response.text
    assert "mammogate_session" not in client.cookies
    assert client.get("/", follow_redirects=False).status_code == 303
    with db.session() as session:
        entry = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert entry is not None
        assert (entry.action, entry.actor) == ("sign-in failed", username)
        assert "wrong" not in entry.detail


def test_right_password_signs_in_and_is_audited(client: TestClient[Litestar], db: Database) -> None:
    sign_in(client, "rita")
    assert client.get("/", follow_redirects=False).status_code == 200
    with db.session() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).all()
        assert [(e.action, e.actor) for e in entries[:2]] == [
            ("history viewed", "rita"), ("sign-in", "rita")]
        user = session.scalars(select(User).where(User.username == "rita")).one()
        assert user.last_login_at is not None


def test_sign_in_goes_to_the_local_next_path(client: TestClient[Litestar]) -> None:
    response = client.post(
        "/login",
        data={
            "username": "vic",
            "password": PASSWORDS["vic"],
            "next": "/?page=1",
            "_csrf_token": csrf_token(client),
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/?page=1"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "\t//evil.example",
    ],
)
def test_open_redirect_next_is_ignored(client: TestClient[Litestar], target: str) -> None:
    response = client.post(
        "/login",
        data={
            "username": "vic",
            "password": PASSWORDS["vic"],
            "next": target,
            "_csrf_token": csrf_token(client),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    login_page = client.get("/login", params={"next": target})
    assert 'name="next" value="/"' in login_page.text


def test_safe_next_keeps_local_paths_only() -> None:
    assert safe_next("/studies/1.2.3?x=1") == "/studies/1.2.3?x=1"
    for bad in ("https://evil", "//evil", "/\\evil", "evil", "", None, "/\r\nX: y"):
        assert safe_next(bad) == "/"


def test_login_post_without_csrf_token_is_refused(client: TestClient[Litestar]) -> None:
    client.get("/login")
    response = client.post(
        "/login", data={"username": "ada", "password": PASSWORDS["ada"]}, follow_redirects=False
    )
    assert response.status_code == 403
    assert "security token" in response.text
    assert "mammogate_session" not in client.cookies


def test_logout_without_csrf_token_is_refused_and_keeps_session(
    client: TestClient[Litestar],
) -> None:
    sign_in(client, "ada")
    response = client.post("/logout", follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200


def test_logout_ends_the_session(client: TestClient[Litestar], db: Database) -> None:
    sign_in(client, "ada")
    response = client.post(
        "/logout", data={"_csrf_token": csrf_token(client, "/")}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303
    with db.session() as session:
        actions = session.scalars(select(AuditEntry.action)).all()
        assert "sign-out" in actions


def test_a_copied_session_cookie_is_worthless_after_sign_out(
    client: TestClient[Litestar], app: Litestar, db: Database
) -> None:
    sign_in(client, "ada")
    stolen = dict(client.cookies)
    with TestClient(app=app) as other:
        other.cookies.update(stolen)
        assert other.get("/", follow_redirects=False).status_code == 200  # the copy works...
        client.post("/logout", data={"_csrf_token": csrf_token(client, "/")})
        assert other.get("/", follow_redirects=False).status_code == 303  # ...until sign-out
    with db.session() as session:
        (sign_in_row,) = session.scalars(select(WebSession)).all()
        assert sign_in_row.revoked_at is not None


def test_signing_in_again_ends_the_earlier_sign_in(
    client: TestClient[Litestar], app: Litestar, db: Database
) -> None:
    sign_in(client, "ada")
    earlier = dict(client.cookies)
    sign_in(client, "vic")  # the same browser, another account
    with TestClient(app=app) as other:
        other.cookies.update(earlier)
        assert other.get("/", follow_redirects=False).status_code == 303
    with db.session() as session:
        rows = session.scalars(select(WebSession).order_by(WebSession.created_at)).all()
        assert [r.revoked_at is not None for r in rows] == [True, False]


def test_user_names_are_bounded_and_printable(db: Database) -> None:
    with pytest.raises(ValueError, match="at most 128 characters"):
        create_local_user(db, "x" * 129, "viewer", "long enough pw")
    with pytest.raises(ValueError, match="no control characters"):
        create_local_user(db, "eve\nadmin signed in", "viewer", "long enough pw")


def test_viewer_cannot_open_admin(client: TestClient[Litestar]) -> None:
    sign_in(client, "vic")
    response = client.get("/admin")
    assert response.status_code == 403
    assert "admin" in response.text and "viewer" in response.text
    # not a word of the user list (a bare "ada" can occur in the page's random CSRF token)
    assert 'id="users"' not in response.text and "<td>ada</td>" not in response.text


def test_radiologist_cannot_open_admin(client: TestClient[Litestar]) -> None:
    sign_in(client, "rita")
    assert client.get("/admin").status_code == 403


def test_admin_opens_admin_user_list(client: TestClient[Litestar]) -> None:
    sign_in(client, "ada")
    response = client.get("/admin")
    assert response.status_code == 200
    for username in ("ada", "rita", "vic"):
        assert f"<td>{username}</td>" in response.text
    assert "$argon2" not in response.text


def test_requires_role_rejects_unknown_roles() -> None:
    with pytest.raises(ValueError, match="superuser"):
        requires_role("superuser")


def test_disabled_user_loses_the_session(client: TestClient[Litestar], db: Database) -> None:
    sign_in(client, "rita")
    with db.session() as session:
        session.scalars(select(User).where(User.username == "rita")).one().disabled = True
    assert client.get("/", follow_redirects=False).status_code == 303


def test_session_cookie_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    settings = load_settings(
        None, node={"data_dir": str(tmp_path / "secure")}, web={"secure_cookies": True}
    )
    with TestClient(create_app(settings, db), base_url="https://testserver.local") as client:
        response = client.post(
            "/login",
            data={
                "username": "ada",
                "password": PASSWORDS["ada"],
                "_csrf_token": csrf_token(client),
            },
            follow_redirects=False,
        )
        cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
        session_cookie = next(c for c in cookies if c.startswith("mammogate_session="))
        lowered = session_cookie.lower()
        assert "httponly" in lowered and "samesite=lax" in lowered and "secure" in lowered


def test_create_local_user_refuses_bad_input(db: Database) -> None:
    with pytest.raises(ValueError, match="role"):
        create_local_user(db, "eve", "root", "pw")
    with pytest.raises(ValueError, match="already exists"):
        create_local_user(db, "ada", "viewer", "a long enough passphrase")
    with pytest.raises(ValueError, match="password: at least 12 characters"):
        create_local_user(db, "eve", "viewer", "")
    with pytest.raises(ValueError, match="username"):
        create_local_user(db, "  ", "viewer", "pw")


def test_create_local_user_stores_an_argon2_hash_that_verifies(db: Database) -> None:
    user = create_local_user(db, "eve", "radiologist", "s3cret phrase")
    assert user.role == "radiologist"
    with db.session() as session:
        stored = session.scalars(select(User).where(User.username == "eve")).one()
        assert stored.password_hash and stored.password_hash.startswith("$argon2")
        assert "s3cret" not in stored.password_hash
        verified = verify_local_user(session, "eve", "s3cret phrase")
        assert verified is not None and verified.username == "eve"
        assert verify_local_user(session, "eve", "wrong") is None
        assert verify_local_user(session, "nobody", "s3cret phrase") is None


def test_the_node_hashes_at_argon2_cffis_defaults_the_rfc_9106_low_memory_profile(
    cheap_argon2: ProductionArgon2,
) -> None:
    # The unit tests hash at argon2's lowest cost (tests/unit/conftest.py); the node does not.
    production = cheap_argon2.hasher
    assert extract_parameters(production.hash("a long enough passphrase")) == RFC_9106_LOW_MEMORY
    assert (production.time_cost, production.memory_cost, production.parallelism) == (3, 65536, 4)
    # an unknown user costs what a known one does
    assert extract_parameters(cheap_argon2.dummy_hash) == RFC_9106_LOW_MEMORY
    # a hash at the tests' cost would be renewed at its first sign-in
    assert production.check_needs_rehash(CHEAP_ARGON2.hash("a long enough passphrase"))


def test_a_hash_with_outdated_parameters_is_renewed_at_sign_in_and_then_kept(
    db: Database, cheap_argon2: ProductionArgon2
) -> None:
    with db.session() as session:
        ada = session.scalars(select(User).where(User.username == "ada")).one()
        ada.password_hash = cheap_argon2.hasher.hash(PASSWORDS["ada"])  # not this run's parameters
    with db.session() as session:
        assert verify_local_user(session, "ada", PASSWORDS["ada"]) is not None
    with db.session() as session:
        renewed = session.scalars(select(User.password_hash).where(User.username == "ada")).one()
    assert renewed is not None
    assert extract_parameters(renewed) == extract_parameters(CHEAP_ARGON2.hash("x"))
    with db.session() as session:
        assert verify_local_user(session, "ada", PASSWORDS["ada"]) is not None
    with db.session() as session:  # at the current parameters: left as it is
        assert session.scalars(select(User.password_hash).where(User.username == "ada")).one() == renewed
