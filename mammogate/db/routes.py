"""What routing needs from the database, as plain data (``routing`` itself imports no db)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammogate.db.models import Analysis, Instance, RouteRow, Study


def routes_in_order(session: Session) -> list[RouteRow]:
    """The routes the database holds (the truth at run time), in evaluation order."""
    return list(session.scalars(select(RouteRow).order_by(RouteRow.position)))


@dataclass(frozen=True)
class RoutingInputs:
    """A stored study as routes see it, but for its headers (read from ``paths``)."""

    study_instance_uid: str
    state: str
    paths: tuple[Path, ...]
    calling_ae_titles: tuple[str, ...]
    called_ae_titles: tuple[str, ...]
    exam_category: str | None  # None: not analysed
    exam_score: float | None


def study_ae_titles(session: Session, study: Study) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The calling AE titles of the associations that brought the study's images, and the
    AE title they called."""
    calling = dict.fromkeys([study.calling_ae_title, *session.scalars(
        select(Instance.calling_ae_title).where(Instance.study_id == study.id).distinct())])
    return (tuple(c for c in calling if c),
            (study.called_ae_title,) if study.called_ae_title else ())


def routing_inputs(session: Session, study_instance_uid: str) -> RoutingInputs | None:
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        return None
    latest = session.scalar(select(Analysis).where(Analysis.study_id == study.id)
                            .order_by(Analysis.id.desc()).limit(1))
    calling, called = study_ae_titles(session, study)
    paths = tuple(Path(p) for p in session.scalars(
        select(Instance.path).where(Instance.study_id == study.id).order_by(Instance.id)))
    return RoutingInputs(
        study.study_instance_uid, study.state, paths, calling, called,
        latest.category if latest is not None else None,
        latest.exam_score if latest is not None else None,
    )
