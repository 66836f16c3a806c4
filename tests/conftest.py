"""Shared fixtures: real peers on loopback (Orthanc, the node as a subprocess, PostgreSQL)."""

from __future__ import annotations

import os
import shutil
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
