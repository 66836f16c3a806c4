"""The Secondary Capture: none without an analysed view. (One per analysed view, valid under
dciodvfy, captioned, the portal's very picture: tests/integration/test_dicom_validators.py.)"""

from __future__ import annotations

from mammogate.inference.results import ModelInfo
from mammogate.reporting.objects import OBJECT_BUILDERS

from .factories import SourceFactory, skipped, study_result


def test_no_analysed_view_no_capture(make_source: SourceFactory, study_uid: str,
                                     model: ModelInfo) -> None:
    source = make_source("R", "CC")
    result = study_result(study_uid, model, (), (skipped(source, failed=True),))
    assert OBJECT_BUILDERS["sc_overlay"](result, [source], ()) == []
