"""Single sign-on through a real OpenID provider (oidc-provider on Node.js, on loopback): the
whole redirect flow in Chromium, roles from the provider's claim, and the refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import playwright.sync_api as playwright_api
import pytest
from sqlalchemy import select

from mammogate.config.settings import load_settings
from mammogate.db import AuditEntry, Database, User
from mammogate.web import PortalServer, create_app, create_local_user
from tests.integration.test_portal_browser import CHROMIUM, CHROMIUM_ARGS, use_the_viewer
from tests.peers import OidcProvider, free_port
from tests.unit.web.portal_sample import STUDY_UID, add_sample_study

pytestmark = [pytest.mark.slow]

CLIENT_ID = "mammogate-portal"
SECRET = "a-client-secret-only-the-tests-know"
ACCOUNTS = {
    "alice": ["mammogate-admin", "staff"],
    "rad": ["mammogate-radiologist"],
    "nora": ["staff"],  # no mammogate role
}


@pytest.fixture
def sso(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PortalServer, OidcProvider, Database]]:
    portal_port = free_port()
    provider = OidcProvider(
        clients=[{"client_id": CLIENT_ID, "client_secret": SECRET,
                  "redirect_uris": [f"http://127.0.0.1:{portal_port}/login/oidc/callback"]}],
        accounts=ACCOUNTS)
    provider.start()
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    monkeypatch.setenv("MAMMOGATE_TEST_OIDC_SECRET", SECRET)
    settings = load_settings(None, node={"data_dir": str(tmp_path / "data")}, web={"port": portal_port},
                             oidc={"enabled": True, "issuer": provider.issuer, "client_id": CLIENT_ID,
                                   "client_secret_env": "MAMMOGATE_TEST_OIDC_SECRET",
                                   "display_name": "Hospital SSO",
                                   "role_map": {"mammogate-admin": "admin",
                                                "mammogate-radiologist": "radiologist"}})
    db = Database(settings.database_url)
    db.migrate()
    create_local_user(db, "alice", "viewer", "a local passphrase")  # the name is taken locally
    server = PortalServer(create_app(settings, db), host="127.0.0.1", port=portal_port)
    server.start()
    try:
        yield server, provider, db
    finally:
        server.stop()
        provider.stop()
        db.dispose()


def _sign_in_at_provider(page: playwright_api.Page, login: str) -> None:
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password: devInteractions")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    consent = page.locator("button[type=submit]")
    if "/interaction/" in page.url and consent.count():
        consent.first.click()  # the consent page


def test_sign_in_through_the_provider_in_chromium_with_the_role_it_gives(
    sso: tuple[PortalServer, OidcProvider, Database], artifacts: Path,
) -> None:
    server, provider, db = sso
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/admin/")
            assert "/login?next=" in page.url
            page.get_by_role("link", name="Sign in with Hospital SSO").click()
            page.wait_for_url(f"{provider.issuer}/**")
            _sign_in_at_provider(page, "alice")
            page.wait_for_url(server.url + "/admin")  # back where the user was going
            assert "alice (sso 2)" in page.locator("body").inner_text()
            page.screenshot(path=str(artifacts / "sso-admin.png"), full_page=True)

            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url("**/login")
            page.goto(server.url + "/")
            assert "/login?next=" in page.url

            # a second user whose provider roles map to nothing is refused, with the reason
            context = browser.new_context()
            other = context.new_page()
            other.goto(server.url + "/login")
            other.get_by_role("link", name="Sign in with Hospital SSO").click()
            _sign_in_at_provider(other, "nora")
            other.wait_for_url(server.url + "/login/oidc/callback**")
            assert "has no mammogate role" in other.locator("[role=alert]").inner_text()
            other.goto(server.url + "/")
            assert "/login?next=" in other.url
        finally:
            browser.close()

    with db.session() as session:
        users = {u.username: (u.role, u.oidc_subject, u.password_hash is None)
                 for u in session.scalars(select(User))}
        audit = session.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.detail)).all()
    # the provider's alice is not the local alice: her own account, her provider's role
    assert users["alice"] == ("viewer", None, False)
    assert users["alice (sso 2)"] == ("admin", f"{provider.issuer}|alice", True)
    assert "nora" not in users
    assert ("alice (sso 2)", "sign-in", "oidc") in audit
    assert any(a[1] == "sign-in failed" and "no mammogate role" in (a[2] or "") for a in audit)


def test_a_forged_or_unsolicited_answer_is_refused_and_signs_nobody_in(
    sso: tuple[PortalServer, OidcProvider, Database],
) -> None:
    server, provider, _db = sso
    with httpx.Client(base_url=server.url, follow_redirects=False) as client:
        # no sign-in started in this browser
        page = client.get("/login/oidc/callback", params={"code": "x", "state": "y"})
        assert page.status_code == 400 and "No sign-in through the provider is in progress" in page.text
        # started, then an answer with another state (a login CSRF attempt)
        start = client.get("/login/oidc", params={"next": "/"})
        assert start.status_code == 303
        location = start.headers["location"]
        assert location.startswith(f"{provider.issuer}/auth?")
        for part in ("code_challenge_method=S256", "code_challenge=", "nonce=", "state=",
                     f"client_id={CLIENT_ID}", "scope=openid+profile+email"):
            assert part in location, part
        forged = client.get("/login/oidc/callback", params={"code": "x", "state": "not-the-one"})
        assert forged.status_code == 400 and "state mismatch" in forged.text
        # the provider's error is shown as such
        start = client.get("/login/oidc")
        state = httpx.URL(start.headers["location"]).params["state"]
        denied = client.get("/login/oidc/callback", params={
            "error": "access_denied", "error_description": "End-User aborted interaction", "state": state})
        assert denied.status_code == 403 and "access_denied" in denied.text
        # a made-up code for the right state: the provider refuses the exchange
        start = client.get("/login/oidc")
        state = httpx.URL(start.headers["location"]).params["state"]
        made_up = client.get("/login/oidc/callback", params={"code": "made-up", "state": state})
        assert made_up.status_code == 403 and "refused the code exchange" in made_up.text
        assert client.get("/api/studies").status_code == 401


# the pages a tablet must show without sideways scrolling of the page itself (wide tables
# scroll inside their own box)
TABLET_PAGES = ["/", f"/studies/{STUDY_UID}", "/statistics", "/upload", "/admin", "/admin/config",
                "/admin/deliveries", "/admin/audit"]


def test_a_working_day_through_single_sign_on(
    sso: tuple[PortalServer, OidcProvider, Database], tmp_path: Path, artifacts: Path,
) -> None:
    """Sign in through the provider, filter the worklist, export it, open a study, use the
    viewer, try and change a routing rule; then the same pages on a tablet, and by keyboard.
    Screenshots of each step stay in the test's artifacts folder."""
    server, _provider, db = sso
    add_sample_study(db, tmp_path / "data")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.goto(server.url + "/")
            page.get_by_role("link", name="Sign in with Hospital SSO").click()
            _sign_in_at_provider(page, "alice")
            page.wait_for_url(server.url + "/")

            page.fill("input[name=q]", "pid-1")
            page.select_option("select[name=category]", "flagged")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**category=flagged**")
            assert page.locator("tr.study").count() == 1
            page.screenshot(path=str(artifacts / "1-worklist-filtered.png"), full_page=True)
            with page.expect_download() as download_info:
                page.click("#export-csv")
            exported = Path(download_info.value.path()).read_text(encoding="utf-8").splitlines()
            assert len(exported) == 2 and STUDY_UID in exported[1]

            page.locator(f'tr[data-study-uid="{STUDY_UID}"]').get_by_role("link", name="Details").click()
            page.wait_for_url(f"**/studies/{STUDY_UID}")
            use_the_viewer(page, artifacts)
            page.screenshot(path=str(artifacts / "2-study.png"), full_page=True)

            page.get_by_role("link", name="Admin").click()
            page.get_by_role("link", name="Peers, destinations, routes").click()
            document = ('{"peers": [], "destinations": [{"name": "pacs", "kind": "dimse", '
                        '"ae_title": "PACS", "host": "127.0.0.1", "port": 104}], "routes": '
                        '[{"name": "flagged", "destinations": ["pacs"], "match": {"exam_category": ["flagged"]}}]}')
            page.fill("#document", document)
            page.fill("#dry-run-study", "ACC1001")
            page.get_by_role("button", name="Dry run on this study (saves nothing)").click()
            assert "fires" in page.locator('#dry-run-verdicts tr[data-route="flagged"]').inner_text()
            page.get_by_role("button", name="Validate and save").click()
            assert "Saved" in page.locator("#config-saved").inner_text()
            page.screenshot(path=str(artifacts / "3-routing-saved.png"), full_page=True)

            page.set_viewport_size({"width": 768, "height": 1024})  # a tablet, portrait
            for path in TABLET_PAGES:
                page.goto(server.url + path)
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at 768 px"
                name = path.strip("/").replace("/", "-") or "worklist"
                page.screenshot(path=str(artifacts / f"4-tablet-{name[:40]}.png"), full_page=True)

            # by keyboard: the first Tab reaches "Skip to content", which lands in the page
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(server.url + "/")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
            page.keyboard.press("Enter")
            assert page.evaluate("document.activeElement.id") == "main"
            for _ in range(40):  # tabbing on reaches the worklist's study link
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.textContent.trim()") == "Details":
                    break
            else:
                raise AssertionError("the worklist's Details link is not reachable by keyboard")
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/studies/{STUDY_UID}")
        finally:
            browser.close()
