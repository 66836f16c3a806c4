"""Migrated databases for the unit tests without running every migration per test: on SQLite a
copy of the run's template (``sqlite_template``, tests/conftest.py); on PostgreSQL (where
tests/integration runs some of these tests again) a database of its own, migrated."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mammogate.db import Database
from tests import peers


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL, None for an in-memory or another engine's URL."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///"))
    return None


def copy_template(template: Path, url: str) -> None:
    """Put a copy of the migrated ``template`` where the SQLite ``url`` points."""
    path = sqlite_path(url)
    assert path is not None, f"{url} is not a SQLite file"
    for existing in (path, path.with_name(path.name + "-wal")):
        assert not existing.exists(), f"{existing} exists: a copy never replaces a database"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)


def open_migrated(url: str, template: Path) -> Database:
    """The database at ``url``, at the head revision: a copy of ``template`` on SQLite (no
    migration runs), migrated on any other engine."""
    if sqlite_path(url) is not None:
        copy_template(template, url)
        return Database(url)
    database = Database(url)
    database.migrate()
    return database


@contextmanager
def migrated_database(engine: str, tmp_path: Path, template: Path) -> Iterator[Database]:
    """``tests.peers.migrated_database`` with its SQLite database copied from ``template``."""
    if engine != "sqlite":
        with peers.migrated_database(engine, tmp_path) as database:
            yield database
        return
    database = open_migrated(f"sqlite:///{tmp_path / 'test.sqlite3'}", template)
    try:
        yield database
    finally:
        database.dispose()
