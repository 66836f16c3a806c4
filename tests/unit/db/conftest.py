"""The database tests run on SQLite and on PostgreSQL (a database of its own on the local
server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mammogate.db import Database
from tests.peers import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'q.sqlite3'}")
        database.migrate()
        yield database
        database.dispose()
    else:
        with postgres_database() as url:
            database = Database(url)
            database.migrate()
            yield database
            database.dispose()
