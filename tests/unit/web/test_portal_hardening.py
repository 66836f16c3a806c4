"""What a hospital security review expects of every portal response and of odd input."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.db import AuditEntry, Database
from mammogate.web.app import SECURITY_HEADERS
from tests.unit.web.portal_sample import LEFT_CC, csrf_token, sign_in


def _assert_hardened(response_headers: object, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response_headers[name] == value, f"{what}: {name}"  # type: ignore[index]


def test_every_kind_of_response_carries_the_security_headers(
    client: TestClient[Litestar], study: str
) -> None:
    anonymous = {
        "redirect to sign-in": client.get("/", follow_redirects=False),
        "sign-in page": client.get("/login"),
        "static file": client.get("/static/portal.css"),
        "API without sign-in (401)": client.get("/api/studies"),
        "form without CSRF token (403)": client.post("/login", data={"username": "x"}),
    }
    sign_in(client, "vic")
    signed_in = {
        "history": client.get("/"),
        "unknown page (404)": client.get("/no/such/page"),
        "admin page for a viewer (403)": client.get("/admin/"),
        "bad parameter (400)": client.get("/?page=0"),
        "overlay image": client.get(f"/studies/{study}/images/{LEFT_CC}/overlay.png"),
    }
    for what, response in {**anonymous, **signed_in}.items():
        _assert_hardened(response.headers, f"{what} ({response.status_code})")
    assert anonymous["API without sign-in (401)"].status_code == 401
    assert signed_in["admin page for a viewer (403)"].status_code == 403


def test_a_bad_parameter_names_itself_and_what_it_must_be(client: TestClient[Litestar]) -> None:
    sign_in(client, "vic")
    response = client.get("/?page=0")
    assert response.status_code == 400
    assert "page: Expected `int` &gt;= 1" in response.text
    api = client.get("/api/studies?page=abc")
    assert api.status_code == 400 and api.json()["error"] == "page: Expected `int`, got `str`"


@pytest.mark.parametrize(
    "path",
    ["/studies/1.2%00", "/api/studies/1.2%00", "/studies/1.2.x", "/studies/" + "1." * 40 + "1"],
)
def test_a_uid_that_is_not_one_is_a_404_with_the_reason(
    client: TestClient[Litestar], path: str
) -> None:
    sign_in(client, "vic")
    response = client.get(path)
    assert response.status_code == 404
    assert "is not a DICOM UID" in response.text


def test_an_overlay_view_is_audited_too(
    client: TestClient[Litestar], db: Database, study: str
) -> None:
    sign_in(client, "rita")
    assert client.get(f"/studies/{study}/images/{LEFT_CC}/overlay.png").status_code == 200
    assert client.get(f"/studies/{study}/images/1.2.3%00/overlay.png").status_code == 404
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "image viewed"))
        assert [(r.actor, r.target, r.detail) for r in rows] == [
            ("rita", study, f"/studies/{study}/images/{LEFT_CC}/overlay.png")
        ]


def test_a_nul_in_the_sign_in_form_is_a_failed_sign_in(
    client: TestClient[Litestar], db: Database
) -> None:
    response = client.post(
        "/login",
        data={"username": "vic\x00", "password": "viewer-pass-3", "next": "/",
              "_csrf_token": csrf_token(client)},
        follow_redirects=False,
    )
    assert response.status_code == 401
    with db.session() as session:
        last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert last is not None and (last.action, last.actor) == ("sign-in failed", "vic")


def test_signing_out_after_the_session_expired_goes_to_sign_in_not_to_a_405(
    client: TestClient[Litestar],
) -> None:
    response = client.post("/logout", data={"_csrf_token": csrf_token(client)},
                           follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
