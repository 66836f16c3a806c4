"""Fixtures for the reporting tests: a study UID, a source image factory, a model."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from mammogate.inference.results import ModelInfo

from .factories import SourceFactory, source_factory


@pytest.fixture
def study_uid() -> str:
    return generate_uid()


@pytest.fixture
def make_source(study_uid: str) -> SourceFactory:
    return source_factory(study_uid)


@pytest.fixture
def model() -> ModelInfo:
    return ModelInfo(name="MammoNet", version="1.2.0", sha256="ab" * 32, operating_point=0.4)
