"""Odd and hostile requests to the portal get a 4xx with a reason, never a 500 or an echo."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import TestClient

from tests.unit.web.portal_sample import sign_in


def test_a_nul_in_a_static_path_is_a_400_with_the_reason(client: TestClient[Litestar]) -> None:
    for path in ("/static/portal.css%00", "/static/%00.css"):
        response = client.get(path)
        assert response.status_code == 400, path
        assert "NUL" in response.text
        assert response.headers["x-content-type-options"] == "nosniff"


def test_a_huge_next_is_neither_echoed_nor_kept(client: TestClient[Litestar]) -> None:
    huge = "/?q=" + "a" * 60000
    anonymous = client.get(huge, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    page = client.get("/login", params={"next": huge})
    assert page.status_code == 200 and len(page.text) < 20000
    assert "a" * 3000 not in page.text


def test_head_answers_like_get_without_a_body(client: TestClient[Litestar], study: str) -> None:
    for path in ("/login", "/healthz", "/static/portal.css"):
        response = client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""
    sign_in(client, "rita")
    assert client.head(f"/studies/{study}").status_code == 200
    assert client.head("/api/studies").status_code == 200


def test_a_tampered_session_cookie_is_a_sign_in_page_not_an_error(client: TestClient[Litestar]) -> None:
    client.cookies.set("session", "tampered" * 40)
    response = client.get("/", follow_redirects=False)
    assert response.status_code in (303, 401)
    assert client.get("/").status_code == 200  # followed to the sign-in page
