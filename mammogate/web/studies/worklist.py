"""The worklist: studies with their current result, filtered, searched, sorted and paged on the
server, and the same set exported as CSV.

One query builds the filtered set (``_filtered``): each study joined to its latest analysis and
to a summary of that analysis's deliveries; the page, the count and the CSV export all read it,
so the export is exactly what the filters show.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from mammogate.db import Analysis, AnalysisImage, Delivery, Report, Study
from mammogate.web.i18n import gettext as _

CATEGORIES: tuple[str, ...] = ("flagged", "not_flagged", "failed", "skipped", "pending")
DELIVERY_SUMMARIES: tuple[str, ...] = ("delivered", "pending", "dead", "none")
STATES: tuple[str, ...] = ("receiving", "queued", "processing", "done", "failed", "skipped")
SORT_KEYS: tuple[str, ...] = ("received", "study_date", "patient", "patient_id", "accession", "ae",
                              "score", "state")


@dataclass(frozen=True)
class WorklistFilter:
    """What the worklist shows: every field empty or None means "any". Scores are 0..1."""

    received_from: date | None = None
    received_to: date | None = None  # inclusive
    category: str = ""  # flagged | not_flagged | failed | skipped | pending (no result yet)
    score_min: float | None = None
    score_max: float | None = None
    calling_ae: str = ""
    state: str = ""
    delivery: str = ""  # delivered | pending (queued or sending) | dead | none (nothing routed)
    q: str = ""  # patient ID, accession number or patient name contains this (any case)
    sort: str = "received"
    descending: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("category", CATEGORIES), ("state", STATES),
                              ("delivery", DELIVERY_SUMMARIES), ("sort", SORT_KEYS)):
            value = getattr(self, name)
            if value and value not in allowed:
                raise ValueError(_("%(name)s must be one of %(allowed)s, not %(value)r")
                                 % {"name": name, "allowed": ", ".join(allowed), "value": value})
        for name in ("score_min", "score_max"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(_("%(name)s must be between 0 and 100 %%, not %(value)s %%")
                                 % {"name": name, "value": f"{value * 100:g}"})
        if self.received_from and self.received_to and self.received_from > self.received_to:
            raise ValueError(_("the received-from date is after the received-to date"))

    @property
    def active(self) -> bool:
        """Whether anything narrows the set (sorting does not)."""
        return any(getattr(self, f.name) not in (None, "") for f in fields(self)
                   if f.name not in ("sort", "descending"))

    def parameters(self, **changes: Any) -> dict[str, str]:
        """The query parameters that reproduce this filter (scores in %), for links."""
        f = replace(self, **changes) if changes else self
        out = {
            "from": f.received_from.isoformat() if f.received_from else "",
            "to": f.received_to.isoformat() if f.received_to else "",
            "category": f.category,
            "score_min": f"{f.score_min * 100:g}" if f.score_min is not None else "",
            "score_max": f"{f.score_max * 100:g}" if f.score_max is not None else "",
            "ae": f.calling_ae,
            "state": f.state,
            "delivery": f.delivery,
            "q": f.q,
            "sort": "" if f.sort == "received" else f.sort,
            "order": "" if f.descending else "asc",
        }
        return {k: v for k, v in out.items() if v}

    def query(self, **changes: Any) -> str:
        return urlencode(self.parameters(**changes))

    def describe(self) -> str:
        """The filters in one line (for the audit log)."""
        return ", ".join(f"{k}={v}" for k, v in self.parameters().items() if k not in ("sort", "order"))


@dataclass(frozen=True)
class StudyRow:
    study_instance_uid: str
    received_at: datetime
    accession_number: str
    patient_name: str
    patient_id: str
    study_date: str
    calling_ae_title: str
    instance_count: int
    state: str
    exam_score: float | None
    category: str  # flagged | not_flagged | failed | skipped, "" before a result
    delivery: str  # delivered | pending | dead | none, "" before a result
    views_analysed: int  # expected views analysed in the current result
    views_expected: int


@dataclass(frozen=True)
class StudyPage:
    studies: list[StudyRow]
    page: int
    per_page: int
    total: int
    filter: WorklistFilter = WorklistFilter()

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def _delivery_summary(sent: Any) -> Any:
    return case(
        (sent.c.total.is_(None), "none"),
        (sent.c.dead > 0, "dead"),
        (sent.c.open > 0, "pending"),
        else_="delivered",
    )


def _deliveries_by_analysis() -> Any:
    return (
        select(
            Report.analysis_id.label("analysis_id"),
            func.count(Delivery.id).label("total"),
            func.sum(case((Delivery.state == "dead", 1), else_=0)).label("dead"),
            func.sum(case((Delivery.state.in_(("pending", "sending")), 1), else_=0)).label("open"),
        )
        .join(Delivery, Delivery.report_id == Report.id)
        .group_by(Report.analysis_id)
    )


def _needs_analysis(f: WorklistFilter) -> bool:
    return bool(f.category or f.score_min is not None or f.score_max is not None or f.delivery
                or f.sort == "score")


def _filtered(f: WorklistFilter, *, counting: bool = False) -> Select[Any]:
    """The filtered studies, each with its current (latest) analysis, joined by the study's
    pointer to it (``studies.current_analysis_id``, kept by the worker).
    The delivery summary joins only when it filters; the page's rows get theirs separately."""
    current = aliased(Analysis)
    current_id = Study.current_analysis_id
    category = case(
        (Study.state == "failed", "failed"),
        (current.id.is_(None), ""),
        else_=current.category,
    ).label("category")
    if counting:
        query = select(func.count(Study.id))
        if _needs_analysis(f):
            query = query.outerjoin(current, current.id == current_id)
    else:
        query = (select(Study, current.exam_score.label("exam_score"), category,
                        current.id.label("analysis_id"))
                 .outerjoin(current, current.id == current_id))
    delivery = None
    if f.delivery:
        sent = _deliveries_by_analysis().subquery()
        query = query.outerjoin(sent, sent.c.analysis_id == current.id)
        delivery = case((current.id.is_(None), ""), else_=_delivery_summary(sent))
    conditions = []
    if f.received_from:
        conditions.append(Study.last_received_at >= datetime.combine(f.received_from, time()))
    if f.received_to:
        conditions.append(
            Study.last_received_at < datetime.combine(f.received_to + timedelta(days=1), time()))
    if f.category == "pending":
        conditions.append(and_(current.id.is_(None), Study.state != "failed"))
    elif f.category:
        conditions.append(category == f.category)
    if f.score_min is not None:
        conditions.append(current.exam_score >= f.score_min)
    if f.score_max is not None:
        conditions.append(current.exam_score <= f.score_max)
    if f.calling_ae:
        conditions.append(Study.calling_ae_title == f.calling_ae)
    if f.state:
        conditions.append(Study.state == f.state)
    if delivery is not None:
        conditions.append(delivery == f.delivery)
    if f.q.strip():
        pattern = _like(f.q.strip())
        conditions.append(or_(*(
            func.lower(column).like(pattern, escape="\\")
            for column in (Study.patient_id, Study.accession_number, Study.patient_name)
        )))
    if conditions:
        query = query.where(*conditions)
    if counting:
        return query
    column = {
        "received": Study.last_received_at,
        "study_date": Study.study_date,
        "patient": Study.patient_name,
        "patient_id": Study.patient_id,
        "accession": Study.accession_number,
        "ae": Study.calling_ae_title,
        "score": current.exam_score,
        "state": Study.state,
    }[f.sort]
    ordered = column.desc() if f.descending else column.asc()
    # studies without a score sort last either way
    nulls = [current.exam_score.is_(None)] if f.sort == "score" else []
    tie = Study.id.desc() if f.descending else Study.id.asc()
    return query.order_by(*nulls, ordered, tie)


def _rows(session: Session, results: Sequence[Any], expected: Sequence[str]) -> list[StudyRow]:
    analysis_ids = [r.analysis_id for r in results if r.analysis_id is not None]
    analysed: dict[int, set[str]] = {}
    if analysis_ids:
        for analysis_id, laterality, view in session.execute(
            select(AnalysisImage.analysis_id, AnalysisImage.laterality, AnalysisImage.view)
            .where(AnalysisImage.analysis_id.in_(analysis_ids), AnalysisImage.status == "analysed")
        ):
            analysed.setdefault(analysis_id, set()).add(f"{laterality}{view}")
    deliveries: dict[int, str] = {}
    if analysis_ids:
        sent = _deliveries_by_analysis().where(Report.analysis_id.in_(analysis_ids)).subquery()
        deliveries = dict(session.execute(select(sent.c.analysis_id, _delivery_summary(sent))).all())
    rows = []
    for r in results:
        s: Study = r.Study
        views = analysed.get(r.analysis_id, set())
        rows.append(StudyRow(
            study_instance_uid=s.study_instance_uid,
            received_at=s.last_received_at,
            accession_number=s.accession_number,
            patient_name=s.patient_name,
            patient_id=s.patient_id,
            study_date=s.study_date,
            calling_ae_title=s.calling_ae_title,
            instance_count=s.instance_count,
            state=s.state,
            exam_score=r.exam_score,
            category=r.category or "",
            delivery="" if r.analysis_id is None else deliveries.get(r.analysis_id, "none"),
            views_analysed=len(views & set(expected)) if expected else len(views),
            views_expected=len(expected),
        ))
    return rows


def list_studies(
    session: Session, page: int = 1, per_page: int = 50,
    worklist: WorklistFilter = WorklistFilter(), expected_views: Sequence[str] = (),
) -> StudyPage:
    """One page of the filtered studies, each with its current result and delivery state."""
    page = max(1, page)
    total = session.scalar(_filtered(worklist, counting=True)) or 0
    results = session.execute(_filtered(worklist).limit(per_page).offset((page - 1) * per_page)).all()
    return StudyPage(_rows(session, results, expected_views), page, per_page, total, worklist)


CSV_COLUMNS = (
    "received_at_utc", "patient_name", "patient_id", "accession_number", "study_date",
    "calling_ae_title", "state", "views_analysed", "views_expected", "exam_score_percent",
    "category", "delivery", "study_instance_uid",
)


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab or carriage
    return) is prefixed with an apostrophe (OWASP's CSV injection advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(
    session: Session, worklist: WorklistFilter, expected_views: Sequence[str], *, batch: int = 500
) -> Iterator[str]:
    """The filtered set as CSV text chunks (a header, then ``batch`` studies per chunk)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    query = _filtered(worklist)
    offset = 0
    while True:
        results = session.execute(query.limit(batch).offset(offset)).all()
        if not results:
            return
        buffer.seek(0)
        buffer.truncate()
        for row in _rows(session, results, expected_views):
            writer.writerow([csv_cell(v) for v in (
                row.received_at.strftime("%Y-%m-%d %H:%M:%S"), row.patient_name, row.patient_id,
                row.accession_number, row.study_date, row.calling_ae_title, row.state,
                row.views_analysed, row.views_expected,
                "" if row.exam_score is None else f"{row.exam_score * 100:.1f}",
                row.category, row.delivery, row.study_instance_uid,
            )])
        yield buffer.getvalue()
        offset += batch


def _date(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(_("%(name)s must be a date as YYYY-MM-DD, not %(value)r")
                         % {"name": name, "value": value}) from None


def _percent(value: str, name: str) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(_("%(name)s must be a number of percent (0 to 100), not %(value)r")
                         % {"name": name, "value": value}) from None
    if not 0.0 <= number <= 100.0:
        raise ValueError(_("%(name)s must be between 0 and 100 %%, not %(value)s")
                         % {"name": name, "value": value})
    return number / 100.0


def parse_filter(query: Any) -> WorklistFilter:
    """A WorklistFilter from the page's query parameters (empty ones mean "any"; scores in %);
    ValueError naming the parameter when one is not valid."""
    def text(name: str, limit: int = 64) -> str:
        value = str(query.get(name) or "").strip()
        if len(value) > limit:
            raise ValueError(_("%(name)s is longer than %(limit)d characters") % {"name": name, "limit": limit})
        return value

    order = text("order")
    if order not in ("", "asc", "desc"):
        raise ValueError(_("order must be asc or desc, not %(value)r") % {"value": order})
    return WorklistFilter(
        received_from=_date(text("from"), "from"),
        received_to=_date(text("to"), "to"),
        category=text("category"),
        score_min=_percent(text("score_min"), "score_min"),
        score_max=_percent(text("score_max"), "score_max"),
        calling_ae=text("ae", 16),
        state=text("state"),
        delivery=text("delivery"),
        q=text("q"),
        sort=text("sort") or "received",
        descending=order != "asc",
    )
