"""Every operation of the portal's OpenAPI document, fuzzed by schemathesis as a signed-in admin
(the widest audience): whatever it sends, the portal never answers 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from mammogate.config.settings import load_settings
from mammogate.db import Database
from mammogate.web import PortalServer, create_app, create_local_user
from tests.unit.web.portal_sample import PASSWORDS, add_sample_study

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PortalServer, Any]]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    node = load_settings(None, node={"data_dir": str(data)}, web={"port": 0})
    db = Database(node.database_url)
    db.migrate()
    create_local_user(db, "ada", "admin", PASSWORDS["ada"])
    add_sample_study(db, node.data_dir)
    app = create_app(node, db)
    server = PortalServer(app, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server, app.openapi_schema.to_schema()
    finally:
        server.stop()
        db.dispose()


@pytest.fixture(scope="module")
def signed_in(portal: tuple[PortalServer, Any]) -> tuple[requests.Session, str]:
    server, _ = portal
    session = requests.Session()
    page = session.get(server.url + "/login", timeout=10)
    token = page.text.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = session.post(server.url + "/login", data={
        "username": "ada", "password": PASSWORDS["ada"], "next": "/", "_csrf_token": token},
        allow_redirects=False, timeout=10)
    assert signed.status_code == 303
    return session, session.cookies.get("mammogate_csrf") or token


def test_no_operation_answers_5xx(portal: tuple[PortalServer, Any],
                                  signed_in: tuple[requests.Session, str]) -> None:
    server, document = portal
    session, token = signed_in
    api = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    bounced: list[str] = []  # sent to sign in: the fuzzing would test nothing past the door
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        if operation.path == "/logout" or (operation.path == "/login" and operation.method.upper() == "POST"):
            continue  # signing out, or a failed sign-in, would end the sign-in the other cases use
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=8, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                response = case.call(base_url=server.url, session=session,
                                     headers={"x-csrftoken": token}, allow_redirects=False, timeout=30)
                location = response.headers.get("location") or ""
                location = location[0] if isinstance(location, list) and location else str(location or "")
                if location.startswith("/login"):
                    bounced.append(f"{case.method} {case.formatted_path}")
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} {case.query or ''}: "
                                    f"{response.status_code} {response.text[:200]}")

            try:
                check()
            except Unsatisfiable:
                # no invalid input exists for this operation (e.g. no parameters at all)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert operations >= 30, "the OpenAPI document lists the portal's operations"
    assert failures == [], "\n".join(failures[:20])
    assert session.get(server.url + "/api/studies", timeout=10).status_code == 200, "still signed in"
    assert [b for b in bounced if not b.startswith(("GET /login", "GET /login/oidc"))] == []
