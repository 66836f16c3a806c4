"""DICOM result objects built from inference results and the source image headers.

This package owns the Mammography CAD SR (TID 4000): building it from a
:class:`mammogate.inference.results.StudyResult`, reading its findings back, and writing it
to disk atomically. It imports only the result types from ``inference`` (no TensorFlow).

Exceptions::

    ReportingError                      base of everything raised here on purpose
    ├── SourceMismatchError (ValueError)  source headers missing or from another study
    ├── ReportParseError (ValueError)     not a Mammography CAD SR this package can read
    └── ReportWriteError (OSError)        the report could not be written durably

The template helper classes (:mod:`mammogate.reporting.cad_templates`) validate in their
constructors and raise plain ``TypeError`` / ``ValueError`` naming the offending argument.
"""

from mammogate.reporting.cad_sr import (
    CadSrContents,
    PriorDocument,
    ReportedComposite,
    ReportedFinding,
    build_mammography_cad_sr,
    read_cad_sr,
    read_cad_sr_findings,
    save_report,
    write_dataset,
)
from mammogate.reporting.errors import (
    ReportingError,
    ReportParseError,
    ReportWriteError,
    SourceMismatchError,
)
from mammogate.reporting.objects import OBJECT_BUILDERS, ObjectBuilder

__all__ = [
    "OBJECT_BUILDERS",
    "CadSrContents",
    "ObjectBuilder",
    "PriorDocument",
    "ReportParseError",
    "ReportWriteError",
    "ReportedComposite",
    "ReportedFinding",
    "ReportingError",
    "SourceMismatchError",
    "build_mammography_cad_sr",
    "read_cad_sr",
    "read_cad_sr_findings",
    "save_report",
    "write_dataset",
]
