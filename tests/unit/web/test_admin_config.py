"""Peers, destinations and routes edited in the portal as one JSON document: validated as the
configuration file is, applied and audited; destination tests queued for the sender."""

from __future__ import annotations

import html
import json
import re

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import select

from mammogate.config.settings import load_settings
from mammogate.db import AllowedPeer, AuditEntry, Database, Job, RouteRow
from mammogate.db.seed import apply_config
from tests.unit.web.portal_sample import csrf_token, sign_in

CONFIG = {
    "dicom": {"peers": [{"ae_title": "MODALITY1", "hosts": ["10.0.0.5"], "description": "room 2"}]},
    "destinations": [{"name": "pacs", "kind": "dimse", "ae_title": "PACS", "host": "10.0.0.9", "port": 104},
                     {"name": "ohif", "kind": "stow", "url": "https://pacs.example.org/dicom-web"}],
    "routes": [{"name": "flagged-to-pacs", "destinations": ["pacs"], "match": {"modality": "MG"},
                "objects": ["cad_sr", "sc_overlay"]}],
}


def _seed(db: Database) -> None:
    with db.session() as session:
        apply_config(session, load_settings(None, **CONFIG), actor="test")


def _document(page: str) -> dict:  # type: ignore[type-arg]
    match = re.search(r'<textarea id="document"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, "the page holds the document"
    return json.loads(html.unescape(match.group(1)))  # type: ignore[no-any-return]


def _save(client: TestClient[Litestar], document: str):  # type: ignore[no-untyped-def]
    return client.post("/admin/config", data={"document": document,
                                              "_csrf_token": csrf_token(client, "/admin/config")})


def test_the_page_shows_what_the_database_holds_and_a_change_is_applied_and_audited(
    client: TestClient[Litestar], db: Database,
) -> None:
    _seed(db)
    sign_in(client, "ada")
    document = _document(client.get("/admin/config").text)
    assert document["peers"] == [{"ae_title": "MODALITY1", "hosts": ["10.0.0.5"], "description": "room 2"}]
    assert [d["name"] for d in document["destinations"]] == ["ohif", "pacs"]
    assert document["routes"][0]["match"] == {"modality": ["MG"]}  # clauses as lists, as stored

    unchanged = _save(client, json.dumps(document))
    assert unchanged.status_code == 200 and "Nothing changed" in unchanged.text

    document["routes"][0]["match"] = {"modality": "MG", "calling_ae_title": "MODALITY1"}
    document["routes"][0]["stop"] = True
    document["peers"].append({"ae_title": "MODALITY2"})
    saved = _save(client, json.dumps(document))
    assert saved.status_code == 200 and 'id="config-saved"' in saved.text
    assert _document(saved.text)["routes"][0]["stop"] is True
    with db.session() as session:
        route = session.scalars(select(RouteRow)).one()
        peers = session.scalars(select(AllowedPeer.ae_title).order_by(AllowedPeer.ae_title)).all()
        audit = session.execute(select(AuditEntry.actor, AuditEntry.detail)
                                .where(AuditEntry.action == "config-apply").order_by(AuditEntry.id)).all()
    assert route.stop is True and "calling_ae_title" in route.match
    assert peers == ["MODALITY1", "MODALITY2"]
    assert audit[-1].actor == "ada" and "MODALITY2" in audit[-1].detail


def test_an_invalid_document_is_refused_with_the_key_named_and_nothing_changes(
    client: TestClient[Litestar], db: Database,
) -> None:
    _seed(db)
    sign_in(client, "ada")
    document = _document(client.get("/admin/config").text)
    cases = {
        "unknown destination": ({**document, "routes": [{"destinations": ["nowhere"]}]}, "nowhere"),
        "unknown match key": ({**document, "routes": [{"destinations": ["pacs"], "match": {"colour": "red"}}]}, "colour"),
        "bad AE title": ({**document, "peers": [{"ae_title": "A TITLE MUCH TOO LONG FOR DICOM"}]}, "ae_title"),
        "unknown section": ({**document, "users": []}, "users"),
    }
    for name, (bad, named) in cases.items():
        response = _save(client, json.dumps(bad))
        assert response.status_code == 422, name
        assert "Not saved" in response.text and named in html.unescape(response.text), name
    broken = _save(client, "{\n  \"routes\": [\n}")
    assert broken.status_code == 422 and "line 3" in broken.text
    with db.session() as session:
        assert [r.name for r in session.scalars(select(RouteRow))] == ["flagged-to-pacs"]


def test_a_destination_test_is_a_job_for_the_sender_with_a_page_of_its_own(
    client: TestClient[Litestar], db: Database,
) -> None:
    _seed(db)
    sign_in(client, "ada")
    queued = client.post("/admin/destinations/pacs/test", data={"_csrf_token": csrf_token(client, "/admin/config")},
                         follow_redirects=False)
    assert queued.status_code == 303
    page = client.get(queued.headers["location"]).text
    assert 'id="job-state">pending' in page and 'http-equiv="refresh"' in page
    with db.session() as session:
        job = session.scalars(select(Job)).one()
    assert (job.kind, job.target, job.state) == ("test_destination", "pacs", "pending")
    missing = client.post("/admin/destinations/nowhere/test",
                          data={"_csrf_token": csrf_token(client, "/admin/config")})
    assert missing.status_code == 404
    assert client.get("/admin/jobs/999999").status_code == 404
