"""Purging a study (wrong patient, an erasure request): every row and file made from it goes,
the audit log keeps the record; from the portal (admins, confirmed) and from the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from mammogate.config.settings import Settings
from mammogate.db import (
    Analysis,
    AnalysisImage,
    AuditEntry,
    Database,
    Delivery,
    Feedback,
    Finding,
    Instance,
    Job,
    Report,
    Study,
    utcnow,
)
from tests.unit.web.portal_sample import STUDY_UID, csrf_token, sign_in

TABLES = (Study, Instance, Analysis, AnalysisImage, Finding, Report, Delivery, Feedback, Job)


def _spool_file(db: Database, settings: Settings) -> Path:
    """Give the sample study's instances real files in the spool, and a feedback row."""
    folder = settings.data_dir / "spool" / STUDY_UID
    folder.mkdir(parents=True, exist_ok=True)
    with db.session() as session:
        study = session.scalars(select(Study)).one()
        for k, instance in enumerate(session.scalars(select(Instance))):
            instance.path = str(folder / f"{k}.dcm")
            Path(instance.path).write_bytes(b"DICM")
        session.add(Feedback(study_id=study.id, username="rita", verdict="agree", created_at=utcnow()))
    return folder


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}


def test_an_admin_purges_a_study_after_typing_its_accession_and_nothing_of_it_is_left(
    client: TestClient[Litestar], db: Database, settings: Settings, study: str,
) -> None:
    spool = _spool_file(db, settings)
    sign_in(client, "ada")
    page = client.get(f"/studies/{study}").text
    assert 'id="purge"' in page
    token = csrf_token(client, f"/studies/{study}")
    wrong = client.post(f"/admin/studies/{study}/purge", data={
        "confirm": "ACC9999", "reason": "wrong patient", "_csrf_token": token})
    assert wrong.status_code == 422 and "accession number" in wrong.text
    assert _counts(db)["studies"] == 1
    no_reason = client.post(f"/admin/studies/{study}/purge", data={
        "confirm": "ACC1001", "reason": "", "_csrf_token": token})
    assert no_reason.status_code == 422 and "say why" in no_reason.text

    done = client.post(f"/admin/studies/{study}/purge", data={
        "confirm": "ACC1001", "reason": "wrong patient", "_csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/?purged=1"
    assert set(_counts(db).values()) == {0}
    assert not spool.exists()
    assert not (settings.data_dir / "reports" / STUDY_UID).exists()
    assert not (settings.data_dir / "overlays" / "left_cc.png").exists()
    assert not (settings.data_dir / "overlays" / "left_cc.heatmap.png").exists()
    assert client.get(f"/studies/{study}").status_code == 404
    with db.session() as session:
        purged = session.execute(select(AuditEntry.actor, AuditEntry.detail)
                                 .where(AuditEntry.action == "study purged")).one()
    assert purged.actor == "ada" and purged.detail.startswith("wrong patient; 3 image(s)")
    assert "1 analysis(es), 1 result object(s), 1 delivery(ies)" in purged.detail


@pytest.mark.slow
def test_radiologists_cannot_purge_and_the_cli_needs_yes_and_a_reason(
    client: TestClient[Litestar], db: Database, settings: Settings, study: str, tmp_path: Path,
) -> None:
    sign_in(client, "rita")
    assert 'id="purge"' not in client.get(f"/studies/{study}").text
    refused = client.post(f"/admin/studies/{study}/purge", data={
        "confirm": "ACC1001", "reason": "wrong patient", "_csrf_token": csrf_token(client, "/")})
    assert refused.status_code == 403
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{settings.data_dir}"\n')
    base = [sys.executable, "-m", "mammogate.cli", "study", "purge", STUDY_UID, "--config", str(config)]
    unconfirmed = subprocess.run([*base, "--reason", "erasure request"], capture_output=True, text=True)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert _counts(db)["studies"] == 1
    run = subprocess.run([*base, "--reason", "erasure request", "--yes"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "purged: 3 image(s), 1 analysis(es)" in run.stdout
    assert set(_counts(db).values()) == {0}
    again = subprocess.run([*base, "--reason", "erasure request", "--yes"], capture_output=True, text=True)
    assert again.returncode == 1 and "no study" in again.stderr


@pytest.mark.slow
def test_the_cli_lists_a_studys_deliveries(db: Database, settings: Settings, study: str, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{settings.data_dir}"\n')
    run = subprocess.run([sys.executable, "-m", "mammogate.cli", "delivery", "list", "--study", STUDY_UID,
                          "--config", str(config)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "dead" in run.stdout and "pacs-main" in run.stdout
    other = subprocess.run([sys.executable, "-m", "mammogate.cli", "delivery", "list", "--study", "9.9.9",
                            "--config", str(config)], capture_output=True, text=True)
    assert other.returncode == 0 and "pacs-main" not in other.stdout
