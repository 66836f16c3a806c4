"""Peers, destinations and routes: seeded from the configuration on first start, then the
database is the truth (``mammogate config apply`` re-syncs on purpose)."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mammogate.config import Settings
from mammogate.db.engine import utcnow
from mammogate.db.models import AllowedPeer, DestinationRow, Meta, RouteRow

log = logging.getLogger(__name__)

SEEDED_KEY = "config_seeded_at"


def seed_if_first_start(session: Session, settings: Settings) -> bool:
    if session.get(Meta, SEEDED_KEY) is not None:
        return False
    apply_config(session, settings)
    return True


def apply_config(session: Session, settings: Settings) -> None:
    """Make peers, destinations and routes in the database equal to the configuration."""
    existing = {d.name: d for d in session.scalars(select(DestinationRow))}
    for dest in settings.destinations:
        row = existing.pop(dest.name, None) or DestinationRow(name=dest.name)
        row.kind, row.ae_title, row.host, row.port, row.enabled = (
            dest.kind, dest.ae_title, dest.host, dest.port, True,
        )
        session.add(row)
    for stale in existing.values():
        stale.enabled = False  # deliveries may reference it; keep the row, stop using it
    session.execute(delete(RouteRow))
    for position, route in enumerate(settings.routes):
        session.add(
            RouteRow(
                position=position,
                name=route.name or f"route-{position + 1}",
                destinations=list(route.destinations),
                objects=list(route.objects),
                enabled=True,
            )
        )
    session.execute(delete(AllowedPeer))
    for ae in settings.dicom.allowed_calling_ae_titles:
        session.add(AllowedPeer(ae_title=ae))
    meta = session.get(Meta, SEEDED_KEY) or Meta(key=SEEDED_KEY, value="")
    meta.value = utcnow().isoformat()
    session.add(meta)
    log.info(
        "configuration applied: %d destinations, %d routes, %d allowed calling AE titles",
        len(settings.destinations), len(settings.routes),
        len(settings.dicom.allowed_calling_ae_titles),
    )
