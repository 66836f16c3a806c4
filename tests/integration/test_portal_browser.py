"""The portal in a real browser: uvicorn in a thread, Debian chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from mammogate.config.settings import load_settings
from mammogate.db import Database
from mammogate.web import PortalServer, create_app, create_local_user
from tests.unit.web.portal_sample import (
    EXAM_SCORE,
    IMAGE_COLUMNS,
    IMAGE_ROWS,
    LEFT_CC,
    PASSWORDS,
    STUDY_UID,
    add_sample_study,
)

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


def test_sign_in_history_detail_screenshot_sign_out(portal: PortalServer, artifacts: Path) -> None:
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
            use_the_viewer(page, artifacts)

            shot = artifacts / "study-detail.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0

            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url("**/login")
            page.goto(portal.url + "/")
            assert "/login?next=" in page.url
        finally:
            browser.close()


PIXEL_AT = """([figureId, column, row]) => {
    // the RGBA on the canvas at an image point (reduced grid), at zoom 1
    const figure = document.getElementById(figureId);
    const canvas = figure.querySelector("canvas.viewer-canvas");
    const rows = ROWS, columns = COLUMNS;
    const s = Math.min(canvas.width / columns, canvas.height / rows);
    const x = Math.floor(canvas.width / 2 + (column - columns / 2) * s);
    const y = Math.floor(canvas.height / 2 + (row - rows / 2) * s);
    return Array.from(canvas.getContext("2d").getImageData(x, y, 1, 1).data);
}""".replace("ROWS", str(IMAGE_ROWS)).replace("COLUMNS", str(IMAGE_COLUMNS))


def use_the_viewer(page: playwright_api.Page, artifacts: Path) -> None:
    """The left CC in the viewer: the image's own window, the heatmap on and off (button and
    key), zoom, a typed window; the canvas' pixels change as each control says."""
    figure_id = f"overlay-{LEFT_CC}"
    figure = page.locator(f'[id="{figure_id}"]')
    page.wait_for_selector(f'[id="{figure_id}"][data-viewer="ready"]')
    assert figure.get_attribute("data-window-center") == "2000"
    assert figure.get_attribute("data-heatmap") == "on"
    assert figure.get_attribute("data-flipped") == "no"  # a left breast, its wall on the left
    assert not figure.locator("img").is_visible(), "the canvas replaces the server's picture"
    hot = [7.5 * IMAGE_COLUMNS / 10, 3.5 * IMAGE_ROWS / 12]  # the sample heatmap's hot cell
    cold = [IMAGE_COLUMNS / 4, IMAGE_ROWS * 0.9]
    with_heat = page.evaluate(PIXEL_AT, [figure_id, *hot])
    assert not with_heat[0] == with_heat[1] == with_heat[2], "the hot cell is coloured"
    figure.get_by_role("button", name="Heatmap").click()
    assert figure.get_attribute("data-heatmap") == "off"
    assert figure.get_by_role("button", name="Heatmap").get_attribute("aria-pressed") == "false"
    without = page.evaluate(PIXEL_AT, [figure_id, *hot])
    assert without[0] == without[1] == without[2], "grey once the heatmap is off"
    # window 2000/4000 over values 30 r - 100: row 35's value 950 is grey 0.2875
    assert abs(without[0] - 255 * (950 - 0) / 4000) <= 2
    figure.locator("canvas").focus()
    page.keyboard.press("h")
    assert figure.get_attribute("data-heatmap") == "on"

    grey = page.evaluate(PIXEL_AT, [figure_id, *cold])[0]
    figure.locator("input.window-width").fill("1000")
    figure.locator("input.window-center").fill("3000")
    figure.locator("input.window-center").press("Enter")
    figure.locator("input.window-center").dispatch_event("change")
    assert figure.get_attribute("data-window-width") == "1000"
    narrowed = page.evaluate(PIXEL_AT, [figure_id, *cold])[0]
    # row 108: value 3140, window 2500..3500: grey 0.64 (it was 0.785 in the image's window);
    # the canvas interpolates between rows, 30 apart: 7.7 grey levels in this window
    assert abs(narrowed - 255 * 0.64) <= 8 and abs(grey - 255 * 0.785) <= 3

    figure.get_by_role("button", name="Zoom in").click()
    assert figure.get_attribute("data-zoom") == "2"
    page.keyboard.press("+")
    figure.locator("canvas").focus()
    page.keyboard.press("+")
    assert figure.get_attribute("data-zoom") == "8"
    page.screenshot(path=str(artifacts / "study-viewer-zoomed.png"), full_page=True)
    page.keyboard.press("r")
    assert figure.get_attribute("data-zoom") == "1"
    assert figure.get_attribute("data-window-width") == "4000"


def test_an_admin_changes_a_routing_rule_in_the_browser(portal: PortalServer, artifacts: Path) -> None:
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
            # tried on the sample study first: the dry run saves nothing
            page.fill("#dry-run-study", "ACC1001")
            page.press("#dry-run-study", "Enter")  # Enter in the study box tries, never saves
            verdict = page.locator('#dry-run-verdicts tr[data-route="flagged"]')
            assert "fires" in verdict.inner_text() and "does not" not in verdict.inner_text()
            assert page.locator("#config-saved").count() == 0
            page.get_by_role("button", name="Validate and save").click()
            assert "Saved" in page.locator("#config-saved").inner_text()
            assert '"exam_category"' in page.locator("#document").input_value()
            page.fill("#document", document.replace('"pacs"]', '"nowhere"]'))
            page.get_by_role("button", name="Validate and save").click()
            assert "nowhere" in page.locator("#config-error").inner_text()
            page.screenshot(path=str(artifacts / "admin-config.png"), full_page=True)
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
