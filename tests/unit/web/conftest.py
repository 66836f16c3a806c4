"""Fixtures for the portal: a migrated SQLite database in tmp_path (a copy of the run's
template), an app, users and a study."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from mammogate.config.settings import Settings, load_settings
from mammogate.db import (
    Database,
    Study,
    utcnow,
)
from mammogate.web import create_app, create_local_user
from tests.unit.databases import open_migrated
from tests.unit.web.portal_sample import (
    FAILED_UID,
    PASSWORDS,
    add_sample_study,
)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    return load_settings(None, node={"data_dir": str(tmp_path / "data")})


@pytest.fixture
def db(settings: Settings, sqlite_template: Path) -> Iterator[Database]:
    database = open_migrated(settings.database_url, sqlite_template)
    for username, role in (("ada", "admin"), ("rita", "radiologist"), ("vic", "viewer")):
        create_local_user(database, username, role, PASSWORDS[username])
    yield database
    database.dispose()


@pytest.fixture
def study(db: Database, settings: Settings) -> str:
    return add_sample_study(db, settings.data_dir)


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
