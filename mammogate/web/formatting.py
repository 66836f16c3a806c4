"""How the portal writes numbers, dates and names: the template filters."""

from __future__ import annotations

from datetime import datetime

from jinja2 import Environment

CATEGORY_LABELS = {
    "flagged": "flagged",
    "not_flagged": "not flagged",
    "failed": "failed",
    "skipped": "not analysed",
}


def percent(probability: float | None) -> str:
    """A probability as the SR writes it: x100, one decimal (0.873456 -> "87.3 %"); a value
    that would round to 0.0 or 100.0 without being exactly that says "< 0.1 %" / "> 99.9 %"
    (a model is never certain, and the page must not say it is)."""
    if probability is None:
        return "—"
    shown = f"{probability * 100:.1f}"
    if shown == "100.0" and probability < 1.0:
        return "> 99.9 %"
    if shown in ("0.0", "-0.0") and probability > 0.0:
        return "< 0.1 %"
    return f"{shown} %"


def raw_score(probability: float | None) -> str:
    """The unrounded value for ``data-score`` (repr keeps every digit of the float)."""
    return "" if probability is None else repr(float(probability))


def dicom_date(value: str) -> str:
    """A DICOM DA as YYYY-MM-DD; "—" for an empty or impossible one (archives hold 00000000)."""
    if len(value) == 8 and value.isdigit():
        try:
            return datetime.strptime(value, "%Y%m%d").strftime("%Y-%m-%d")
        except ValueError:
            return "—"
    return value or "—"


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


def person_name(value: str) -> str:
    """A DICOM PN for people: "DUPONT^Hélène^^Mme" -> "DUPONT, Hélène"."""
    alphabetic = value.split("=", 1)[0]
    family, _, rest = alphabetic.partition("^")
    given = " ".join(p for p in rest.split("^")[:2] if p)
    if family and given:
        return f"{family}, {given}"
    return family or given or "—"


def category_label(category: str) -> str:
    return CATEGORY_LABELS.get(category, category or "—")


def register_filters(env: Environment) -> None:
    env.filters.update(
        percent=percent,
        raw_score=raw_score,
        dicom_date=dicom_date,
        timestamp=timestamp,
        person_name=person_name,
        category_label=category_label,
    )
