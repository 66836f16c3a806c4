"""What an admin does with a study from the portal: the routing dry run on its page and on an
edited configuration before it is saved, re-analysis and resending as jobs (the portal never
talks DICOM itself)."""

from __future__ import annotations

import json
import re

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select, update

from mammogate.config.settings import load_settings
from mammogate.db import AuditEntry, Database, Delivery, Job, RouteRow, Study
from mammogate.db.seed import apply_config
from tests.unit.web.portal_sample import csrf_token, sign_in

CONFIG = {
    "destinations": [{"name": "pacs-main", "kind": "dimse", "ae_title": "PACS", "host": "pacs", "port": 104}],
    "routes": [
        {"name": "flagged-only", "destinations": ["pacs-main"], "match": {"exam_category": ["flagged"]}},
        {"name": "ct-only", "destinations": ["pacs-main"], "match": {"modality": "CT"}},
    ],
}


def _seed(db: Database) -> None:
    with db.session() as session:
        apply_config(session, load_settings(None, **CONFIG), actor="test")


def _verdicts(page: str, table_id: str) -> dict[str, str]:
    table = re.search(rf'<table class="grid" id="{table_id}">(.*?)</table>', page, re.S)
    assert table, f"no table {table_id}"
    rows = re.findall(r'class="verdict fires-(\w+)" data-route="([^"]+)"', table.group(1))
    return {route: outcome for outcome, route in rows}


def test_an_admin_sees_where_the_study_goes_and_others_do_not(
    client: TestClient[Litestar], db: Database, study: str,
) -> None:
    _seed(db)
    sign_in(client, "rita")
    assert 'id="operations"' not in client.get(f"/studies/{study}").text
    client.post("/logout", data={"_csrf_token": csrf_token(client, "/")})
    sign_in(client, "ada")
    page = client.get(f"/studies/{study}").text
    assert _verdicts(page, "route-verdicts") == {"flagged-only": "yes", "ct-only": "no"}
    assert "modality: wants &#39;CT&#39;; the study has &#39;MG&#39; — does not hold" in page
    assert 'id="reanalyse"' in page and "Send the results again (1 delivery)" in page


def test_analyse_again_is_a_job_and_a_second_ask_is_refused_with_the_reason(
    client: TestClient[Litestar], db: Database, study: str,
) -> None:
    sign_in(client, "ada")
    token = csrf_token(client, f"/studies/{study}")
    done = client.post(f"/admin/studies/{study}/reanalyse", data={"_csrf_token": token},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/studies/{study}"
    with db.session() as session:
        job = session.scalars(select(Job)).one()
        assert (job.kind, job.state) == ("analyze", "pending")
        assert session.scalar(select(Study.state)) == "queued"
        assert session.scalar(select(AuditEntry.actor).where(AuditEntry.action == "study-reanalyse")) == "ada"
    page = client.get(f"/studies/{study}").text
    assert 'id="reanalyse"' not in page
    assert "Study " + study + " cannot be analysed again now" in page and "already queued" in page
    # the result shown stays, and the page no longer reloads itself under the reader's viewer
    assert 'id="analysis-under-way"' in page and 'http-equiv="refresh"' not in page
    assert 'id="resubmit-study"' not in page  # the old result is not resent while a new one comes
    resend = client.post(f"/admin/studies/{study}/resubmit", data={"_csrf_token": token})
    assert resend.status_code == 409 and "is being analysed again" in resend.text
    again = client.post(f"/admin/studies/{study}/reanalyse", data={"_csrf_token": token})
    assert again.status_code == 409 and "already queued" in again.text
    missing = client.post("/admin/studies/1.2.3/reanalyse", data={"_csrf_token": token})
    assert missing.status_code == 404 and "no study 1.2.3" in missing.text


def test_send_again_requeues_the_dead_delivery_and_says_so(
    client: TestClient[Litestar], db: Database, study: str,
) -> None:
    sign_in(client, "ada")
    token = csrf_token(client, f"/studies/{study}")
    done = client.post(f"/admin/studies/{study}/resubmit", data={"_csrf_token": token},
                       follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/studies/{study}?resubmitted=1#reports"
    with db.session() as session:
        delivery = session.scalars(select(Delivery)).one()
        assert (delivery.state, delivery.attempts) == ("pending", 0)
    page = client.get(done.headers["location"]).text
    assert "1 delivery queued to be sent again." in page
    assert 'id="resubmitted"' not in client.get(f"/studies/{study}?resubmitted=<b>").text


def test_a_route_change_is_tried_on_a_study_before_it_is_saved(
    client: TestClient[Litestar], db: Database, study: str,
) -> None:
    _seed(db)
    sign_in(client, "ada")
    token = csrf_token(client, "/admin/config")
    edited = dict(CONFIG, routes=[
        {"name": "everything", "destinations": ["pacs-main"], "stop": True},
        {"name": "flagged-only", "destinations": ["pacs-main"], "match": {"exam_category": ["flagged"]}},
    ])
    document = json.dumps(edited)
    answer = client.post("/admin/config", data={"document": document, "action": "dry-run",
                                                "study": "ACC1001", "_csrf_token": token})
    assert answer.status_code == 200, answer.text
    assert _verdicts(answer.text, "dry-run-verdicts") == {"everything": "yes", "flagged-only": "no"}
    assert "not evaluated: route &#39;everything&#39; fired and stops the evaluation" in answer.text
    assert "Dry run: not saved" in answer.text and json.loads(
        re.search(r'<textarea id="document"[^>]*>(.*?)</textarea>', answer.text, re.S)
        .group(1).replace("&#34;", '"').replace("&quot;", '"')) == edited  # type: ignore[union-attr]
    with db.session() as session:  # nothing saved; the look at the study's headers audited
        assert list(session.scalars(select(RouteRow.name).order_by(RouteRow.position))) == [
            "flagged-only", "ct-only"]
        assert session.scalar(select(AuditEntry.target).where(
            AuditEntry.action == "study routes viewed", AuditEntry.actor == "ada")) == study
    unknown = client.post("/admin/config", data={"document": document, "action": "dry-run",
                                                 "study": "ACC404", "_csrf_token": token})
    assert unknown.status_code == 422 and "no study with Study Instance UID or accession number" in unknown.text
    broken = client.post("/admin/config", data={"document": document.replace('"pacs-main"]', '"nowhere"]'),
                                                "action": "dry-run", "study": study, "_csrf_token": token})
    assert broken.status_code == 422 and "nowhere" in broken.text


def test_the_job_queue_shows_what_each_job_does_and_a_failed_analysis_can_be_asked_again(
    client: TestClient[Litestar], db: Database, study: str,
) -> None:
    from datetime import timedelta

    from mammogate.db import utcnow

    now = utcnow()
    with db.session() as session:
        study_id = session.scalar(select(Study.id))
        session.add_all([
            Job(kind="analyze", study_id=study_id, state="failed", attempts=3, run_after=now,
                last_error="pixel data do not decode (transfer syntax 1.2.840.10008.1.2.4.50)",
                created_at=now - timedelta(minutes=2), finished_at=now),
            Job(kind="test_destination", target="pacs-main", state="running", attempts=1,
                run_after=now, locked_by="sender-1", lease_until=now + timedelta(seconds=30),
                created_at=now),
        ])
    sign_in(client, "ada")
    page = client.get("/admin/jobs").text
    rows = re.findall(r'<tr data-job="(\d+)" class="job state-(\w+)">', page)
    assert [state for _, state in rows] == ["running", "failed"]  # newest first
    assert "pixel data do not decode" in page and "sender-1" in page and "pacs-main" in page
    assert "failed: 1" in page and "running: 1" in page
    failed = client.get("/admin/jobs?state=failed&kind=analyze").text
    assert len(re.findall(r'<tr data-job=', failed)) == 1
    assert f'action="/admin/studies/{study}/reanalyse"' not in failed  # the study has a result
    with db.session() as session:
        session.execute(update(Study).values(state="failed"))
    failed = client.get("/admin/jobs?state=failed&kind=analyze").text
    assert f'action="/admin/studies/{study}/reanalyse"' in failed
    bad = client.get("/admin/jobs?state=lost")
    assert bad.status_code == 422 and "state must be one of" in bad.text
    client.post("/logout", data={"_csrf_token": csrf_token(client, "/")})
    sign_in(client, "rita")
    assert client.get("/admin/jobs", follow_redirects=False).status_code == 403
