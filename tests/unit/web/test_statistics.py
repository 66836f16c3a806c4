"""Statistics (counts, time to result, breakdowns, the model at this site by the radiologists'
ground truth) on SQLite and PostgreSQL, the page and its API, and radiologist feedback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sklearn.metrics import roc_auc_score
from sqlalchemy import select

from mammogate.db import (
    Analysis,
    AuditEntry,
    Database,
    Delivery,
    DestinationRow,
    Feedback,
    Report,
    Study,
)
from mammogate.web.stats.statistics import auc, compute, percentile
from tests.unit.databases import migrated_database
from tests.unit.web.portal_sample import csrf_token, sign_in

TODAY = date(2026, 11, 30)


def test_percentile_and_auc_agree_with_numpy_and_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    values = list(rng.normal(size=37))
    for q in (0, 5, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None
    scores = list(np.round(rng.uniform(size=60), 1))  # rounded: many ties
    labels = [int(s + rng.normal(0, 0.3) > 0.5) for s in scores]
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    assert auc(positives, negatives) == pytest.approx(roc_auc_score(labels, scores))
    assert auc(positives, []) is None


# (AE, manufacturer, days before TODAY, state, category, score, minutes to result, truth)
STUDIES = [
    ("MG1", "HOLOGIC", 0, "done", "flagged", 0.92, 2.0, "biopsy_malignant"),
    ("MG1", "HOLOGIC", 1, "done", "not_flagged", 0.20, 1.0, "normal_followup"),
    ("MG1", "HOLOGIC", 1, "done", "flagged", 0.61, 3.0, "biopsy_benign"),
    ("MG2", "GE", 2, "done", "not_flagged", 0.35, 4.0, "biopsy_malignant"),
    ("MG2", "GE", 3, "done", "not_flagged", 0.05, 5.0, ""),
    ("MG2", "GE", 3, "skipped", "skipped", None, 0.5, ""),
    ("MG2", "", 4, "failed", None, None, None, ""),
    ("MG1", "HOLOGIC", 5, "receiving", None, None, None, ""),
    ("MG1", "HOLOGIC", 40, "done", "flagged", 0.99, 1.0, "biopsy_malignant"),  # outside 30 days
]


def _add(db: Database) -> None:
    with db.session() as session:
        pacs = DestinationRow(name="pacs", kind="dimse", ae_title="PACS", host="pacs", port=104)
        session.add(pacs)
        session.flush()
        for k, (ae, maker, ago, state, category, score, minutes, truth) in enumerate(STUDIES):
            at = datetime.combine(TODAY - timedelta(days=ago), datetime.min.time()) + timedelta(hours=9)
            study = Study(study_instance_uid=f"1.2.7.{k}", state=state, calling_ae_title=ae,
                          manufacturer=maker, first_received_at=at, last_received_at=at, updated_at=at)
            session.add(study)
            session.flush()
            if category is None:
                continue
            analysis = Analysis(study_id=study.id, model_name="m", model_version="1", model_sha256="0" * 64,
                                operating_point=0.5, exam_score=score, category=category,
                                created_at=at + timedelta(minutes=minutes))
            session.add(analysis)
            session.flush()
            if k in (0, 3):  # two failed deliveries
                report = Report(analysis_id=analysis.id, kind="cad_sr", sop_class_uid="1.2",
                                sop_instance_uid=f"1.2.7.{k}.1", series_instance_uid="1.2.7", path="",
                                created_at=at)
                session.add(report)
                session.flush()
                session.add(Delivery(report_id=report.id, destination_id=pacs.id, state="dead",
                                     next_attempt_at=at, created_at=at))
            if truth:
                # an earlier word first: the latest ground truth counts
                session.add(Feedback(study_id=study.id, analysis_id=analysis.id, username="r",
                                     ground_truth="biopsy_benign" if truth == "biopsy_malignant" else "biopsy_malignant",
                                     created_at=at))
                session.add(Feedback(study_id=study.id, analysis_id=analysis.id, username="r",
                                     verdict="agree", ground_truth=truth, created_at=at))


@pytest.fixture
def stats_db(db_engine: str, tmp_path: Path, sqlite_template: Path) -> Iterator[Database]:
    """On SQLite here, on PostgreSQL in tests/integration/test_portal_postgresql.py."""
    with migrated_database(db_engine, tmp_path, sqlite_template) as database:
        _add(database)
        yield database


def test_counts_time_to_result_breakdowns_and_site_performance(stats_db: Database) -> None:
    with stats_db.session() as session:
        stats = compute(session, 30, TODAY)
    assert (stats.received, stats.analysed, stats.flagged) == (8, 5, 2)
    assert (stats.not_analysed, stats.failed, stats.pending) == (1, 1, 1)
    assert stats.flagged_rate == pytest.approx(2 / 5)
    waits = [120.0, 60.0, 180.0, 240.0, 300.0, 30.0]
    assert stats.time_to_result_p50 == pytest.approx(float(np.percentile(waits, 50)))
    assert stats.time_to_result_p95 == pytest.approx(float(np.percentile(waits, 95)))
    assert stats.deliveries_dead == 2 and stats.dead_by_destination == [("pacs", 2)]
    per_day = dict(stats.per_day)
    assert len(per_day) == 30 and per_day[TODAY] == 1 and per_day[TODAY - timedelta(days=1)] == 2
    assert per_day[TODAY - timedelta(days=3)] == 2 and sum(per_day.values()) == 8
    assert stats.score_histogram == [1, 0, 1, 1, 0, 0, 1, 0, 0, 1]
    by_ae = {b.name: (b.studies, b.analysed, b.flagged) for b in stats.by_ae}
    assert by_ae == {"MG1": (4, 3, 2), "MG2": (4, 2, 0)}
    by_maker = {b.name: b.studies for b in stats.by_manufacturer}
    assert by_maker == {"HOLOGIC": 4, "GE": 3, "(unknown)": 1}
    p = stats.performance
    # cancers: 0.92 flagged, 0.35 not; no cancer: 0.20 not flagged, 0.61 flagged
    assert (p.positives, p.negatives, p.true_positives, p.true_negatives) == (2, 2, 1, 1)
    assert p.sensitivity == 0.5 and p.specificity == 0.5
    assert p.auc == pytest.approx(roc_auc_score([1, 1, 0, 0], [0.92, 0.35, 0.20, 0.61]))
    with stats_db.session() as session:
        assert compute(session, 60, TODAY).received == 9


@pytest.fixture
def with_stats(db: Database) -> Database:
    _add(db)
    return db


def test_the_page_draws_its_charts_without_script_or_inline_style_and_the_api_agrees(
    client: TestClient[Litestar], with_stats: Database,
) -> None:
    sign_in(client, "vic")  # counts only: every role may look
    page = client.get("/statistics?days=3650")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'id="kpi-received">9<', html)
    assert html.count("<svg") == 3 and "<script" not in html and "style=" not in html
    assert "Fewer than 30 cases" in html
    api = client.get("/api/statistics?days=3650").json()
    assert api["received"] == 9 and api["site_performance"]["positives"] == 3
    assert api["by_calling_ae"][0]["name"] == "MG1"
    assert client.get("/statistics?days=0").status_code == 400


def test_radiologists_record_feedback_viewers_cannot_and_bad_values_are_refused(
    client: TestClient[Litestar], with_stats: Database, study: str,
) -> None:
    sign_in(client, "rita")
    token = csrf_token(client, f"/studies/{study}")
    saved = client.post(f"/studies/{study}/feedback", data={
        "verdict": "disagree", "ground_truth": "biopsy_benign", "comment": "benign cyst on US",
        "_csrf_token": token}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"].endswith("#feedback")
    page = client.get(f"/studies/{study}").text
    assert "benign cyst on US" in page and "disagrees" in page and "biopsy: benign" in page
    bad = client.post(f"/studies/{study}/feedback", data={
        "ground_truth": "probably fine", "_csrf_token": token})
    assert bad.status_code == 422 and "ground truth must be one of" in bad.text
    empty = client.post(f"/studies/{study}/feedback", data={"_csrf_token": token})
    assert empty.status_code == 422 and "say whether you agree" in empty.text
    with with_stats.session() as session:
        rows = session.scalars(select(Feedback).join(Study).where(Study.study_instance_uid == study)).all()
        audit = session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "feedback given")).all()
    assert [(f.username, f.verdict, f.ground_truth) for f in rows] == [("rita", "disagree", "biopsy_benign")]
    assert rows[0].analysis_id is not None and audit == ["verdict=disagree ground_truth=biopsy_benign"]

    client.post("/logout", data={"_csrf_token": csrf_token(client, "/")})
    sign_in(client, "vic")
    assert 'id="feedback-form"' not in client.get(f"/studies/{study}").text
    refused = client.post(f"/studies/{study}/feedback", data={
        "verdict": "agree", "_csrf_token": csrf_token(client, f"/studies/{study}")})
    assert refused.status_code == 403
