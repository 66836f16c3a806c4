"""Shared fixtures: real peers on loopback (Orthanc, the node as a subprocess, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import Orthanc


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc").start()
    try:
        yield pacs
    finally:
        pacs.stop()
