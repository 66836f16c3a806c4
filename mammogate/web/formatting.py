"""How the portal writes numbers, dates and names: the template filters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jinja2 import Environment

from mammogate.imaging import clock
from mammogate.web.i18n import N_, decimal, gettext, pgettext

CATEGORY_LABELS = {
    "flagged": N_("flagged"),
    "not_flagged": N_("not flagged"),
    "failed": N_("failed"),
    "skipped": N_("not analysed"),
}
# what the pages show for the codes stored in the database (the codes stay in classes,
# data attributes, query strings and the CSV); in English the label is the code itself
STATE_LABELS = {
    "receiving": N_("receiving"),
    "queued": N_("queued"),
    "processing": N_("processing"),
    "done": N_("done"),
    "failed": N_("failed"),
    "skipped": N_("skipped"),
}
DELIVERY_LABELS = {
    "delivered": N_("delivered"),
    "pending": N_("pending"),
    "sending": N_("sending"),
    "dead": N_("dead"),
    "none": N_("none"),
}
ROLE_LABELS = {
    "admin": N_("admin"),
    "radiologist": N_("radiologist"),
    "viewer": N_("viewer"),
}


def percent(probability: float | None) -> str:
    """A probability as the SR writes it: x100, one decimal (0.873456 -> "87.3 %"); a value
    that would round to 0.0 or 100.0 without being exactly that says "< 0.1 %" / "> 99.9 %"
    (a model is never certain, and the page must not say it is). The decimal mark is the
    page's language's: "87,3 %" in French."""
    if probability is None:
        return "—"
    shown = f"{probability * 100:.1f}"
    if shown == "100.0" and probability < 1.0:
        return f"> {decimal(99.9)} %"
    if shown in ("0.0", "-0.0") and probability > 0.0:
        return f"< {decimal(0.1)} %"
    return f"{decimal(probability * 100)} %"


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


def _label(labels: dict[str, str], code: str | None) -> str:
    """The label of a code in the page's language; an unknown code as it is."""
    if not code:
        return "—"
    return gettext(labels[code]) if code in labels else code


def category_label(category: str) -> str:
    return _label(CATEGORY_LABELS, category)


def state_label(state: str) -> str:
    return _label(STATE_LABELS, state)


def delivery_label(delivery: str | None) -> str:
    return _label(DELIVERY_LABELS, delivery)


def image_status_label(status: str) -> str:
    # an image's status, a job's state: words of their own in French (gender), hence contexts
    labels = {"analysed": pgettext("image status", "analysed"),
              "skipped": pgettext("image status", "skipped"),
              "failed": pgettext("image status", "failed")}
    return labels.get(status, status or "—")


def role_label(role: str) -> str:
    return _label(ROLE_LABELS, role)


def job_state_label(state: str) -> str:
    labels = {"pending": pgettext("job state", "pending"),
              "running": pgettext("job state", "running"),
              "done": pgettext("job state", "done"),
              "failed": pgettext("job state", "failed"),
              "superseded": pgettext("job state", "superseded")}
    return labels.get(state, state or "—")


def report_kind_label(kind: str) -> str:
    labels = {"cad_sr": gettext("Mammography CAD SR"), "comprehensive_sr": gettext("Comprehensive SR"),
              "sc_overlay": gettext("Secondary Capture (overlay)")}
    return labels.get(kind, kind or "—")


def job_kind_label(kind: str) -> str:
    labels = {"analyze": gettext("analysis"), "test_destination": gettext("connection test")}
    return labels.get(kind, kind or "—")


def views_summary(present: Sequence[str], missing: Sequence[str], expected: Sequence[str]) -> str:
    """What ``imaging.views.views_summary`` says ("3 of 4 expected views; RMLO missing"), in
    the page's language (the study's ``views_summary`` stays English for the JSON API)."""
    if not expected:
        return gettext("%(count)s views") % {"count": len(present)} if present else gettext("no view recognised")
    text = gettext("%(found)s of %(expected)s expected views") % {
        "found": len(expected) - len(missing), "expected": len(expected)}
    if missing:
        text = gettext("%(summary)s; %(views)s missing") % {"summary": text, "views": ", ".join(missing)}
    return text


REGION_LABELS = {
    clock.RETROAREOLAR: N_("retroareolar"),
    clock.CENTRAL: N_("central"),
    clock.OUTER_HALF: N_("outer half"),
    clock.INNER_HALF: N_("inner half"),
    clock.UPPER_HALF: N_("upper half"),
    clock.LOWER_HALF: N_("lower half"),
    clock.UPPER_OUTER: N_("upper outer quadrant"),
    clock.UPPER_INNER: N_("upper inner quadrant"),
    clock.LOWER_OUTER: N_("lower outer quadrant"),
    clock.LOWER_INNER: N_("lower inner quadrant"),
}


def finding_position(finding: Any) -> str:
    """Where a finding lies, in the page's language (``imaging.clock.position_label`` in
    English): "10 o'clock, upper outer quadrant", "3 o'clock", "outer half", "retroareolar";
    "" when neither the clock hour nor the region is known."""
    hour, region = finding.clock_hour, finding.region or ""
    parts = [gettext("%(hour)d o'clock") % {"hour": hour}] if hour is not None else []
    # a region "N o'clock" (a lesion on the line between two quadrants) is its hour, said already
    if region and region != f"{hour} o'clock":
        parts.append(gettext(REGION_LABELS[region]) if region in REGION_LABELS else region)
    return ", ".join(parts)


def register_filters(env: Environment) -> None:
    env.filters.update(
        percent=percent,
        raw_score=raw_score,
        dicom_date=dicom_date,
        timestamp=timestamp,
        person_name=person_name,
        category_label=category_label,
        state_label=state_label,
        delivery_label=delivery_label,
        image_status_label=image_status_label,
        role_label=role_label,
        job_state_label=job_state_label,
        job_kind_label=job_kind_label,
        report_kind_label=report_kind_label,
        decimal=decimal,
        finding_position=finding_position,
    )
    env.globals["views_summary"] = views_summary
