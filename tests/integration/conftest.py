"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_scp import RunningScp


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[RunningScp]:
    """An SCP on a free loopback port, accepting any calling AE, on its own SQLite database."""
    running = RunningScp(tmp_path / "node", allowed=[])
    try:
        yield running
    finally:
        running.scp.stop()
        running.db.dispose()
