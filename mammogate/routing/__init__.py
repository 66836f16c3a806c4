"""Pure routing-rule evaluation: which routes fire for a study, and why.

Routes are evaluated in order; a route without a match clause fires for every study. The
result is a plan: one (destination, object kind) pair per delivery, each with the route that
asked for it, so the portal can show a dry run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RouteRule:
    name: str
    destinations: tuple[str, ...]
    objects: tuple[str, ...]
    enabled: bool = True


@dataclass(frozen=True)
class PlannedDelivery:
    destination: str
    object_kind: str
    route: str
    reason: str


def plan_deliveries(
    rules: Sequence[RouteRule], study_attributes: Mapping[str, str]
) -> list[PlannedDelivery]:
    """Deliveries for a study; each (destination, object kind) pair once, first route wins."""
    seen: set[tuple[str, str]] = set()
    plan: list[PlannedDelivery] = []
    for rule in rules:
        if not rule.enabled:
            continue
        for destination in rule.destinations:
            for kind in rule.objects:
                if (destination, kind) in seen:
                    continue
                seen.add((destination, kind))
                plan.append(
                    PlannedDelivery(destination, kind, rule.name, "no match clause: every study")
                )
    return plan
