"""The database tests run on SQLite here (a copy of the run's migrated template) and again on
PostgreSQL in tests/integration/test_db_postgresql.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mammogate.db import Database
from tests.unit.databases import migrated_database


@pytest.fixture
def db(db_engine: str, tmp_path: Path, sqlite_template: Path) -> Iterator[Database]:
    with migrated_database(db_engine, tmp_path, sqlite_template) as database:
        yield database
