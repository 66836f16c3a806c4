"""Pure routing-rule evaluation: which routes fire for a study, and why, clause by clause.

Routes are evaluated in order. A route fires when every clause of its match holds (a route
without clauses fires for every study); a route with ``stop`` that fires ends the evaluation.
Clauses on the result (exam category, exam score) cannot be decided before the study is
analysed: :func:`explain` says "undecided" for them, and deliveries are only planned once the
result exists. The plan has one (destination, object kind) pair per delivery, each with the
route that asked for it; a pair two routes ask for is delivered once (the first route's).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mammogate.config import TEXT_CLAUSES, Match, Route


@dataclass(frozen=True)
class RouteRule:
    """A route as the node evaluates it (from the configuration or the database)."""

    name: str
    destinations: tuple[str, ...]
    objects: tuple[str, ...]
    match: Mapping[str, Any] = field(default_factory=dict)  # Match.clauses()
    stop: bool = False
    enabled: bool = True
    on_not_analysed: str = "report"  # or "silent": nothing for a study with no analysed view

    @classmethod
    def from_record(cls, route: Route | Any) -> RouteRule:
        """From a configured :class:`~mammogate.config.Route` or a stored route row (anything
        with name, destinations, objects, match, stop and, optionally, enabled)."""
        match = route.match.clauses() if isinstance(route.match, Match) else dict(route.match or {})
        return cls(route.name, tuple(route.destinations), tuple(route.objects), match,
                   bool(route.stop), bool(getattr(route, "enabled", True)),
                   str(getattr(route, "on_not_analysed", "report") or "report"))


@dataclass(frozen=True)
class StudyFacts:
    """What routes can match on: the text attributes of a study's images (every distinct
    value), the association's AE titles, and the result once there is one."""

    text: Mapping[str, tuple[str, ...]]
    exam_category: str | None = None  # None: not analysed yet
    exam_score: float | None = None

    @classmethod
    def from_headers(
        cls,
        headers: Iterable[Any],
        *,
        calling_ae_titles: Iterable[str] = (),
        called_ae_titles: Iterable[str] = (),
        exam_category: str | None = None,
        exam_score: float | None = None,
    ) -> StudyFacts:
        """Facts from pydicom datasets (headers are enough) and the association."""
        values: dict[str, list[str]] = {key: [] for key in TEXT_CLAUSES}
        values["calling_ae_title"] = list(calling_ae_titles)
        values["called_ae_title"] = list(called_ae_titles)
        for ds in headers:
            for key, keyword in TEXT_CLAUSES.items():
                if keyword is None:
                    continue
                value = ds.get(keyword)
                if value is not None and str(value).strip():
                    values[key].append(str(value).strip())
        text = {key: tuple(dict.fromkeys(v.strip() for v in vals if v.strip()))
                for key, vals in values.items()}
        return cls(text, exam_category, exam_score)


    @classmethod
    def from_stored(cls, inputs: Any, headers: Iterable[Any]) -> StudyFacts:
        """Facts of a stored study: ``inputs`` as ``mammogate.db.routes.routing_inputs`` gives
        them (AE titles, current result), ``headers`` read from its files."""
        return cls.from_headers(
            headers, calling_ae_titles=inputs.calling_ae_titles,
            called_ae_titles=inputs.called_ae_titles, exam_category=inputs.exam_category,
            exam_score=inputs.exam_score,
        )


@dataclass(frozen=True)
class ClauseVerdict:
    key: str
    wanted: str
    found: str
    holds: bool | None  # None: undecided until the study is analysed


@dataclass(frozen=True)
class RouteVerdict:
    route: RouteRule
    fires: bool | None  # None: depends on the result, which is not there yet
    reason: str
    clauses: tuple[ClauseVerdict, ...] = ()


@dataclass(frozen=True)
class PlannedDelivery:
    destination: str
    object_kind: str
    route: str
    reason: str


def _pattern_matches(pattern: str, value: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], value) is not None
    return fnmatch.fnmatchcase(value.casefold(), pattern.casefold())


def _text_clause(key: str, patterns: Sequence[str], values: tuple[str, ...]) -> ClauseVerdict:
    wanted = " or ".join(repr(p) for p in patterns)
    found = ", ".join(repr(v) for v in values) if values else "none in this study"
    holds = any(_pattern_matches(p, v) for p in patterns for v in values)
    return ClauseVerdict(key, wanted, found, holds)


def _clauses(match: Mapping[str, Any], facts: StudyFacts) -> list[ClauseVerdict]:
    verdicts: list[ClauseVerdict] = []
    unknown = set(match) - set(Match.model_fields)
    if unknown:  # a row written by another version: never fire on a clause we cannot read
        for key in sorted(unknown):
            verdicts.append(ClauseVerdict(key, repr(match[key]), "a clause this node does not know",
                                          False))
    for key in TEXT_CLAUSES:
        if key in match:
            verdicts.append(_text_clause(key, match[key], facts.text.get(key, ())))
    analysed = facts.exam_category is not None
    if "exam_category" in match:
        wanted = " or ".join(match["exam_category"])
        if not analysed:
            verdicts.append(ClauseVerdict("exam_category", wanted, "not analysed yet", None))
        else:
            verdicts.append(ClauseVerdict("exam_category", wanted, str(facts.exam_category),
                                          facts.exam_category in match["exam_category"]))
    for key, wanted, test in (
        ("exam_score_min", ">=", lambda s, t: s >= t),
        ("exam_score_max", "<=", lambda s, t: s <= t),
    ):
        if key not in match:
            continue
        text = f"exam score {wanted} {match[key]:g}"
        if not analysed:
            verdicts.append(ClauseVerdict(key, text, "not analysed yet", None))
        elif facts.exam_score is None:
            verdicts.append(ClauseVerdict(key, text, "no exam score (no view analysed)", False))
        else:
            verdicts.append(ClauseVerdict(key, text, f"{facts.exam_score:.4f}",
                                          test(facts.exam_score, match[key])))
    return verdicts


def explain(rules: Sequence[RouteRule], facts: StudyFacts) -> list[RouteVerdict]:
    """Every route's verdict for the study, in order, with each clause's."""
    verdicts: list[RouteVerdict] = []
    stopped_by: str | None = None
    for rule in rules:
        if stopped_by is not None:
            verdicts.append(RouteVerdict(rule, False, f"not evaluated: route {stopped_by!r} "
                                         "fired and stops the evaluation"))
            continue
        if not rule.enabled:
            verdicts.append(RouteVerdict(rule, False, "disabled"))
            continue
        clauses = _clauses(rule.match, facts)
        if not clauses:
            verdicts.append(RouteVerdict(rule, True, "no match clause: every study"))
        elif any(c.holds is False for c in clauses):
            failed = [c.key for c in clauses if c.holds is False]
            verdicts.append(RouteVerdict(rule, False, "does not hold: " + ", ".join(failed),
                                         tuple(clauses)))
        elif any(c.holds is None for c in clauses):
            verdicts.append(RouteVerdict(rule, None, "depends on the result: the study is not "
                                         "analysed yet", tuple(clauses)))
        else:
            verdicts.append(RouteVerdict(rule, True, "every clause holds", tuple(clauses)))
        if rule.stop and verdicts[-1].fires:
            stopped_by = rule.name
    return verdicts


def plan_deliveries(rules: Sequence[RouteRule], facts: StudyFacts) -> list[PlannedDelivery]:
    """Deliveries for an analysed study; each (destination, object kind) pair once, first
    route wins."""
    seen: set[tuple[str, str]] = set()
    plan: list[PlannedDelivery] = []
    not_analysed = facts.exam_category in ("failed", "skipped")
    for verdict in explain(rules, facts):
        if not verdict.fires:
            continue
        if not_analysed and verdict.route.on_not_analysed == "silent":
            continue  # the route fired, and says nothing of a study it could not analyse
        for destination in verdict.route.destinations:
            for kind in verdict.route.objects:
                if (destination, kind) in seen:
                    continue
                seen.add((destination, kind))
                plan.append(PlannedDelivery(destination, kind, verdict.route.name, verdict.reason))
    return plan


def describe(verdicts: Sequence[RouteVerdict]) -> str:
    """The dry run as text, one block per route."""
    lines: list[str] = []
    for verdict in verdicts:
        outcome = {True: "FIRES", False: "does not fire", None: "UNDECIDED"}[verdict.fires]
        rule = verdict.route
        lines.append(f"route {rule.name!r}: {outcome} ({verdict.reason})")
        if verdict.fires is not False:
            lines.append(f"  sends {', '.join(rule.objects)} to {', '.join(rule.destinations)}"
                         + ("; stops the evaluation" if rule.stop else ""))
        for clause in verdict.clauses:
            mark = {True: "holds", False: "FAILS", None: "undecided"}[clause.holds]
            lines.append(f"  {clause.key}: {mark}: wanted {clause.wanted}; found {clause.found}")
    if not verdicts:
        lines.append("no routes: nothing is sent anywhere")
    return "\n".join(lines)
