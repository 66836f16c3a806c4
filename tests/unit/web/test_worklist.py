"""The worklist: server-side filters, search, sorting and paging, and the CSV export of exactly
the filtered set; the query on SQLite and on PostgreSQL, the pages through the portal."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.db import (
    Analysis,
    AnalysisImage,
    AuditEntry,
    Database,
    Delivery,
    DestinationRow,
    Report,
    Study,
)
from mammogate.web.studies.worklist import WorklistFilter, export_csv, list_studies, parse_filter
from tests.unit.databases import migrated_database
from tests.unit.web.portal_sample import sign_in

EXPECTED = ("RCC", "LCC", "RMLO", "LMLO")
DAY = datetime(2026, 11, 20, 9, 0, 0)

# uid suffix: (name, patient ID, accession, AE, days after DAY, state, score, category,
#              delivery states, analysed views)
SAMPLE = {
    "1": ("DUPONT^Hélène", "PID-100", "ACC100", "MODALITY1", 0, "done", 0.91, "flagged",
          ("delivered", "delivered"), ("RCC", "LCC", "RMLO", "LMLO")),
    "2": ("MARTIN^Anne", "PID-200", "ACC200", "MODALITY2", 1, "done", 0.12, "not_flagged",
          ("dead",), ("RCC", "LCC", "RMLO")),
    "3": ("BERNARD^Zoé", "PID-300", "ACC300", "MODALITY1", 2, "done", 0.55, "flagged",
          ("pending", "delivered"), ("RCC", "LCC", "RMLO", "LMLO")),
    "4": ("PETIT^Lou", "PID-400", "=HYPERLINK(1)", "PACS", 3, "skipped", None, "skipped", (), ()),
    "5": ("ROBERT^Eva", "50%_OFF", "ACC500", "MODALITY2", 4, "receiving", None, None, (), ()),
    "6": ("DURAND^Léa", "PID-600", "ACC600", "MODALITY1", 5, "failed", None, None, (), ()),
}


def _add_sample(db: Database) -> None:
    with db.session() as session:
        pacs = DestinationRow(name="pacs", kind="dimse", ae_title="PACS", host="pacs", port=104)
        session.add(pacs)
        session.flush()
        for suffix, (name, pid, acc, ae, days, state, score, category, deliveries, views) in SAMPLE.items():
            at = DAY + timedelta(days=days)
            study = Study(study_instance_uid=f"1.2.9.{suffix}", state=state, patient_name=name,
                          patient_id=pid, accession_number=acc, calling_ae_title=ae,
                          study_date=at.strftime("%Y%m%d"), instance_count=4,
                          first_received_at=at, last_received_at=at, updated_at=at)
            session.add(study)
            session.flush()
            if category is None:
                continue
            if suffix == "1":  # an earlier, superseded result must not count
                session.add(Analysis(study_id=study.id, model_name="m", model_version="1",
                                     model_sha256="0" * 64, operating_point=0.5, exam_score=0.01,
                                     category="not_flagged", created_at=at))
                session.flush()
            analysis = Analysis(study_id=study.id, model_name="m", model_version="1",
                                model_sha256="0" * 64, operating_point=0.5, exam_score=score,
                                category=category, created_at=at)
            session.add(analysis)
            session.flush()
            for view in views:
                session.add(AnalysisImage(analysis_id=analysis.id, sop_instance_uid=f"{suffix}.{view}",
                                          status="analysed", laterality=view[0], view=view[1:], score=score))
            for k, delivery_state in enumerate(deliveries):
                report = Report(analysis_id=analysis.id, kind="cad_sr", sop_class_uid="1.2",
                                sop_instance_uid=f"1.2.9.{suffix}.9{k}", series_instance_uid="1.2.9",
                                path="", created_at=at)
                session.add(report)
                session.flush()
                session.add(Delivery(report_id=report.id, destination_id=pacs.id, state=delivery_state,
                                     next_attempt_at=at, created_at=at))


@pytest.fixture
def sample_db(db_engine: str, tmp_path: Path, sqlite_template: Path) -> Iterator[Database]:
    """On SQLite here, on PostgreSQL in tests/integration/test_portal_postgresql.py."""
    with migrated_database(db_engine, tmp_path, sqlite_template) as database:
        _add_sample(database)
        yield database


def _uids(db: Database, **kwargs: object) -> list[str]:
    with db.session() as session:
        page = list_studies(session, 1, 50, WorklistFilter(**kwargs), EXPECTED)  # type: ignore[arg-type]
    assert page.total == len(page.studies)
    return [s.study_instance_uid.rsplit(".", 1)[1] for s in page.studies]


def test_each_filter_narrows_the_set_on_both_engines(sample_db: Database) -> None:
    assert _uids(sample_db) == ["6", "5", "4", "3", "2", "1"]  # newest first
    assert _uids(sample_db, category="flagged") == ["3", "1"]
    assert _uids(sample_db, category="failed") == ["6"]
    assert _uids(sample_db, category="pending") == ["5"]  # received, no result yet
    assert _uids(sample_db, score_min=0.5) == ["3", "1"]
    assert _uids(sample_db, score_min=0.1, score_max=0.6) == ["3", "2"]
    assert _uids(sample_db, calling_ae="MODALITY2") == ["5", "2"]
    assert _uids(sample_db, state="skipped") == ["4"]
    assert _uids(sample_db, delivery="dead") == ["2"]
    assert _uids(sample_db, delivery="pending") == ["3"]
    assert _uids(sample_db, delivery="delivered") == ["1"]
    assert _uids(sample_db, delivery="none") == ["4"]  # a result, nothing routed
    assert _uids(sample_db, received_from=date(2026, 11, 21), received_to=date(2026, 11, 22)) == ["3", "2"]
    assert _uids(sample_db, calling_ae="MODALITY1", category="flagged", score_min=0.6) == ["1"]


def test_search_finds_patient_id_accession_or_name_in_any_case_and_wildcards_are_literal(
    sample_db: Database,
) -> None:
    assert _uids(sample_db, q="pid-2") == ["2"]
    assert _uids(sample_db, q="acc30") == ["3"]
    assert _uids(sample_db, q="martin") == ["2"]
    assert _uids(sample_db, q="50%_") == ["5"]
    assert _uids(sample_db, q="%") == ["5"]  # only the ID that holds a % sign
    assert _uids(sample_db, q="_") == ["5"]
    assert _uids(sample_db, q="nobody") == []


def test_sorting_by_score_puts_studies_without_one_last_and_rows_say_views_and_delivery(
    sample_db: Database,
) -> None:
    assert _uids(sample_db, sort="score")[:3] == ["1", "3", "2"]
    assert _uids(sample_db, sort="score", descending=False)[:3] == ["2", "3", "1"]
    assert set(_uids(sample_db, sort="score")[3:]) == {"4", "5", "6"}
    assert _uids(sample_db, sort="patient", descending=False) == ["3", "1", "6", "2", "4", "5"]
    with sample_db.session() as session:
        rows = {s.study_instance_uid[-1]: s for s in list_studies(session, 1, 50, WorklistFilter(), EXPECTED).studies}
    assert (rows["1"].exam_score, rows["1"].category, rows["1"].delivery) == (0.91, "flagged", "delivered")
    assert (rows["1"].views_analysed, rows["1"].views_expected) == (4, 4)
    assert (rows["2"].views_analysed, rows["2"].delivery) == (3, "dead")
    assert (rows["5"].category, rows["5"].delivery, rows["5"].exam_score) == ("", "", None)


def test_the_csv_export_is_exactly_the_filtered_set_in_batches_and_cannot_run_formulas(
    sample_db: Database,
) -> None:
    worklist = WorklistFilter(calling_ae="MODALITY1")
    with sample_db.session() as session:
        chunks = list(export_csv(session, worklist, EXPECTED, batch=2))
    assert len(chunks) == 1 + 2  # header, then 3 studies in batches of 2
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert [r["study_instance_uid"] for r in rows] == ["1.2.9.6", "1.2.9.3", "1.2.9.1"]
    assert rows[2]["exam_score_percent"] == "91.0" and rows[2]["patient_name"] == "DUPONT^Hélène"
    assert rows[2]["views_analysed"] == "4" and rows[2]["delivery"] == "delivered"
    with sample_db.session() as session:
        everything = "".join(export_csv(session, WorklistFilter(), EXPECTED))
    accession = {r["study_instance_uid"]: r["accession_number"]
                 for r in csv.DictReader(io.StringIO(everything))}
    assert accession["1.2.9.4"] == "'=HYPERLINK(1)"


def test_bad_parameters_are_refused_with_the_parameter_named() -> None:
    cases = {
        "from": ({"from": "21/11/2026"}, "from must be a date"),
        "score": ({"score_min": "150"}, "score_min must be between 0 and 100"),
        "number": ({"score_max": "high"}, "score_max must be a number"),
        "category": ({"category": "positive"}, "category must be one of"),
        "sort": ({"sort": "name; drop table"}, "sort must be one of"),
        "order": ({"order": "up"}, "order must be asc or desc"),
        "dates": ({"from": "2026-11-22", "to": "2026-11-21"}, "after the received-to date"),
        "long": ({"q": "x" * 65}, "q is longer than 64"),
    }
    for name, (query, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            parse_filter(query)
        assert name
    assert parse_filter({"score_min": "50", "q": " PID ", "order": "asc"}) == WorklistFilter(
        score_min=0.5, q="PID", descending=False)


# Through the portal (SQLite) -------------------------------------------------------------------


@pytest.fixture
def sampled(db: Database) -> Database:
    _add_sample(db)
    return db


def _rows(html: str) -> int:
    return html.count('<tr class="study"')


def test_the_page_filters_sorts_pages_and_keeps_the_filters_in_its_links(
    client: TestClient[Litestar], sampled: Database,
) -> None:
    sign_in(client, "rita")
    page = client.get("/?category=flagged&sort=score")
    assert page.status_code == 200
    assert _rows(page.text) == 2 and "2 studies match the filters" in page.text
    assert page.text.index("1.2.9.1") < page.text.index("1.2.9.3")  # highest score first
    assert 'href="/worklist.csv?category=flagged&amp;sort=score"' in page.text
    assert 'aria-sort="descending"' in page.text
    assert 'value="flagged" selected' in page.text
    # the form submits every field, empty ones too: empty means "any"
    blank = client.get("/?q=&from=&to=&category=&score_min=&score_max=&ae=&state=&delivery=")
    assert blank.status_code == 200 and _rows(blank.text) == 6
    bad = client.get("/?score_min=abc")
    assert bad.status_code == 422 and "score_min must be a number" in bad.text
    api = client.get("/api/studies?q=pid-2").json()
    assert api["total"] == 1 and api["studies"][0]["patient_id"] == "PID-200"
    assert api["studies"][0]["delivery"] == "dead"
    assert client.get("/api/studies?state=bogus").status_code == 422


def test_paging_links_carry_the_filters(client: TestClient[Litestar], db: Database) -> None:
    with db.session() as session:
        for i in range(55):
            at = DAY + timedelta(minutes=i)
            session.add(Study(study_instance_uid=f"1.2.8.{i}", calling_ae_title="A" if i % 2 else "B",
                              first_received_at=at, last_received_at=at, updated_at=at))
    sign_in(client, "vic")
    odd = client.get("/?ae=A").text
    assert _rows(odd) == 27 and "Page" not in odd
    everything = client.get("/").text
    assert 'href="/?page=2"' in everything
    ascending = client.get("/?order=asc&sort=ae").text
    assert 'href="/?sort=ae&amp;order=asc&amp;page=2"' in ascending


def test_the_export_is_streamed_audited_and_needs_sign_in(
    client: TestClient[Litestar], sampled: Database,
) -> None:
    assert client.get("/worklist.csv", follow_redirects=False).status_code in (302, 303, 401)
    sign_in(client, "vic")
    response = client.get("/worklist.csv?delivery=dead")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["patient_id"] for r in rows] == ["PID-200"]
    with sampled.session() as session:
        audit = session.execute(
            select(AuditEntry.actor, AuditEntry.target).where(AuditEntry.action == "worklist exported")
        ).all()
    assert audit == [("vic", "delivery=dead")]
