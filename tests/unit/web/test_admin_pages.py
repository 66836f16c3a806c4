"""The admin pages: users and roles, sign-ins revoked, the audit log filtered and exported,
deliveries resubmitted, association history, and the health panel."""

from __future__ import annotations

import csv
import io

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.db import AssociationRecord, AuditEntry, Database, Delivery, User, WebSession, utcnow
from mammogate.web.admin.pages import session_handle
from tests.unit.web.portal_sample import PASSWORDS, csrf_token, sign_in


def _other(app: Litestar, username: str) -> TestClient[Litestar]:
    other = TestClient(app)
    other.__enter__()
    sign_in(other, username)
    return other


def _post(client: TestClient[Litestar], path: str, **data: str) -> object:
    return client.post(path, data={**data, "_csrf_token": csrf_token(client, "/admin")},
                       follow_redirects=False)


def test_a_new_role_takes_effect_at_once_and_admins_cannot_demote_themselves(
    client: TestClient[Litestar], app: Litestar, db: Database,
) -> None:
    vic = _other(app, "vic")
    try:
        assert vic.get("/admin", follow_redirects=False).status_code == 403
        sign_in(client, "ada")
        changed = _post(client, "/admin/users/vic/role", role="radiologist")
        assert changed.status_code == 303  # type: ignore[attr-defined]
        # vic's sign-in carried the old role: it has ended
        assert vic.get("/", follow_redirects=False).headers["location"].startswith("/login")
        sign_in(vic, "vic")
        assert '<span class="role">radiologist</span>' in vic.get("/").text  # signed in again, new role
        own = _post(client, "/admin/users/ada/role", role="viewer")
        assert own.status_code == 422 and "own role" in own.text  # type: ignore[attr-defined]
        bogus = _post(client, "/admin/users/vic/role", role="superuser")
        assert bogus.status_code == 422 and "is not a role" in bogus.text  # type: ignore[attr-defined]
    finally:
        vic.__exit__(None, None, None)
    with db.session() as session:
        assert session.scalar(select(User.role).where(User.username == "vic")) == "radiologist"
        audit = session.execute(select(AuditEntry.actor, AuditEntry.detail)
                                .where(AuditEntry.action == "user role changed")).all()
    assert audit == [("ada", "viewer -> radiologist")]


def test_disable_enable_and_password_reset_with_the_policy(
    client: TestClient[Litestar], app: Litestar,
) -> None:
    sign_in(client, "ada")
    assert _post(client, "/admin/users/rita/disable").status_code == 303  # type: ignore[attr-defined]
    with TestClient(app) as rita:
        page = rita.post("/login", data={"username": "rita", "password": PASSWORDS["rita"],
                                         "_csrf_token": csrf_token(rita)})
        assert page.status_code == 401
    assert _post(client, "/admin/users/rita/enable").status_code == 303  # type: ignore[attr-defined]
    short = _post(client, "/admin/users/rita/password", password="short")
    assert short.status_code == 422 and "at least 12 characters" in short.text  # type: ignore[attr-defined]
    assert _post(client, "/admin/users/rita/password",
                 password="a brand new passphrase").status_code == 303  # type: ignore[attr-defined]
    with TestClient(app) as rita:
        ok = rita.post("/login", data={"username": "rita", "password": "a brand new passphrase",
                                       "_csrf_token": csrf_token(rita)}, follow_redirects=False)
        assert ok.status_code == 303
    assert _post(client, "/admin/users/nobody/disable").status_code == 404  # type: ignore[attr-defined]
    assert _post(client, "/admin/users/ada/disable").status_code == 422  # type: ignore[attr-defined]


def test_sign_ins_are_listed_by_a_digest_and_revoking_one_signs_that_browser_out(
    client: TestClient[Litestar], app: Litestar, db: Database,
) -> None:
    vic = _other(app, "vic")
    try:
        sign_in(client, "ada")
        page = client.get("/admin/sessions").text
        with db.session() as session:
            raw = session.scalars(select(WebSession.id).join(User).where(User.username == "vic")).one()
        assert raw not in page  # the cookie's key never shows
        handle = session_handle(raw)
        assert f'data-handle="{handle}"' in page
        assert _post(client, f"/admin/sessions/{handle}/revoke").status_code == 303  # type: ignore[attr-defined]
        assert vic.get("/", follow_redirects=False).status_code in (302, 303)
        assert _post(client, f"/admin/sessions/{handle}/revoke").status_code == 404  # type: ignore[attr-defined]
    finally:
        vic.__exit__(None, None, None)


def test_the_audit_log_filters_and_exports_what_it_shows(client: TestClient[Litestar], db: Database) -> None:
    with db.session() as session:
        for k in range(3):
            session.add(AuditEntry(at=utcnow(), actor="cli", action="user created", target=f"u{k}",
                                   detail="=cmd|' /C calc'!A0" if k == 0 else "role=viewer"))
    sign_in(client, "ada")
    page = client.get("/admin/audit?action=user+created&q=u1").text
    assert page.count('class="audit-row"') == 1 and "u1" in page
    assert 'href="/admin/audit.csv?action=user+created&amp;q=u1"' in page
    exported = client.get("/admin/audit.csv?action=user+created")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["target"] for r in rows) == ["ada", "rita", "u0", "u1", "u2", "vic"]  # the fixture made 3
    assert next(r for r in rows if r["target"] == "u0")["detail"].startswith("'=")
    assert client.get("/admin/audit?from=yesterday").status_code == 422
    with db.session() as session:
        assert session.scalar(select(AuditEntry.detail).where(AuditEntry.action == "audit log exported")) == (
            "action=user+created")


def test_dead_deliveries_raise_the_health_banner_and_are_resubmitted_as_pending(
    client: TestClient[Litestar], db: Database, study: str,
) -> None:
    sign_in(client, "ada")
    page = client.get("/admin/deliveries?state=dead").text
    assert "failed for good (dead)" in page and 'data-delivery="' in page
    assert "association rejected by PACS" in page
    assert _post(client, "/admin/deliveries/resubmit").status_code == 303  # type: ignore[attr-defined]
    with db.session() as session:
        assert session.scalars(select(Delivery.state)).all() == ["pending"]
    assert "failed for good" not in client.get("/admin").text
    again = _post(client, "/admin/deliveries/resubmit")
    assert again.status_code == 422 and "No dead delivery" in again.text  # type: ignore[attr-defined]
    assert client.get("/admin/deliveries?state=lost").status_code == 422


def test_association_history_shows_who_called_and_why_a_call_was_refused(
    client: TestClient[Litestar], db: Database,
) -> None:
    with db.session() as session:
        session.add(AssociationRecord(requested_at=utcnow(), calling_ae_title="ROGUE", called_ae_title="MAMMOGATE",
                                      address="10.0.0.9", port=40000, accepted=False, outcome="rejected",
                                      reason="calling AE title ROGUE is not a known peer"))
        session.add(AssociationRecord(requested_at=utcnow(), calling_ae_title="MODALITY", called_ae_title="MAMMOGATE",
                                      address="10.0.0.2", port=40001, accepted=True, outcome="released",
                                      instances_stored=4, security="TLSv1.3"))
    sign_in(client, "ada")
    everything = client.get("/admin/associations").text
    assert "ROGUE" in everything and "MODALITY" in everything and "TLSv1.3" in everything
    rejected = client.get("/admin/associations?rejected=true").text
    assert "not a known peer" in rejected and "MODALITY" not in rejected


def test_a_delivery_id_beyond_any_database_is_no_delivery_not_a_crash(client: TestClient[Litestar]) -> None:
    # found by the schemathesis fuzzing: SQLite cannot even compare an integer this large
    sign_in(client, "ada")
    token = csrf_token(client, "/admin")
    response = client.post("/api/admin/deliveries/resubmit", json={"ids": [2**70]},
                           headers={"x-csrftoken": client.cookies.get("mammogate_csrf") or token})
    assert response.status_code == 404 and "no delivery" in response.text
