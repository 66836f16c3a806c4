"""The database tests run on SQLite and on PostgreSQL (a database of its own on the local
server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mammogate.db import Database
from tests.peers import migrated_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database
