"""The portal in a real browser: uvicorn in a thread, Debian chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from mammogate.config.settings import load_settings
from mammogate.db import Analysis, Database, Study, utcnow
from mammogate.web import PortalServer, create_app, create_local_user

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
STUDY_UID = "1.2.826.0.1.3680043.8.498.2001"
EXAM_SCORE = 0.873456

pytestmark = [pytest.mark.slow]


@pytest.fixture
def portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PortalServer]:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    settings = load_settings(None, node={"data_dir": str(tmp_path / "data")}, web={"port": 0})
    db = Database(settings.database_url)
    db.migrate()
    create_local_user(db, "rita", "radiologist", "radiologist-pass")
    now = utcnow()
    with db.session() as session:
        study = Study(
            study_instance_uid=STUDY_UID,
            state="done",
            accession_number="ACC2001",
            patient_name="DUPONT^Hélène",
            study_date="20240315",
            instance_count=4,
            first_received_at=now - timedelta(minutes=2),
            last_received_at=now - timedelta(minutes=1),
            updated_at=now,
        )
        session.add(study)
        session.flush()
        session.add(
            Analysis(
                study_id=study.id,
                model_name="mammo-cnn",
                model_version="1.4.0",
                model_sha256="ab12cd34ef56" + "0" * 52,
                operating_point=0.42,
                exam_score=EXAM_SCORE,
                score_left=EXAM_SCORE,
                score_right=0.05,
                category="flagged",
                created_at=now,
            )
        )
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
            page.fill("#password", "radiologist-pass")
            page.click("button[type=submit]")
            page.wait_for_url(portal.url + "/")

            row = page.locator(f'tr[data-study-uid="{STUDY_UID}"]')
            score = row.locator(".exam-score")
            assert score.inner_text() == "87.3 %"
            assert float(score.get_attribute("data-score") or "nan") == EXAM_SCORE
            assert "DUPONT, Hélène" in row.inner_text()

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
