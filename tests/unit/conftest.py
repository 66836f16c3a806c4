"""Fixtures for every unit test: the database engine (SQLite here; tests/integration runs the
engine-sensitive tests again on PostgreSQL) and argon2 at its lowest cost for local passwords.

Unit tests need no peer: no PostgreSQL, no DCMTK, Orthanc or validator, no network.
"""

from __future__ import annotations

import pytest

from tests.unit.passwords import CHEAP_ARGON2, CHEAP_DUMMY_HASH, ProductionArgon2


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> ProductionArgon2:
    """Local passwords hashed and verified at argon2's lowest cost during the test; returns the
    production hasher it stands in for (test_portal_auth.py checks its parameters)."""
    from mammogate.web.auth import users

    production = ProductionArgon2(users._hasher, users._DUMMY_HASH)
    monkeypatch.setattr(users, "_hasher", CHEAP_ARGON2)
    monkeypatch.setattr(users, "_DUMMY_HASH", CHEAP_DUMMY_HASH)
    return production


@pytest.fixture
def db_engine() -> str:
    """The engine of the databases the tests make: "sqlite" (tests/integration/*_postgresql.py
    override it with "postgresql")."""
    return "sqlite"


@pytest.fixture
def database_url() -> str:
    """The embedded SQLite only ("": the default file under the data folder); the PostgreSQL
    runs of the same tests are in tests/integration."""
    return ""
