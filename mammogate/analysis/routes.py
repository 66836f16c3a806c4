"""The routing dry run for a study the node holds, or for files on disk; the facts the worker
routes a result on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from mammogate.db import Study
from mammogate.db.admin import NotOnThisNode, RequestRefused
from mammogate.db.routes import routes_in_order, routing_inputs, study_ae_titles
from mammogate.imaging import ImagingError, read_headers
from mammogate.routing import RouteRule, RouteVerdict, StudyFacts, explain


def route_rules(session: Session) -> list[RouteRule]:
    """The routes the database holds, in order (the database is the truth at run time)."""
    return [RouteRule.from_record(r) for r in routes_in_order(session)]


def study_facts(
    session: Session, study: Study, headers: Sequence[Dataset],
    *, exam_category: str | None = None, exam_score: float | None = None,
) -> StudyFacts:
    """What routes match on, for ``study``: its images' headers, the AE titles of the
    associations that brought them, and the result when there is one."""
    calling, called = study_ae_titles(session, study)
    return StudyFacts.from_headers(headers, calling_ae_titles=calling, called_ae_titles=called,
                                   exam_category=exam_category, exam_score=exam_score)


def explain_study(session: Session, study_instance_uid: str,
                  rules: Sequence[RouteRule]) -> tuple[str, list[RouteVerdict]]:
    """The study's state and each route's verdict for it: its images' headers, the
    associations' AE titles and, when it has been analysed, its current result."""
    inputs = routing_inputs(session, study_instance_uid)
    if inputs is None:
        raise NotOnThisNode(f"no study {study_instance_uid} on this node")
    return inputs.state, explain(rules, StudyFacts.from_stored(inputs, read_headers(inputs.paths)))


def explain_files(paths: Sequence[Path], rules: Sequence[RouteRule], *,
                  calling_ae_title: str = "", called_ae_title: str = "") -> list[RouteVerdict]:
    """Each route's verdict for DICOM files (a study not received yet); clauses on the result
    stay undecided."""
    files = [f for p in paths
             for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])]
    try:
        headers = read_headers(files, skip_unreadable=False)
    except ImagingError as exc:
        raise RequestRefused(str(exc)) from exc
    if not headers:
        raise RequestRefused("no DICOM file given")
    facts = StudyFacts.from_headers(
        headers, calling_ae_titles=[calling_ae_title] if calling_ae_title else [],
        called_ae_titles=[called_ae_title] if called_ae_title else [],
    )
    return explain(rules, facts)
