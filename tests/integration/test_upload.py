"""Ad-hoc analysis from the portal: a real mammogram (mini-MIAS PNG) uploaded, analysed by the
worker with the shipped model, shown on the study page, never routed; bad uploads refused."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient
from PIL import Image
from sqlalchemy import select

from mammogate.analysis import AnalysisWorker
from mammogate.config.settings import Settings, load_settings
from mammogate.db import Analysis, AuditEntry, Database, Delivery, Report, Study
from mammogate.db.seed import seed_if_first_start
from mammogate.inference import Analyzer, load_bundle
from mammogate.web import create_app, create_local_user
from tests.shared_data import shared_file
from tests.unit.web.portal_sample import PASSWORDS, csrf_token, sign_in


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Database]]:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    # a route that sends every result to a PACS: an upload must still go nowhere
    settings = load_settings(None, node={"data_dir": str(tmp_path / "data")}, destinations=[
        {"name": "pacs", "kind": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}],
        routes=[{"destinations": ["pacs"]}])
    db = Database(settings.database_url)
    db.migrate()
    with db.session() as session:
        seed_if_first_start(session, settings)
    for user in ("rita", "vic"):
        create_local_user(db, user, "radiologist" if user == "rita" else "viewer", PASSWORDS[user])
    yield settings, db
    db.dispose()


def _upload(client: TestClient, data: bytes, name: str, **fields: str):  # type: ignore[no-untyped-def,type-arg]
    return client.post("/upload", files={"file": (name, data, "application/octet-stream")},
                       data={**fields, "_csrf_token": csrf_token(client, "/upload")}, follow_redirects=False)


def test_a_real_mammogram_uploaded_is_analysed_by_the_worker_and_never_routed(
    node: tuple[Settings, Database],
) -> None:
    settings, db = node
    picture = shared_file("mias", "mdb004.png").read_bytes()
    with TestClient(create_app(settings, db)) as client:
        sign_in(client, "rita")
        sent = _upload(client, picture, "mdb004.png", laterality="L", view="MLO")
        assert sent.status_code == 303, sent.text
        study_uid = sent.headers["location"].rsplit("/", 1)[1]
        waiting = client.get(f"/studies/{study_uid}").text
        assert 'http-equiv="refresh"' in waiting and "queued" in waiting

        worker = AnalysisWorker(settings, db, "test-worker", lambda: Analyzer(load_bundle()))
        worker.start_model()
        assert worker.run_once() is True

        page = client.get(f"/studies/{study_uid}").text
        assert 'http-equiv="refresh"' not in page
        assert re.search(r'class="value exam-score" data-score="[0-9.e-]+"', page)
        worklist = client.get("/?ae=PORTAL-UPLOAD").text
        assert study_uid in worklist
    with db.session() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        analysis = session.scalars(select(Analysis).where(Analysis.study_id == study.id)).one()
        reports = session.scalars(select(Report.kind).where(Report.analysis_id == analysis.id)).all()
        deliveries = session.scalars(select(Delivery)).all()
        audit = session.scalars(select(AuditEntry.actor).where(AuditEntry.action == "study uploaded")).all()
    assert (study.source, study.state) == ("upload", "done")
    assert analysis.category in ("flagged", "not_flagged"), "the intended-use gate took the picture"
    assert reports == ["cad_sr"] and deliveries == [], "analysed, and routed nowhere"
    assert audit == ["rita"]


def test_bad_uploads_are_refused_with_the_reason_and_viewers_cannot_upload(node: tuple[Settings, Database]) -> None:
    settings, db = node
    bomb = io.BytesIO()
    Image.new("L", (1, 1)).save(bomb, format="PNG")
    header_says_huge = bomb.getvalue().replace((1).to_bytes(4, "big") * 2, (20000).to_bytes(4, "big") * 2, 1)
    with TestClient(create_app(settings, db)) as client:
        sign_in(client, "rita")
        text = _upload(client, b"not an image at all", "notes.txt", laterality="L", view="CC")
        assert text.status_code == 422 and "neither DICOM nor a readable PNG or JPEG" in text.text
        png = io.BytesIO()
        Image.new("L", (64, 64)).save(png, format="PNG")
        unsaid = _upload(client, png.getvalue(), "x.png")
        assert unsaid.status_code == 422 and "which breast" in unsaid.text
        huge = _upload(client, header_says_huge, "huge.png", laterality="L", view="CC")
        assert huge.status_code == 422 and ("more than" in huge.text or "neither DICOM" in huge.text)
        empty = _upload(client, b"", "empty.dcm")
        assert empty.status_code in (400, 422)
    with TestClient(create_app(settings, db)) as viewer:
        sign_in(viewer, "vic")
        assert viewer.get("/upload").status_code == 403
    with db.session() as session:
        assert session.scalars(select(Study)).all() == []
