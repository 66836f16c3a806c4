"""The statistics page: what the node did over a period, and how the model does at this site.

Everything is computed from the database for the studies last received in the period: counts
in SQL, the percentiles and the AUC in Python over the period's analysed studies (one row each).
The charts are server-side SVG (bars, a histogram, a donut), drawn with presentation attributes
only, so the portal's Content-Security-Policy (no script, no inline style) holds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from babel.dates import format_date
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from mammogate.db import Analysis, Delivery, DestinationRow, Feedback, Study
from mammogate.web.formatting import category_label
from mammogate.web.i18n import current_language, gettext

POSITIVE_TRUTH = ("biopsy_malignant",)
NEGATIVE_TRUTH = ("biopsy_benign", "normal_followup")
GROUND_TRUTHS = {
    "biopsy_malignant": "biopsy: malignant",
    "biopsy_benign": "biopsy: benign",
    "normal_followup": "normal follow-up",
}
CATEGORY_COLOURS = {"flagged": "#b42318", "not_flagged": "#2e7d32", "skipped": "#8a8f98",
                    "failed": "#6b3fa0", "pending": "#c8ccd2"}


@dataclass(frozen=True)
class Breakdown:
    name: str
    studies: int
    analysed: int
    flagged: int

    @property
    def flagged_rate(self) -> float | None:
        return self.flagged / self.analysed if self.analysed else None


@dataclass(frozen=True)
class SitePerformance:
    """The model against the radiologists' ground truth at this site, at the operating point
    each result was flagged at."""

    positives: int  # studies with a malignant biopsy and a score
    negatives: int  # benign biopsy or normal follow-up, with a score
    true_positives: int
    true_negatives: int
    auc: float | None  # None unless both classes are present

    @property
    def sensitivity(self) -> float | None:
        return self.true_positives / self.positives if self.positives else None

    @property
    def specificity(self) -> float | None:
        return self.true_negatives / self.negatives if self.negatives else None


@dataclass(frozen=True)
class Statistics:
    since: date
    until: date  # inclusive
    days: int
    received: int
    analysed: int
    flagged: int
    not_analysed: int  # skipped: outside the intended use
    failed: int
    pending: int  # received, no result yet
    time_to_result_p50: float | None  # seconds from the last image to the result
    time_to_result_p95: float | None
    deliveries_dead: int
    deliveries_pending: int
    per_day: list[tuple[date, int]]
    score_histogram: list[int]  # 10 bins of 10 %
    categories: dict[str, int]
    by_ae: list[Breakdown]
    by_manufacturer: list[Breakdown]
    dead_by_destination: list[tuple[str, int]]
    performance: SitePerformance
    charts: dict[str, str] = field(default_factory=dict)  # name -> SVG markup

    @property
    def flagged_rate(self) -> float | None:
        return self.flagged / self.analysed if self.analysed else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation (numpy's default); None when
    empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None without both."""
    if not positives or not negatives:
        return None
    ranked = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average_rank = (i + 1 + j) / 2
        rank_sum += average_rank * sum(1 for k in range(i, j) if ranked[k][1] == 1)
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _period(session: Session, start: datetime) -> Any:
    """One row per study of the period: its result category, score, sending AE, manufacturer,
    and the times a time to result is measured between (as a subquery to aggregate in SQL)."""
    category = case((Study.state == "failed", "failed"), (Analysis.id.is_(None), "pending"),
                    else_=Analysis.category)
    return (
        select(Study.id.label("study_id"), Study.last_received_at.label("received"),
               Study.calling_ae_title.label("ae"), Study.manufacturer.label("maker"),
               category.label("category"), Analysis.exam_score.label("score"),
               Analysis.created_at.label("analysed_at"))
        .outerjoin(Analysis, Analysis.id == Study.current_analysis_id)
        .where(Study.last_received_at >= start)
        .subquery("period")
    )


def _waits(session: Session, period: Any) -> tuple[float | None, float | None]:
    """Median and 95th percentile of the time to result, in SQL on PostgreSQL."""
    done = period.c.category != "pending"
    if session.get_bind().dialect.name == "postgresql":
        seconds = func.extract("epoch", period.c.analysed_at - period.c.received)
        row = session.execute(select(
            func.percentile_cont(0.5).within_group(seconds), func.percentile_cont(0.95).within_group(seconds)
        ).where(done, period.c.analysed_at.is_not(None))).one()
        return (None if row[0] is None else max(0.0, float(row[0])),
                None if row[1] is None else max(0.0, float(row[1])))
    waits = [max(0.0, (analysed - received).total_seconds()) for received, analysed in session.execute(
        select(period.c.received, period.c.analysed_at).where(done, period.c.analysed_at.is_not(None)))]
    return percentile(waits, 50), percentile(waits, 95)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def compute(session: Session, days: int, today: date) -> Statistics:
    """The statistics of the studies last received in the ``days`` days up to ``today``:
    counted in SQL (one row per study never comes to Python on PostgreSQL)."""
    since = today - timedelta(days=days - 1)
    start = datetime.combine(since, datetime.min.time())
    period = _period(session, start)
    analysed = period.c.category.in_(("flagged", "not_flagged"))

    # one grouped pass gives the categories and both breakdowns (a few dozen rows)
    categories: Counter[str] = Counter()
    by_ae: dict[str, list[int]] = {}
    by_maker: dict[str, list[int]] = {}
    for ae, maker, category, n in session.execute(
            select(period.c.ae, period.c.maker, period.c.category, func.count())
            .group_by(period.c.ae, period.c.maker, period.c.category)):
        categories[category] += n
        for table, key in ((by_ae, ae or gettext("(none)")), (by_maker, maker or gettext("(unknown)"))):
            counts = table.setdefault(key, [0, 0, 0])
            counts[0] += n
            counts[1] += n if category in ("flagged", "not_flagged") else 0
            counts[2] += n if category == "flagged" else 0
    per_day: Counter[date] = Counter()
    for day, n in session.execute(select(func.date(period.c.received), func.count())
                                  .group_by(func.date(period.c.received))):
        per_day[_as_date(day)] += n
    bin_of = case(*((period.c.score < (k + 1) / 10, k) for k in range(9)), else_=9)
    histogram = [0] * 10
    for k, n in session.execute(select(bin_of, func.count()).where(analysed, period.c.score.is_not(None))
                                .group_by(bin_of)):
        histogram[int(k)] = n

    def breakdown(table: dict[str, list[int]]) -> list[Breakdown]:
        return sorted((Breakdown(name, *counts) for name, counts in table.items()),
                      key=lambda b: (-b.studies, b.name))

    p50, p95 = _waits(session, period)
    dead = session.execute(
        select(DestinationRow.name, func.count(Delivery.id))
        .join(DestinationRow, DestinationRow.id == Delivery.destination_id)
        .where(Delivery.state == "dead", Delivery.created_at >= start)
        .group_by(DestinationRow.name).order_by(func.count(Delivery.id).desc())
    ).all()
    deliveries_pending = session.scalar(
        select(func.count(Delivery.id)).where(Delivery.state.in_(("pending", "sending")))) or 0
    stats = Statistics(
        since=since, until=today, days=days, received=sum(categories.values()),
        analysed=categories["flagged"] + categories["not_flagged"], flagged=categories["flagged"],
        not_analysed=categories["skipped"], failed=categories["failed"], pending=categories["pending"],
        time_to_result_p50=p50, time_to_result_p95=p95,
        deliveries_dead=sum(n for _, n in dead), deliveries_pending=deliveries_pending,
        per_day=[(since + timedelta(days=k), per_day[since + timedelta(days=k)]) for k in range(days)],
        score_histogram=histogram, categories={k: v for k, v in categories.items() if v},
        by_ae=breakdown(by_ae), by_manufacturer=breakdown(by_maker),
        dead_by_destination=[(name, n) for name, n in dead], performance=_performance(session, period),
    )
    language = current_language()  # the charts' words and dates in the page's language
    stats.charts.update(
        per_day=bar_chart([(format_date(d, "dd MMM", locale=language), n) for d, n in stats.per_day],
                          gettext("Studies received per day")),
        scores=bar_chart([(f"{10 * k}–{10 * k + 10} %", n) for k, n in enumerate(histogram)],
                         gettext("Exam scores of the analysed studies")),
        categories=donut([(_category_name(c), categories[c], CATEGORY_COLOURS[c])
                          for c in CATEGORY_COLOURS if categories[c]],
                         gettext("Results by category")),
    )
    return stats


def _category_name(category: str) -> str:
    return gettext("no result yet") if category == "pending" else category_label(category)


def _performance(session: Session, period: Any) -> SitePerformance:
    """The analysed studies of the period that have a ground truth (their latest feedback row
    that states one), against their scores and whether they were flagged."""
    latest_truth = (select(Feedback.study_id.label("study_id"), func.max(Feedback.id).label("feedback_id"))
                    .where(Feedback.ground_truth != "").group_by(Feedback.study_id).subquery())
    rows = session.execute(
        select(period.c.score, period.c.category, Feedback.ground_truth)
        .join(latest_truth, latest_truth.c.study_id == period.c.study_id)
        .join(Feedback, Feedback.id == latest_truth.c.feedback_id)
        .where(period.c.category.in_(("flagged", "not_flagged")), period.c.score.is_not(None))
    ).all()
    positives = [(s, c == "flagged") for s, c, t in rows if t in POSITIVE_TRUTH]
    negatives = [(s, c == "flagged") for s, c, t in rows if t in NEGATIVE_TRUTH]
    return SitePerformance(
        positives=len(positives), negatives=len(negatives),
        true_positives=sum(1 for _, was_flagged in positives if was_flagged),
        true_negatives=sum(1 for _, was_flagged in negatives if not was_flagged),
        auc=auc([s for s, _ in positives], [s for s, _ in negatives]),
    )


# Server-side SVG ----------------------------------------------------------------------------


def _labelled(label: str, value: int) -> str:
    return gettext("%(label)s: %(value)s") % {"label": label, "value": value}  # "flagged : 3" in French


def bar_chart(bars: Sequence[tuple[str, int]], title: str, *, width: int = 640, height: int = 180) -> str:
    """A bar chart as SVG: one bar per (label, value), the value above each non-empty bar, every
    fifth label (all of them when there are 12 or fewer) under the axis."""
    top = max((v for _, v in bars), default=0) or 1
    plot_h, base = height - 40, height - 24
    step = width / max(1, len(bars))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    every = 1 if len(bars) <= 12 else 5
    for k, (label, value) in enumerate(bars):
        h = plot_h * value / top
        x = k * step + step * 0.15
        parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                     f'fill="#2b6cb0"><title>{escape(_labelled(label, value))}</title></rect>')
        if value:
            parts.append(f'<text x="{x + step * 0.35:.1f}" y="{base - h - 3:.1f}" font-size="10" '
                         f'text-anchor="middle" fill="#222">{value}</text>')
        if k % every == 0:
            parts.append(f'<text x="{x + step * 0.35:.1f}" y="{height - 8}" font-size="10" '
                         f'text-anchor="middle" fill="#555">{escape(label)}</text>')
    parts.append(f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#999"/></svg>')
    return "".join(parts)


def donut(slices: Sequence[tuple[str, int, str]], title: str, *, size: int = 180) -> str:
    """A donut chart as SVG: one arc per (name, value, colour), with a legend beside it."""
    total = sum(v for _, v, _ in slices)
    r, cx, cy, stroke = size * 0.35, size / 2, size / 2, size * 0.18
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {size + 200} {size}" '
             f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    circumference = 2 * math.pi * r
    offset = 0.0
    if not total:
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r:.1f}" fill="none" stroke="#e3e6ea" '
                     f'stroke-width="{stroke:.1f}"/>')
    for k, (name, value, colour) in enumerate(slices):
        length = circumference * value / total if total else 0
        parts.append(
            f'<circle cx="{cx}" cy="{cy}" r="{r:.1f}" fill="none" stroke="{colour}" stroke-width="{stroke:.1f}" '
            f'stroke-dasharray="{length:.2f} {circumference - length:.2f}" stroke-dashoffset="{-offset:.2f}" '
            f'transform="rotate(-90 {cx} {cy})"><title>{escape(_labelled(name, value))}</title></circle>')
        offset += length
        y = 20 + 22 * k
        parts.append(f'<rect x="{size + 10}" y="{y - 10}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{size + 28}" y="{y}" font-size="12" fill="#222">'
                     f'{escape(_labelled(name, value))}</text>')
    parts.append(f'<text x="{cx}" y="{cy + 5}" font-size="16" text-anchor="middle" fill="#222">{total}</text></svg>')
    return "".join(parts)


def as_dict(stats: Statistics) -> dict[str, Any]:
    """The statistics for the JSON API (charts left out)."""
    return {
        "since": stats.since.isoformat(), "until": stats.until.isoformat(), "days": stats.days,
        "received": stats.received, "analysed": stats.analysed, "flagged": stats.flagged,
        "flagged_rate": stats.flagged_rate, "not_analysed": stats.not_analysed,
        "failed": stats.failed, "pending": stats.pending,
        "time_to_result_seconds": {"p50": stats.time_to_result_p50, "p95": stats.time_to_result_p95},
        "deliveries": {"dead": stats.deliveries_dead, "pending": stats.deliveries_pending,
                       "dead_by_destination": dict(stats.dead_by_destination)},
        "per_day": {d.isoformat(): n for d, n in stats.per_day},
        "score_histogram": stats.score_histogram, "categories": stats.categories,
        "by_calling_ae": [vars(b) | {"flagged_rate": b.flagged_rate} for b in stats.by_ae],
        "by_manufacturer": [vars(b) | {"flagged_rate": b.flagged_rate} for b in stats.by_manufacturer],
        "site_performance": vars(stats.performance) | {
            "sensitivity": stats.performance.sensitivity, "specificity": stats.performance.specificity},
    }
