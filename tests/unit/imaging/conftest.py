from __future__ import annotations

import pytest
from pydicom import Dataset

from mammogate.training.synthetic import make_study


@pytest.fixture(scope="session")
def synthetic_lesion_study():  # type: ignore[no-untyped-def]
    return make_study(seed=31, lesion=True, rows=256, columns=208)


@pytest.fixture
def synthetic_ds(synthetic_lesion_study) -> Dataset:  # type: ignore[no-untyped-def]
    """A fresh copy of the synthetic R-CC dataset (chest wall on the right)."""
    from copy import deepcopy

    return deepcopy(synthetic_lesion_study.datasets[0])
