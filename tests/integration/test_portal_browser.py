"""The portal in a real browser: uvicorn in a thread, Debian chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from mammogate.config.settings import load_settings
from mammogate.db import Database
from mammogate.web import PortalServer, create_app, create_local_user
from tests.unit.web.portal_sample import EXAM_SCORE, PASSWORDS, STUDY_UID, add_sample_study

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [pytest.mark.slow]


@pytest.fixture
def portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PortalServer]:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    settings = load_settings(None, node={"data_dir": str(tmp_path / "data")}, web={"port": 0})
    db = Database(settings.database_url)
    db.migrate()
    create_local_user(db, "rita", "radiologist", PASSWORDS["rita"])
    create_local_user(db, "ada", "admin", PASSWORDS["ada"])
    add_sample_study(db, settings.data_dir)
    server = PortalServer(create_app(settings, db), host="127.0.0.1", port=settings.web.port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        db.dispose()


def test_sign_in_history_detail_screenshot_sign_out(portal: PortalServer, tmp_path: Path) -> None:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(portal.url + "/")
            assert "/login?next=" in page.url

            page.fill("#username", "rita")
            page.fill("#password", "wrong")
            page.click("button[type=submit]")
            assert page.locator("[role=alert]").inner_text() == "Invalid user name or password."

            page.fill("#username", "rita")
            page.fill("#password", PASSWORDS["rita"])
            page.click("button[type=submit]")
            page.wait_for_url(portal.url + "/")

            row = page.locator(f'tr[data-study-uid="{STUDY_UID}"]')
            score = row.locator(".exam-score")
            assert score.inner_text() == "87.3 %"
            assert float(score.get_attribute("data-score") or "nan") == EXAM_SCORE
            assert "DUPONT, Hélène" in row.inner_text()

            # filter the worklist on the server, then export exactly what it shows
            page.fill("input[name=q]", "nobody")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**/?q=nobody**")
            assert "No studies match these filters" in page.locator("main").inner_text()
            page.fill("input[name=q]", "pid-1")
            page.select_option("select[name=category]", "flagged")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**category=flagged**")
            assert page.locator("tr.study").count() == 1
            with page.expect_download() as download_info:
                page.click("#export-csv")
            exported = Path(download_info.value.path()).read_text(encoding="utf-8")
            assert exported.startswith("received_at_utc,") and STUDY_UID in exported
            assert len(exported.splitlines()) == 2  # the header and the one study

            row = page.locator(f'tr[data-study-uid="{STUDY_UID}"]')
            row.get_by_role("link", name="Details").click()
            page.wait_for_url(f"**/studies/{STUDY_UID}")
            assert page.locator("#analysis .exam-score").inner_text() == "87.3 %"
            assert "not for clinical use" in page.locator("footer").inner_text()

            shot = tmp_path / "study-detail.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0

            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url("**/login")
            page.goto(portal.url + "/")
            assert "/login?next=" in page.url
        finally:
            browser.close()


def test_an_admin_changes_a_routing_rule_in_the_browser(portal: PortalServer, tmp_path: Path) -> None:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(portal.url + "/login")
            page.fill("#username", "ada")
            page.fill("#password", PASSWORDS["ada"])
            page.click("button[type=submit]")
            page.wait_for_url(portal.url + "/")
            page.get_by_role("link", name="Admin").click()
            page.get_by_role("link", name="Peers, destinations, routes").click()
            page.wait_for_url("**/admin/config")
            document = (
                '{"peers": [{"ae_title": "MODALITY1"}], '
                '"destinations": [{"name": "pacs", "kind": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}], '
                '"routes": [{"name": "flagged", "destinations": ["pacs"], "match": {"exam_category": ["flagged"]}}]}'
            )
            page.fill("#document", document)
            page.get_by_role("button", name="Validate and save").click()
            assert "Saved" in page.locator("#config-saved").inner_text()
            assert '"exam_category"' in page.locator("#document").input_value()
            page.fill("#document", document.replace('"pacs"]', '"nowhere"]'))
            page.get_by_role("button", name="Validate and save").click()
            assert "nowhere" in page.locator("#config-error").inner_text()
            page.screenshot(path=str(tmp_path / "admin-config.png"), full_page=True)
        finally:
            browser.close()


def test_the_language_switch_turns_the_pages_french_and_back(portal: PortalServer) -> None:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="en-GB")  # the browser asks for English
            page.goto(portal.url + "/login")
            page.get_by_role("link", name="Français").click()  # before signing in: it is there too
            page.wait_for_url("**/login")
            assert page.locator("html").get_attribute("lang") == "fr"
            page.fill("#username", "rita")
            page.fill("#password", PASSWORDS["rita"])
            page.get_by_role("button", name="Se connecter").click()
            page.wait_for_url(portal.url + "/")
            assert page.locator("main h1").inner_text() == "Liste de travail"
            row = page.locator(f'tr[data-study-uid="{STUDY_UID}"]')
            assert row.locator(".exam-score").inner_text() == "87,3 %"
            assert row.locator(".pill.category-flagged").inner_text() == "Signalé"

            row.get_by_role("link", name="Détails").click()
            page.wait_for_url(f"**/studies/{STUDY_UID}")
            assert page.locator("#analysis .exam-score").inner_text() == "87,3 %"
            assert "Score de l'examen" in page.locator("#analysis").inner_text()
            assert "pas pour un usage clinique" in page.locator("footer").inner_text()

            page.get_by_role("link", name="English").click()  # back to English, on the same page
            page.wait_for_url(f"**/studies/{STUDY_UID}")
            assert page.locator("html").get_attribute("lang") == "en"
            assert page.locator("#analysis .exam-score").inner_text() == "87.3 %"
            assert "Exam score" in page.locator("#analysis").inner_text()
            page.get_by_role("link", name="Worklist").click()
            page.wait_for_url(portal.url + "/")
            assert page.locator("main h1").inner_text() == "Worklist"
        finally:
            browser.close()
