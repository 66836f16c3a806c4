"""API tokens: machines use the JSON API with the rights of the token's user, by Bearer token,
without CSRF (no cookie); revoked tokens and disabled users stop at once; only a digest is kept."""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.db import ApiToken, Database
from mammogate.web.auth.accounts import set_disabled
from tests.unit.web.portal_sample import csrf_token, sign_in


def _make(client: TestClient[Litestar], username: str, name: str = "dashboard") -> str:
    page = client.post("/admin/tokens", data={"name": name, "username": username,
                                              "_csrf_token": csrf_token(client, "/admin/tokens")})
    assert page.status_code == 200, page.text
    match = re.search(r'id="token-value">(mg_[A-Za-z0-9_-]+)<', page.text)
    assert match, "the new token is shown once"
    return match.group(1)


def test_a_token_gives_a_machine_its_users_rights_and_no_more(
    client: TestClient[Litestar], app: Litestar, db: Database, study: str,
) -> None:
    sign_in(client, "ada")
    viewer_token = _make(client, "vic")
    admin_token = _make(client, "ada", "ops script")
    assert viewer_token not in client.get("/admin/tokens").text  # never shown again
    with db.session() as session:
        stored = session.scalars(select(ApiToken.token_sha256)).all()
    assert viewer_token not in stored and len(stored) == 2

    with TestClient(app) as machine:  # no cookies at all
        bearer = {"Authorization": f"Bearer {viewer_token}"}
        listing = machine.get("/api/studies", headers=bearer)
        assert listing.status_code == 200 and listing.json()["total"] == 1
        assert machine.get("/api/admin/associations", headers=bearer).status_code == 403
        admin = {"Authorization": f"Bearer {admin_token}"}
        # a machine's POST needs no CSRF token: it carries no cookie a forger could ride on
        resubmitted = machine.post("/api/admin/deliveries/resubmit", json={"dead": True}, headers=admin)
        assert resubmitted.status_code == 202, resubmitted.text
        wrong = machine.get("/api/studies", headers={"Authorization": "Bearer mg_not-a-token"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
    with db.session() as session:
        assert all(t.last_used_at is not None for t in session.scalars(select(ApiToken)))


def test_revoking_a_token_or_disabling_its_user_stops_it_and_cookies_still_need_csrf(
    client: TestClient[Litestar], app: Litestar, db: Database,
) -> None:
    sign_in(client, "ada")
    token = _make(client, "rita")
    bearer = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as machine:
        assert machine.get("/api/studies", headers=bearer).status_code == 200
        set_disabled(db, "rita", True, actor="test")
        assert machine.get("/api/studies", headers=bearer).status_code == 401
        set_disabled(db, "rita", False, actor="test")
        assert machine.get("/api/studies", headers=bearer).status_code == 200
    with db.session() as session:
        token_id = session.scalars(select(ApiToken.id)).one()
    revoked = client.post(f"/admin/tokens/{token_id}/revoke",
                          data={"_csrf_token": csrf_token(client, "/admin/tokens")}, follow_redirects=False)
    assert revoked.status_code == 303
    with TestClient(app) as machine:
        assert machine.get("/api/studies", headers=bearer).status_code == 401
    # a browser (cookies) that adds a Bearer header still needs the CSRF token for a POST
    forged = client.post("/api/admin/deliveries/resubmit", json={"dead": True},
                         headers={"Authorization": f"Bearer {_make(client, 'ada', 'x')}"})
    assert forged.status_code == 403
    bad = client.post("/admin/tokens", data={"name": "", "username": "vic",
                                             "_csrf_token": csrf_token(client, "/admin/tokens")})
    assert bad.status_code == 422 and "name the token" in bad.text
