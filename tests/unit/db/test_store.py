"""An analysis recorded as rows: findings keep their certainty, their distance from the nipple,
which of them are one lesion and where on the breast they lie (SQLite and PostgreSQL, through the migrations)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammogate.db import Database, Finding, Study, utcnow
from mammogate.inference.results import Finding as ResultFinding
from mammogate.inference.results import ImageResult, ModelInfo, StudyResult
from mammogate.reporting.store import record_analysis

MODEL = ModelInfo(name="m", version="1", sha256="ab" * 32, operating_point=0.5)


def _image(uid: str, laterality: str, view: str, centers: list[tuple[float, float]], *,
           orientation: tuple[str, ...] = ()) -> ImageResult:
    findings = tuple(
        ResultFinding(uid, laterality, view, 0.8, c, (), certainty=0.6)  # type: ignore[arg-type]
        for c in centers
    )
    return ImageResult(uid, "1.2.840.10008.5.1.4.1.1.1.2", "1.2.3", laterality, view, 0.8,  # type: ignore[arg-type]
                       findings, 1200, 1100, nipple=(1000.0, 500.0), breast_depth=900.0,
                       pixel_spacing=0.1, patient_orientation=orientation)


def _new_study(session: Session, result: StudyResult) -> Study:
    study = Study(study_instance_uid=result.study_instance_uid, first_received_at=utcnow(),
                  last_received_at=utcnow(), updated_at=utcnow())
    session.add(study)
    session.flush()
    return study


def _recorded_findings(db: Database, result: StudyResult) -> dict[str, Finding]:
    """``result`` recorded for a new study of its UID; its findings as stored, by image."""
    with db.session() as session:
        record_analysis(session, _new_study(session, result), result, job_id=None, worker="w")
    with db.session() as session:
        return {f.sop_instance_uid: f for f in session.scalars(select(Finding))}


def test_paired_findings_share_a_lesion_number_and_every_finding_its_nipple_distance(db: Database) -> None:
    # RCC and RMLO marks 40 and 41 mm from the nipple: one mass; the LCC mark stands alone
    images = (
        _image("1.1", "R", "CC", [(600.0, 500.0)]),
        _image("1.2", "R", "MLO", [(590.0, 500.0)]),
        _image("1.3", "L", "CC", [(900.0, 500.0)]),
    )
    result = StudyResult("1.2.3.4", MODEL, images, (), {"R": 0.8, "L": 0.8}, 0.8, "flagged")
    rows = _recorded_findings(db, result)
    assert {uid: (f.lesion, f.nipple_distance_mm, f.certainty) for uid, f in rows.items()} == {
        "1.1": (1, 40.0, 0.6),
        "1.2": (1, 41.0, 0.6),
        "1.3": (None, 10.0, 0.6),
    }


def test_a_study_points_at_its_newest_analysis_whoever_writes_it(db: Database) -> None:
    result = StudyResult("1.2.3.5", MODEL, (_image("2.1", "R", "CC", []),), (), {"R": 0.8}, 0.8, "flagged")
    with db.session() as session:
        study = _new_study(session, result)
        first = record_analysis(session, study, result, job_id=None, worker="w")
        session.flush()
        second = record_analysis(session, study, result, job_id=None, worker="w")
        session.flush()
        ids = (first.id, second.id)
    with db.session() as session:
        assert session.scalars(select(Study.current_analysis_id)).one() == ids[1]


def test_each_finding_keeps_its_place_on_the_breast(db: Database) -> None:
    # a right-breast mass 30 mm lateral (RCC, lateral at the top) and 30 mm superior (RMLO),
    # 50 mm from the nipple on both: 10 o'clock, upper outer; an LCC mark 30 mm medial alone;
    # an LMLO mark with no Patient Orientation, 30 mm toward the top: upper half, assumed
    images = (
        _image("2.1", "R", "CC", [(600.0, 200.0)], orientation=("P", "L")),
        _image("2.2", "R", "MLO", [(600.0, 200.0)], orientation=("P", "F")),
        _image("2.3", "L", "CC", [(600.0, 800.0)], orientation=("A", "R")),
        _image("2.4", "L", "MLO", [(300.0, 200.0)]),
    )
    result = StudyResult("1.2.3.6", MODEL, images, (), {"R": 0.8, "L": 0.8}, 0.8, "flagged")
    rows = _recorded_findings(db, result)
    assert {uid: (f.lesion, f.clock_hour, f.region, f.orientation_assumed) for uid, f in rows.items()} == {
        "2.1": (1, 10, "upper outer quadrant", False),
        "2.2": (1, 10, "upper outer quadrant", False),
        "2.3": (None, None, "inner half", False),
        "2.4": (None, None, "upper half", True),
    }
