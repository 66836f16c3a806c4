"""Fixtures for the portal: a migrated SQLite database in tmp_path, an app, users and a study."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from portal_sample import (
    EXAM_SCORE,
    FAILED_UID,
    LEFT_CC,
    PASSWORDS,
    PATIENT_NAME,
    PNG_BYTES,
    RIGHT_MLO,
    SKIPPED,
    SR_UID,
    STUDY_UID,
)

from mammogate.config.settings import Settings, load_settings
from mammogate.db import (
    Analysis,
    AnalysisImage,
    Database,
    Delivery,
    DestinationRow,
    Finding,
    Report,
    Study,
    utcnow,
)
from mammogate.web import create_app, create_local_user


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    return load_settings(None, node={"data_dir": str(tmp_path / "data")})


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    database.migrate()
    for username, role in (("ada", "admin"), ("rita", "radiologist"), ("vic", "viewer")):
        create_local_user(database, username, role, PASSWORDS[username])
    yield database
    database.dispose()


@pytest.fixture
def study(db: Database, settings: Settings) -> str:
    """A done study with one analysis (two analysed images, one skipped), a finding, an SR."""
    overlay = settings.data_dir / "overlays" / "left_cc.png"
    overlay.parent.mkdir(parents=True)
    overlay.write_bytes(PNG_BYTES)
    now = utcnow()
    with db.session() as session:
        s = Study(
            study_instance_uid=STUDY_UID,
            state="done",
            accession_number="ACC1001",
            patient_name=PATIENT_NAME,
            patient_id="PID-1",
            study_date="20240315",
            instance_count=3,
            first_received_at=now - timedelta(minutes=5),
            last_received_at=now - timedelta(minutes=4),
            updated_at=now,
        )
        session.add(s)
        session.flush()
        a = Analysis(
            study_id=s.id,
            model_name="mammo-cnn",
            model_version="1.4.0",
            model_sha256="ab12cd34ef56" + "0" * 52,
            operating_point=0.42,
            exam_score=EXAM_SCORE,
            score_left=EXAM_SCORE,
            score_right=0.051234,
            category="flagged",
            created_at=now,
        )
        session.add(a)
        session.flush()
        session.add_all(
            [
                AnalysisImage(
                    analysis_id=a.id,
                    sop_instance_uid=LEFT_CC,
                    status="analysed",
                    laterality="L",
                    view="CC",
                    score=EXAM_SCORE,
                    overlay_path=str(overlay),
                ),
                AnalysisImage(
                    analysis_id=a.id,
                    sop_instance_uid=RIGHT_MLO,
                    status="analysed",
                    laterality="R",
                    view="MLO",
                    score=0.051234,
                ),
                AnalysisImage(
                    analysis_id=a.id,
                    sop_instance_uid=SKIPPED,
                    status="skipped",
                    reason="not a For Presentation image",
                ),
                Finding(
                    analysis_id=a.id,
                    sop_instance_uid=LEFT_CC,
                    laterality="L",
                    view="CC",
                    probability=0.812345,
                    center_column=1023.5,
                    center_row=2047.25,
                    outline=[[1000, 2000], [1050, 2000], [1050, 2100], [1000, 2000]],
                ),
            ]
        )
        dest = DestinationRow(
            name="pacs-main", kind="dimse", ae_title="PACS", host="pacs", port=104
        )
        report = Report(
            analysis_id=a.id,
            kind="cad_sr",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.88.50",
            sop_instance_uid=SR_UID,
            series_instance_uid=SR_UID + ".0",
            path="/spool/sr.dcm",
            created_at=now,
        )
        session.add_all([dest, report])
        session.flush()
        session.add(
            Delivery(
                report_id=report.id,
                destination_id=dest.id,
                state="dead",
                attempts=20,
                next_attempt_at=now,
                last_error="association rejected by PACS",
                created_at=now,
            )
        )
    return STUDY_UID


@pytest.fixture
def failed_study(db: Database) -> str:
    now = utcnow()
    with db.session() as session:
        session.add(
            Study(
                study_instance_uid=FAILED_UID,
                state="failed",
                accession_number="ACC1002",
                patient_name="MARTIN^Paul",
                instance_count=4,
                first_received_at=now,
                last_received_at=now,
                updated_at=now,
                last_error="pixel data of 1.2.3.4 does not decode: JPEG 2000 stream truncated",
            )
        )
    return FAILED_UID


@pytest.fixture
def app(settings: Settings, db: Database) -> Litestar:
    return create_app(settings, db)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app) as test_client:
        yield test_client
