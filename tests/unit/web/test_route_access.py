"""Every route of the portal states who may use it, and a walk of every route as an anonymous
visitor and as each role proves it: a new route without a line here fails this test."""

from __future__ import annotations

import re

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from mammogate.config.settings import Settings
from mammogate.db import Database
from mammogate.web import create_app
from tests.unit.web.portal_sample import LEFT_CC, add_sample_study, csrf_token, sign_in

ANYONE = frozenset({"anonymous", "viewer", "radiologist", "admin"})
SIGNED_IN = frozenset({"viewer", "radiologist", "admin"})
CLINICAL = frozenset({"radiologist", "admin"})
ADMIN = frozenset({"admin"})

# (method, path as Litestar declares it) -> who may use it
ACCESS: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/login"): ANYONE,
    ("POST", "/login"): ANYONE,
    ("GET", "/login/oidc"): ANYONE,
    ("GET", "/login/oidc/callback"): ANYONE,
    ("POST", "/logout"): SIGNED_IN,
    ("GET", "/healthz"): ANYONE,
    ("GET", "/ready"): ANYONE,
    ("GET", "/metrics"): ANYONE,  # open unless $MAMMOGATE_METRICS_TOKEN is set (test_metrics_route)
    ("GET", "/language"): ANYONE,  # the language switch: the sign-in page has it too
    ("GET", "/static/{file_path:path}"): ANYONE,
    ("GET", "/schema"): SIGNED_IN,
    ("GET", "/schema/openapi.json"): SIGNED_IN,
    ("GET", "/schema/{path:str}"): SIGNED_IN,
    ("GET", "/"): SIGNED_IN,
    ("GET", "/worklist.csv"): SIGNED_IN,
    ("GET", "/statistics"): SIGNED_IN,
    ("GET", "/api/statistics"): SIGNED_IN,
    ("GET", "/studies/{study_instance_uid:str}"): SIGNED_IN,
    ("GET", "/studies/{study_instance_uid:str}/images/{sop_instance_uid:str}/overlay.png"): SIGNED_IN,
    ("GET", "/studies/{study_instance_uid:str}/images/{sop_instance_uid:str}/heatmap.png"): SIGNED_IN,
    ("GET", "/studies/{study_instance_uid:str}/images/{sop_instance_uid:str}/pixels"): SIGNED_IN,
    ("GET", "/studies/{study_instance_uid:str}/objects/{sop_instance_uid:str}"): SIGNED_IN,
    ("POST", "/studies/{study_instance_uid:str}/feedback"): CLINICAL,
    ("GET", "/upload"): CLINICAL,
    ("POST", "/upload"): CLINICAL,
    ("GET", "/api/studies"): SIGNED_IN,
    ("GET", "/api/studies/{study_instance_uid:str}"): SIGNED_IN,
    ("GET", "/admin"): ADMIN,
    ("POST", "/admin/users/{username:str}/role"): ADMIN,
    ("POST", "/admin/users/{username:str}/disable"): ADMIN,
    ("POST", "/admin/users/{username:str}/enable"): ADMIN,
    ("POST", "/admin/users/{username:str}/password"): ADMIN,
    ("GET", "/admin/sessions"): ADMIN,
    ("POST", "/admin/sessions/{handle:str}/revoke"): ADMIN,
    ("GET", "/admin/audit"): ADMIN,
    ("GET", "/admin/audit.csv"): ADMIN,
    ("GET", "/admin/associations"): ADMIN,
    ("GET", "/admin/deliveries"): ADMIN,
    ("POST", "/admin/deliveries/resubmit"): ADMIN,
    ("POST", "/admin/studies/{study_instance_uid:str}/purge"): ADMIN,
    ("POST", "/admin/studies/{study_instance_uid:str}/reanalyse"): ADMIN,
    ("POST", "/admin/studies/{study_instance_uid:str}/resubmit"): ADMIN,
    ("GET", "/admin/config"): ADMIN,
    ("GET", "/admin/tokens"): ADMIN,
    ("POST", "/admin/tokens"): ADMIN,
    ("POST", "/admin/tokens/{token_id:int}/revoke"): ADMIN,
    ("POST", "/admin/config"): ADMIN,
    ("POST", "/admin/destinations/{name:str}/test"): ADMIN,
    ("GET", "/admin/jobs/{job_id:int}"): ADMIN,
    ("GET", "/admin/jobs"): ADMIN,
    ("GET", "/api/admin/associations"): ADMIN,
    ("GET", "/api/admin/studies/{study_instance_uid:str}/routes"): ADMIN,
    ("GET", "/api/admin/jobs/{job_id:int}"): ADMIN,
    ("POST", "/api/admin/studies/{study_instance_uid:str}/reanalyse"): ADMIN,
    ("POST", "/api/admin/deliveries/resubmit"): ADMIN,
    ("POST", "/api/admin/destinations/{name:str}/test"): ADMIN,
}

BODIES = {
    "/login": {"username": "nobody", "password": "wrong"},
    "/studies/{study_instance_uid:str}/feedback": {"verdict": "agree"},
    "/admin/users/{username:str}/role": {"role": "viewer"},
    "/admin/config": {"document": "not JSON: refused, nothing applied"},
    "/admin/tokens": {"name": "", "username": "nobody"},
    "/admin/studies/{study_instance_uid:str}/purge": {"confirm": "not it", "reason": "walk"},
    "/admin/users/{username:str}/password": {"password": "another long passphrase"},
}
JSON_BODIES = {"/api/admin/deliveries/resubmit": {"dead": True}}


def _declared_routes(app: Litestar) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in handler.http_methods:
                if method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                    found.add((method, route.path))
    return found


def test_every_route_has_a_declared_audience(app: Litestar) -> None:
    assert _declared_routes(app) == set(ACCESS), "a route without a line in ACCESS, or a stale line"


def _concrete(path: str, study: str) -> str:
    path = path.replace("{study_instance_uid:str}", study).replace("{sop_instance_uid:str}", LEFT_CC)
    path = path.replace("{job_id:int}", "1").replace("{token_id:int}", "1").replace("{name:str}", "pacs-main")
    path = path.replace("{path:str}", "openapi.json").replace("{username:str}", "nobody-here").replace("{handle:str}", "0" * 16)
    return path.replace("{file_path:path}", "portal.css")


def _refused(response: object, who: str) -> bool:
    status = response.status_code  # type: ignore[attr-defined]
    location = response.headers.get("location", "")  # type: ignore[attr-defined]
    if status in (301, 302, 303, 307) and (location.startswith("/login?next=") or location == "/login"):
        return True  # sent to sign in (a POST has no page to come back to)
    if status == 401:
        return "Invalid user name or password" not in response.text  # type: ignore[attr-defined]
    return status == 403


@pytest.mark.parametrize("who", ["anonymous", "viewer", "radiologist", "admin"])
def test_each_route_admits_exactly_its_audience(who: str, settings: Settings, db: Database) -> None:
    study = add_sample_study(db, settings.data_dir)
    users = {"viewer": "vic", "radiologist": "rita", "admin": "ada"}
    with TestClient(create_app(settings, db)) as client:
        if who != "anonymous":
            sign_in(client, users[who])
        token = csrf_token(client, "/login")
        wrong = []
        # a failed sign-in ends the browser's sign-in: POST /login goes last
        walk = sorted(ACCESS.items(), key=lambda item: (item[0] == ("POST", "/login"), item[0]))
        for (method, declared), audience in walk:
            path = _concrete(declared, study)
            if method == "GET":
                response = client.get(path, follow_redirects=False)
            elif declared == "/logout":
                continue  # signing out would end the walk: test_portal_auth covers it
            elif declared in JSON_BODIES:
                response = client.post(path, json=JSON_BODIES[declared], follow_redirects=False,
                                        headers={"x-csrftoken": token})
            else:
                response = client.post(path, data={**BODIES.get(declared, {}), "_csrf_token": token},
                                       follow_redirects=False, headers={"x-csrftoken": token})
            if _refused(response, who) == (who in audience):
                wrong.append(f"{method} {declared}: {response.status_code} {response.headers.get('location', '')} as {who}")
            if who == "anonymous" and who not in audience and re.match(r"^/api/", declared):
                assert response.status_code == 401, f"{declared}: the API answers 401, never a page"
        assert wrong == []
