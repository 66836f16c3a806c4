from __future__ import annotations

import pytest

from mammogate.inference import Analyzer, ModelBundle, load_bundle


@pytest.fixture(scope="session")
def shipped_bundle() -> ModelBundle:
    return load_bundle(None)


@pytest.fixture(scope="session")
def analyzer(shipped_bundle: ModelBundle) -> Analyzer:
    return Analyzer(shipped_bundle)
