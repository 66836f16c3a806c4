"""Where the real data shared beside the project lives (never inside the repository).

``../shared/data`` from the repository root, or ``$MAMMOGATE_SHARED_DATA``. When it is absent,
tests that need it skip with a clear message, unless ``MAMMOGATE_REQUIRE_SHARED_DATA=1`` says
that they must fail instead (CI with the data mounted).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The shared data directory, or skip (fail when it is required) the calling test."""
    configured = os.environ.get("MAMMOGATE_SHARED_DATA")
    candidate = Path(configured) if configured else REPOSITORY_ROOT / ".." / "shared" / "data"
    if candidate.is_dir():
        return candidate.resolve()
    message = (
        f"shared real data not found at {candidate} "
        "(set MAMMOGATE_SHARED_DATA to its directory)"
    )
    if os.environ.get("MAMMOGATE_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message + "; MAMMOGATE_REQUIRE_SHARED_DATA=1 requires it")
    pytest.skip(message)


def shared_file(*parts: str) -> Path:
    """A file under the shared data directory (skip or fail as ``shared_data_dir`` does)."""
    path = shared_data_dir().joinpath(*parts)
    if not path.is_file():
        message = f"shared data file {path} is missing"
        if os.environ.get("MAMMOGATE_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
