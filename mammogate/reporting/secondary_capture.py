"""Secondary Capture per analysed view, for PACS that show neither SR: the view with the
heatmap and the marks burned in (the very picture the portal shows, from one renderer:
``imaging.render``), captioned with the scores, the model's name and version and "NOT FOR
CLINICAL USE". A new series in the study, built with highdicom.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from mammogate import __version__
from mammogate.imaging.render import captioned
from mammogate.inference.results import ImageResult, StudyResult
from mammogate.reporting.cad_sr import (
    MANUFACTURER,
    copy_source_attributes,
    index_sources,
    sanitised,
)

SERIES_DESCRIPTION = "mammogate heatmaps (NOT FOR CLINICAL USE)"
SERIES_NUMBER = 9003
_SIDE = {"L": "left", "R": "right"}


def caption(result: StudyResult, image: ImageResult) -> list[str]:
    """The lines burned in under the picture."""
    exam = "n/a" if result.exam_score is None else f"{100 * result.exam_score:.1f} %"
    category = {"flagged": "FLAGGED", "not_flagged": "not flagged"}.get(result.category,
                                                                        result.category)
    return [
        f"{image.laterality}{image.view}  image {100 * image.score:.1f} %  "
        f"{_SIDE[image.laterality]} breast {100 * result.breast_scores[image.laterality]:.1f} %",
        f"exam {exam} ({category}); {len(image.findings)} mark(s)",
        f"{result.model.name} {result.model.version} (mammogate {__version__})",
        "NOT FOR CLINICAL USE - research and decision support only",
    ]


def build_secondary_captures(result: StudyResult, sources: Sequence[Dataset]) -> list[Dataset]:
    """One Secondary Capture per analysed view that has a rendering; [] when none has."""
    headers = index_sources(result, sources)
    series_uid = generate_uid()
    captures: list[Dataset] = []
    for number, image in enumerate((i for i in result.images if i.overlay_png), start=1):
        assert image.overlay_png is not None
        source = headers[image.sop_instance_uid]
        reference = sanitised(source)  # highdicom copies patient and study from it
        reference.StudyInstanceUID = result.study_instance_uid
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference,
            pixel_array=captioned(image.overlay_png, caption(result, image)),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=number,
            manufacturer=MANUFACTURER,
            laterality=image.laterality,
            # a placeholder highdicom accepts (single letters only); replaced by the source's
            # own below, which mammography writes with compound values such as P\FL
            patient_orientation=("P", "L"),
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
        # the picture keeps the view's orientation (same flips, only scaled), when the view
        # states a valid one (digitised film may not)
        setattr(sc, "PatientOrientation", _orientation(source))  # noqa: B010 -- CS, VM 2 or empty
        copy_source_attributes(sc, source)
        sc.SeriesDescription = SERIES_DESCRIPTION
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = "NOT FOR CLINICAL USE"
        sc.DerivationDescription = (
            f"heatmap of {result.model.name} {result.model.version} (sha256 "
            f"{result.model.sha256 or 'unknown'}) blended over the view")[:1024]
        sc.SourceImageSequence = [_source_reference(source)]
        captures.append(sc)
    return captures


def _orientation(source: Dataset) -> list[str] | str:
    value = source.get("PatientOrientation")
    values = ([str(v).strip().upper() for v in value]
              if isinstance(value, Sequence) and not isinstance(value, str) else [])
    if len(values) == 2 and all(v and set(v) <= set("LRAPHF") for v in values):
        return values
    return ""  # Type 2C: empty rather than invalid


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item
