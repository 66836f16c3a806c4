"""Shared fixtures: real peers on loopback (Orthanc, the node as a subprocess, PostgreSQL), and
one SQLite database migrated per test run that tests copy instead of migrating their own."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import Orthanc, postgres_database


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc").start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The same test on the embedded SQLite ("") and on a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield ""
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file migrated to head once per test run: a test copies it
    (``tests/unit/databases.py``) rather than running every Alembic migration again.

    Closed and checkpointed before anyone copies it: the copy is one complete file, with no
    write-ahead log beside it that it would need.
    """
    from mammogate.db import Database

    path = tmp_path_factory.mktemp("template") / "migrated.sqlite3"
    database = Database(f"sqlite:///{path}")
    database.migrate()
    database.dispose()
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()  # the last connection to close removes the -wal file
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, f"{wal} still holds pages"
    return path


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """A folder kept after the run for what a person should look at (the browser tests'
    screenshots): ``$MAMMOGATE_TEST_ARTIFACTS`` or ``test-artifacts/`` in the checkout, one
    folder per test, emptied when the test starts."""
    root = Path(os.environ.get("MAMMOGATE_TEST_ARTIFACTS") or ARTIFACTS)
    folder = root / request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder
