"""Shared fixtures: real peers on loopback (Orthanc, the node as a subprocess, PostgreSQL)."""

from __future__ import annotations

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
