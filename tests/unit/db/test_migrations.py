"""The migrations make the models' schema, and the newest one (0016: where on the breast each
finding lies) upgrades a database with findings in it and downgrades again (SQLite and
PostgreSQL)."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from mammogate.db import Analysis, Database, Finding, Study, utcnow
from mammogate.db.engine import MIGRATIONS_DIR
from mammogate.db.models import Base

LOCATION_COLUMNS = {"clock_hour", "region", "orientation_assumed"}


def _alembic(db: Database, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.connect() as connection:
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)
        if connection.in_transaction():
            connection.commit()


def _finding_columns(db: Database) -> set[str]:
    with db.engine.connect() as connection:
        return {c["name"] for c in inspect(connection).get_columns("findings")}


def test_the_migrations_make_the_models_schema(db: Database) -> None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_finding_location_upgrades_existing_findings_and_downgrades(db: Database) -> None:
    now = utcnow()
    with db.session() as session:
        study = Study(study_instance_uid="1.2.3", first_received_at=now, last_received_at=now, updated_at=now)
        session.add(study)
        session.flush()
        analysis = Analysis(study_id=study.id, model_name="m", model_version="1", model_sha256="0" * 64,
                            operating_point=0.5, category="flagged", created_at=now)
        session.add(analysis)
        session.flush()
        session.add(Finding(analysis_id=analysis.id, sop_instance_uid="1.2.3.1", laterality="R", view="CC",
                            probability=0.9, center_column=1.0, center_row=2.0, outline=[],
                            clock_hour=10, region="upper outer quadrant"))
    assert LOCATION_COLUMNS <= _finding_columns(db)
    _alembic(db, "downgrade", "0015")
    assert not LOCATION_COLUMNS & _finding_columns(db)
    assert "nipple_distance_mm" in _finding_columns(db)
    _alembic(db, "upgrade", "head")
    assert LOCATION_COLUMNS <= _finding_columns(db)
    with db.session() as session:
        # a finding recorded before 0016: no clock hour, region unknown, nothing assumed
        row = session.scalars(select(Finding)).one()
        assert (row.clock_hour, row.region, row.orientation_assumed, row.probability) == (None, "", False, 0.9)
