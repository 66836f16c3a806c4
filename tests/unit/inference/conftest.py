from __future__ import annotations

from pathlib import Path

import pytest

from mammogate.inference import Analyzer, ModelBundle, load_bundle
from tests.tiny_bundle import write_tiny_bundle


@pytest.fixture(scope="session")
def shipped_bundle() -> ModelBundle:
    return load_bundle(None)


@pytest.fixture(scope="session")
def analyzer(shipped_bundle: ModelBundle) -> Analyzer:
    return Analyzer(shipped_bundle)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """A deterministic centre-surround model on a 256 x 160 grid (see tests/tiny_bundle.py)."""
    return load_bundle(write_tiny_bundle(Path(tmp_path_factory.mktemp("tiny")) / "bundle"))


@pytest.fixture(scope="session")
def tiny_analyzer(tiny_bundle: ModelBundle) -> Analyzer:
    return Analyzer(tiny_bundle)
