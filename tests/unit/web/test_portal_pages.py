"""History, study detail, overlays, the JSON API and error pages."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.db import AuditEntry, Database, Study, utcnow
from mammogate.web.formatting import percent, person_name
from tests.unit.web.portal_sample import (
    EXAM_SCORE,
    LEFT_CC,
    PATIENT_NAME,
    PNG_BYTES,
    RIGHT_MLO,
    SR_UID,
    sign_in,
)

DISCLAIMER = "Research and decision-support tool — not a diagnostic device, not for clinical use."


def _data_score(html: str, css_class: str) -> float:
    match = re.search(rf'class="[^"]*\b{css_class}\b[^"]*" data-score="([^"]*)"', html)
    assert match, f"no {css_class} with data-score"
    return float(match.group(1))


def test_history_shows_the_study_and_its_score(client: TestClient[Litestar], study: str) -> None:
    sign_in(client, "vic")
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert f'data-study-uid="{study}"' in html
    assert "ACC1001" in html
    assert person_name(PATIENT_NAME) in html and "DUPONT, Hélène" in html
    assert "2024-03-15" in html
    assert "87.3 %" in html
    assert _data_score(html, "exam-score") == EXAM_SCORE
    assert "state-done" in html and "category-flagged" in html
    assert f'href="/studies/{study}"' in html
    assert DISCLAIMER in html


def test_history_marks_a_failed_study_failed(
    client: TestClient[Litestar], study: str, failed_study: str
) -> None:
    sign_in(client, "vic")
    html = client.get("/").text
    rows = html.split('<tr class="study"')[1:]
    failed_row = next(r for r in rows if failed_study in r)
    assert "state-failed" in failed_row and "category-failed" in failed_row
    assert 'data-score=""' in failed_row
    # newest first: the failed study was received after the done one
    assert html.index(failed_study) < html.index(study)


def test_history_is_paginated(client: TestClient[Litestar], db: Database) -> None:
    now = utcnow()
    with db.session() as session:
        for i in range(55):
            session.add(
                Study(
                    study_instance_uid=f"1.2.3.{i}",
                    accession_number=f"A{i:03d}",
                    first_received_at=now + timedelta(seconds=i),
                    last_received_at=now + timedelta(seconds=i),
                    updated_at=now,
                )
            )
    sign_in(client, "vic")
    first = client.get("/").text
    assert first.count('<tr class="study"') == 50
    assert "A054" in first and "A004" not in first
    second = client.get("/?page=2").text
    assert second.count('<tr class="study"') == 5
    assert "A004" in second and "Page 2 of 2" in second
    assert client.get("/?page=0").status_code == 400


def test_detail_shows_analysis_scores_findings_and_deliveries(
    client: TestClient[Litestar], study: str
) -> None:
    sign_in(client, "rita")
    page = client.get(f"/studies/{study}")
    assert page.status_code == 200
    html = page.text
    assert "DUPONT, Hélène" in html and "PID-1" in html
    assert "mammo-cnn" in html and "1.4.0" in html and "ab12cd34ef56" in html
    assert "mias 5-fold CV AUC 0.81 (95% CI 0.72-0.89)" in html  # what the model is, as measured
    assert _data_score(html, "exam-score") == EXAM_SCORE
    assert _data_score(html, "breast-score-L") == EXAM_SCORE
    assert _data_score(html, "breast-score-R") == 0.051234
    assert "87.3 %" in html and "5.1 %" in html and "42.0 %" in html
    assert LEFT_CC in html and RIGHT_MLO in html
    assert "not a For Presentation image" in html and "image-skipped" in html
    assert _data_score(html, "finding-probability") == 0.812345
    assert "81.2 %" in html and "1024, 2047" in html
    # each finding as a reader describes it: breast and view, how certain a lesion, how far
    # from the nipple, and whether it is one lesion with a mark on the other view
    finding = re.search(r'<tr class="finding".*?</tr>', html, re.S)
    assert finding is not None
    assert "Left CC" in finding.group(0) and "63.4 %" in finding.group(0)
    assert "42 mm" in finding.group(0) and "one view" in finding.group(0)
    # and where on the breast: seen on one view, the half it shows
    assert re.search(r'<td class="finding-position">outer half</td>', finding.group(0))
    assert SR_UID in html
    assert "pacs-main" in html and "delivery-dead" in html
    assert "association rejected by PACS" in html
    assert f"/studies/{study}/images/{LEFT_CC}/overlay.png" in html
    assert f"/studies/{study}/images/{RIGHT_MLO}/overlay.png" not in html
    assert DISCLAIMER in html
    # which of the expected views came, and which did not
    assert re.search(r'id="study-views" class="views-missing">2 of 4 expected views; '
                     r'RCC, LMLO missing \(LCC, RMLO\)', html)
    detail = client.get(f"/api/studies/{study}").json()
    assert (detail["views_present"], detail["views_missing"]) == (["LCC", "RMLO"], ["RCC", "LMLO"])


def _access_log(db: Database) -> list[tuple[str, str, str]]:
    with db.session() as session:
        rows = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action.in_(("study viewed", "history viewed")))
            .order_by(AuditEntry.id)
        )
        return [(r.actor, r.action, r.target) for r in rows]


def test_every_look_at_patient_data_is_audited_with_who_and_which_study(
    client: TestClient[Litestar], db: Database, study: str
) -> None:
    sign_in(client, "rita")
    assert client.get("/").status_code == 200
    assert client.get(f"/studies/{study}").status_code == 200
    assert client.get(f"/api/studies/{study}").status_code == 200
    assert client.get("/api/studies?page=1").status_code == 200
    assert client.get("/studies/9.9.9").status_code == 404  # nothing shown, nothing recorded
    assert _access_log(db) == [
        ("rita", "history viewed", "page 1"),
        ("rita", "study viewed", study),
        ("rita", "study viewed", study),
        ("rita", "history viewed", "page 1"),
    ]
    with db.session() as session:
        details = [r.detail for r in session.scalars(
            select(AuditEntry).where(AuditEntry.action == "study viewed").order_by(AuditEntry.id))]
    assert details == [f"/studies/{study}", f"/api/studies/{study}"]


def test_failed_study_shows_its_last_error(client: TestClient[Litestar], failed_study: str) -> None:
    sign_in(client, "vic")
    html = client.get(f"/studies/{failed_study}").text
    assert 'id="study-error"' in html and "Analysis failed" in html
    assert "JPEG 2000 stream truncated" in html
    assert "Not analysed yet." in html


def test_unknown_study_is_a_404_page(client: TestClient[Litestar], study: str) -> None:
    sign_in(client, "vic")
    response = client.get("/studies/9.9.9")
    assert response.status_code == 404
    assert "There is no study with Study Instance UID 9.9.9." in response.text
    assert DISCLAIMER in response.text


def test_unknown_page_is_a_404_page(client: TestClient[Litestar]) -> None:
    sign_in(client, "vic")
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "There is no page at /no/such/page." in response.text


def test_overlay_is_served_to_signed_in_users_only(
    client: TestClient[Litestar], study: str
) -> None:
    url = f"/studies/{study}/images/{LEFT_CC}/overlay.png"
    assert client.get(url, follow_redirects=False).status_code == 303
    sign_in(client, "vic")
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == PNG_BYTES


def test_overlay_of_an_image_without_one_is_404(client: TestClient[Litestar], study: str) -> None:
    sign_in(client, "vic")
    assert client.get(f"/studies/{study}/images/{RIGHT_MLO}/overlay.png").status_code == 404
    assert client.get(f"/studies/{study}/images/1.2.3/overlay.png").status_code == 404


def test_api_returns_the_same_scores(client: TestClient[Litestar], study: str) -> None:
    sign_in(client, "vic")
    listing = client.get("/api/studies").json()
    assert listing["total"] == 1
    row = listing["studies"][0]
    assert row["study_instance_uid"] == study and row["exam_score"] == EXAM_SCORE
    detail = client.get(f"/api/studies/{study}").json()
    assert detail["analysis"]["score_right"] == 0.051234
    assert detail["analysis"]["findings"][0]["probability"] == 0.812345
    assert detail["analysis"]["findings"][0]["nipple_distance_mm"] == 42.3
    assert detail["analysis"]["findings"][0]["lesion"] is None
    position = {k: detail["analysis"]["findings"][0][k] for k in (
        "clock_hour", "region", "orientation_assumed", "position", "description")}
    assert position == {"clock_hour": None, "region": "outer half", "orientation_assumed": False,
                        "position": "outer half",
                        "description": "Left breast, outer half, 42 mm from the nipple"}
    assert detail["analysis"]["reports"][0]["deliveries"][0]["destination"] == "pacs-main"
    missing = client.get("/api/studies/9.9.9")
    assert missing.status_code == 404 and "9.9.9" in missing.json()["error"]


def test_patient_name_is_never_logged(
    client: TestClient[Litestar], study: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sign_in(client, "vic")
    client.get("/")
    client.get(f"/studies/{study}")
    client.get("/api/studies")
    assert "DUPONT" not in caplog.text and "Hélène" not in caplog.text


@pytest.mark.parametrize(
    ("probability", "shown"),
    [(0.873456, "87.3 %"), (0.0, "0.0 %"), (1.0, "100.0 %"), (0.00049, "< 0.1 %"),
     (0.99996, "> 99.9 %"), (None, "—")],
)
def test_percent_is_the_sr_number(probability: float | None, shown: str) -> None:
    assert percent(probability) == shown


@pytest.mark.parametrize(
    ("category", "label"),
    [("flagged", "flagged"), ("not_flagged", "not flagged"), ("failed", "failed"),
     ("skipped", "not analysed")],
)
def test_exam_categories_have_labels(category: str, label: str) -> None:
    from mammogate.web.formatting import category_label

    assert category_label(category) == label


def test_every_category_inference_can_produce_has_a_label() -> None:
    from typing import get_args

    from mammogate.inference.results import ExamCategory
    from mammogate.web.formatting import CATEGORY_LABELS

    assert set(get_args(ExamCategory)) <= set(CATEGORY_LABELS)


def test_result_objects_download_with_an_audit_row_and_nothing_else_does(
    client: TestClient[Litestar], db: Database, study: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.unit.web.portal_sample import SR_BYTES

    sign_in(client, "vic")
    html = client.get(f"/studies/{study}").text
    link = f"/studies/{study}/objects/{SR_UID}"
    assert f'href="{link}"' in html
    got = client.get(link)
    assert got.status_code == 200 and got.content == SR_BYTES
    assert got.headers["content-type"] == "application/dicom"
    assert "attachment" in got.headers["content-disposition"]
    with db.session() as session:
        assert session.scalars(select(AuditEntry).where(
            AuditEntry.action == "result object downloaded", AuditEntry.actor == "vic")).all()
    assert client.get(f"/studies/{study}/objects/1.2.3.4").status_code == 404
    assert client.get(f"/studies/{study}/objects/..%2F..%2Fetc").status_code in (400, 404)


def test_views_summary_says_how_many_expected_views_came_and_which_are_missing() -> None:
    from mammogate.imaging.views import views_summary

    expected = ["RCC", "LCC", "RMLO", "LMLO"]
    assert views_summary(expected, expected) == ([], "4 of 4 expected views")
    assert views_summary(["RCC", "LCC", "LMLO"], expected) == (
        ["RMLO"], "3 of 4 expected views; RMLO missing")
    assert views_summary(["RCC", "RXCCL"], []) == ([], "2 views")
    assert views_summary([], []) == ([], "no view recognised")
