"""The study page as a reader wants it: the four views in the mirrored hanging protocol, a study
that was not analysed said so in neutral words, impossible dates shown as unknown."""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.config.settings import Settings
from mammogate.db import Analysis, AnalysisImage, Database, Finding, Study, utcnow
from tests.unit.web.portal_sample import PNG_BYTES, sign_in

UID = "1.2.826.0.1.3680043.8.498.2001"


def _study(db: Database, settings: Settings, *, category: str, views: list[str], birth: str = "19600101") -> None:
    now = utcnow()
    overlays = settings.data_dir / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    with db.session() as session:
        study = Study(study_instance_uid=UID, state="done" if category != "skipped" else "skipped",
                      patient_name="LEROY^Anne", patient_birth_date=birth, instance_count=len(views),
                      first_received_at=now, last_received_at=now, updated_at=now)
        session.add(study)
        session.flush()
        analysis = Analysis(study_id=study.id, model_name="m", model_version="1", model_sha256="0" * 64,
                            operating_point=0.5, exam_score=0.3 if category != "skipped" else None,
                            category=category, created_at=now)
        session.add(analysis)
        session.flush()
        for k, view in enumerate(views):
            png = overlays / f"{view}.png"
            png.write_bytes(PNG_BYTES)
            analysed = category != "skipped"
            session.add(AnalysisImage(
                analysis_id=analysis.id, sop_instance_uid=f"{UID}.{k}", laterality=view[0], view=view[1:],
                status="analysed" if analysed else "skipped", score=0.3 if analysed else None,
                reason="" if analysed else "For Processing (raw) breast projection; only For Presentation images are analysed",
                overlay_path=str(png) if analysed else ""))


def test_overlays_hang_rcc_lcc_over_rmlo_lmlo_whatever_the_order_received(
    client: TestClient[Litestar], db: Database, settings: Settings,
) -> None:
    _study(db, settings, category="not_flagged", views=["LMLO", "RCC", "LCC", "RMLO"])
    sign_in(client, "rita")
    html = client.get(f"/studies/{UID}").text
    hung = re.findall(r'alt="Overlay of (\w) (\w+)"', html)
    assert hung == [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    assert 'class="overlays hanging"' in html


def test_a_missing_view_keeps_its_slot_and_other_views_hang_after(
    client: TestClient[Litestar], db: Database, settings: Settings,
) -> None:
    _study(db, settings, category="not_flagged", views=["RXCCL", "LMLO", "LCC", "RMLO"])
    sign_in(client, "rita")
    html = client.get(f"/studies/{UID}").text
    hung = re.findall(r'alt="Overlay of (\w) (\w+)"|id="slot-(\w+)"', html)
    assert hung == [("", "", "RCC"), ("L", "CC", ""), ("R", "MLO", ""), ("L", "MLO", ""),
                    ("R", "XCCL", "")]
    assert "RCC: no analysed image" in html


def test_a_study_with_nothing_analysable_is_not_analysed_in_neutral_words(
    client: TestClient[Litestar], db: Database, settings: Settings,
) -> None:
    _study(db, settings, category="skipped", views=["RCC", "LCC"], birth="00000000")
    sign_in(client, "rita")
    html = " ".join(client.get(f"/studies/{UID}").text.split())
    assert 'id="study-not-analysed"' in html and "This is not a finding about the patient" in html
    assert 'role="alert"' not in html and "Analysis failed" not in html
    assert "Analysed (UTC)" not in html and "No score: no view was analysed." in html
    assert "only For Presentation images are analysed" in html
    assert "0000-00-00" not in html and re.search(r"<dt>Birth date</dt><dd>—</dd>", html)


def test_each_finding_says_where_on_the_breast_it_lies(
    client: TestClient[Litestar], db: Database, settings: Settings,
) -> None:
    _study(db, settings, category="flagged", views=["RCC", "RMLO", "LCC"])
    with db.session() as session:
        analysis_id = session.scalars(select(Analysis.id)).one()
        for k, view, clock_hour, region, assumed in [
            (0, "CC", 10, "upper outer quadrant", False),
            (1, "MLO", 10, "upper outer quadrant", True),
            (2, "CC", None, "retroareolar", False),
        ]:
            session.add(Finding(
                analysis_id=analysis_id, sop_instance_uid=f"{UID}.{k}", laterality="L" if k == 2 else "R",
                view=view, probability=0.8, center_column=100.0, center_row=200.0, outline=[],
                nipple_distance_mm=42.0 if k < 2 else 6.0, lesion=1 if k < 2 else None,
                clock_hour=clock_hour, region=region, orientation_assumed=assumed))
    sign_in(client, "rita")
    html = client.get(f"/studies/{UID}").text
    assert "<th>Position</th>" in html
    cells = re.findall(r'<td class="finding-position">(.*?)</td>', html)
    assert cells == ["10 o&#39;clock, upper outer quadrant",
                     "10 o&#39;clock, upper outer quadrant (orientation assumed)",
                     "retroareolar"]
    findings = client.get(f"/api/studies/{UID}").json()["analysis"]["findings"]
    assert [(f["clock_hour"], f["region"], f["orientation_assumed"], f["description"]) for f in findings] == [
        (10, "upper outer quadrant", False, "Right breast, 10 o'clock, upper outer quadrant, 42 mm from the nipple"),
        (10, "upper outer quadrant", True,
         "Right breast, 10 o'clock, upper outer quadrant, 42 mm from the nipple (orientation assumed)"),
        (None, "retroareolar", False, "Left breast, retroareolar, 6 mm from the nipple"),
    ]
    # as a French radiologist reads it (the API stays English)
    french = client.get(f"/studies/{UID}", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).text
    assert re.findall(r'<td class="finding-position">(.*?)</td>', french) == [
        "10 h, quadrant supéro-externe", "10 h, quadrant supéro-externe (orientation supposée)",
        "rétro-aréolaire"]


def test_uids_wait_behind_a_fold_and_the_tables_speak_in_words(
    client: TestClient[Litestar], study: str,
) -> None:
    from tests.unit.web.portal_sample import LEFT_CC, SR_UID

    sign_in(client, "rita")
    html = client.get(f"/studies/{study}").text
    fold = re.search(r'<details class="uids" id="uid-details">(.*?)</details>', html, re.S)
    assert fold, "the identifiers have their fold"
    for uid in (study, LEFT_CC, SR_UID):
        assert uid in fold.group(1)
    outside = html.replace(fold.group(0), "")
    images = re.search(r'<table class="grid" id="images">(.*?)</table>', outside, re.S)
    reports = re.search(r'<table class="grid" id="reports">(.*?)</table>', outside, re.S)
    assert images and LEFT_CC not in re.sub(r'href="[^"]*"', "", images.group(1))
    assert reports and ">Mammography CAD SR<" in reports.group(1) and ">Download (DICOM)<" in reports.group(1)
    assert f">{SR_UID}<" not in reports.group(1)
