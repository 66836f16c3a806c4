"""Peers, destinations and routes: the configuration file seeds the database on first start;
after that the database is the truth at run time, but never silently: :func:`config_diff`
names every difference between the two (``serve`` logs it at start, ``mammogate config diff``
prints it) and :func:`apply_config` makes the database equal to the file, with an audit row."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mammogate.config import Settings
from mammogate.db.audit import audit
from mammogate.db.engine import utcnow
from mammogate.db.models import AllowedPeer, DestinationRow, Meta, RouteRow

log = logging.getLogger(__name__)

SEEDED_KEY = "config_seeded_at"
# the destination columns the file sets, with the value of a kind that has no such field
DESTINATION_FIELDS: dict[str, Any] = {
    "kind": "", "ae_title": "", "host": "", "port": 0, "url": "", "username": "",
    "password_env": "", "token_env": "", "timeout_seconds": 30.0, "tls": False,
    "tls_ca_file": "", "tls_cert_file": "", "tls_key_file": "",
}


def seed_if_first_start(session: Session, settings: Settings) -> bool:
    if session.get(Meta, SEEDED_KEY) is not None:
        return False
    apply_config(session, settings, actor="first start")
    return True


def _file_destinations(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each destination of the file as the columns of its row (fields another kind does not
    have take the column's empty value)."""
    return {
        dest.name: {key: getattr(dest, key, empty) for key, empty in DESTINATION_FIELDS.items()}
        for dest in settings.destinations
    }


def _file_routes(settings: Settings) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "match": r.match.clauses(), "destinations": list(r.destinations),
         "objects": list(r.objects), "stop": r.stop, "on_not_analysed": r.on_not_analysed,
         "enabled": True}
        for r in settings.routes
    ]


def _db_routes(session: Session) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "match": dict(r.match or {}), "destinations": list(r.destinations),
         "objects": list(r.objects), "stop": bool(r.stop),
         "on_not_analysed": r.on_not_analysed, "enabled": bool(r.enabled)}
        for r in session.scalars(select(RouteRow).order_by(RouteRow.position))
    ]


def _file_peers(settings: Settings) -> dict[str, str]:
    return {p.ae_title: ",".join(p.hosts) for p in settings.dicom.all_peers}


def config_diff(session: Session, settings: Settings) -> list[str]:
    """Every difference between the file's peers, destinations and routes and the database's,
    one line each; empty when they agree."""
    lines: list[str] = []
    in_db = {p.ae_title: p.hosts for p in session.scalars(select(AllowedPeer))}
    in_file = _file_peers(settings)
    for ae in sorted(set(in_file) - set(in_db)):
        lines.append(f"allowed calling AE title {ae!r}: in the file, not in the database")
    for ae in sorted(set(in_db) - set(in_file)):
        lines.append(f"allowed calling AE title {ae!r}: in the database, not in the file")
    for ae in sorted(set(in_db) & set(in_file)):
        if in_db[ae] != in_file[ae]:
            lines.append(f"allowed calling AE title {ae!r}: hosts are {in_db[ae] or 'any'!r} in "
                         f"the database, {in_file[ae] or 'any'!r} in the file")

    wanted = _file_destinations(settings)
    rows = {d.name: d for d in session.scalars(select(DestinationRow))}
    for name, values in wanted.items():
        row = rows.get(name)
        if row is None:
            lines.append(f"destination {name!r}: in the file, not in the database")
            continue
        if not row.enabled:
            lines.append(f"destination {name!r}: disabled in the database, in the file")
        for key, value in values.items():
            current = getattr(row, key)
            if current != value:
                lines.append(f"destination {name!r}: {key} is {current!r} in the database, "
                             f"{value!r} in the file")
    for name, row in rows.items():
        if name not in wanted and row.enabled:
            lines.append(f"destination {name!r}: in the database (enabled), not in the file")

    file_routes = {r["name"]: r for r in _file_routes(settings)}
    db_routes = {r["name"]: r for r in _db_routes(session)}
    for name, route in file_routes.items():
        current = db_routes.get(name)
        if current is None:
            lines.append(f"route {name!r}: in the file, not in the database")
            continue
        for key, value in route.items():
            if current[key] != value:
                lines.append(f"route {name!r}: {key} is {current[key]!r} in the database, "
                             f"{value!r} in the file")
    for name in db_routes:
        if name not in file_routes:
            lines.append(f"route {name!r}: in the database, not in the file")
    common_file = [n for n in file_routes if n in db_routes]
    common_db = [n for n in db_routes if n in file_routes]
    if common_file != common_db:
        lines.append(f"routes are in another order: database {common_db}, file {common_file}")
    return lines


def apply_config(session: Session, settings: Settings, *, actor: str = "cli") -> list[str]:
    """Make peers, destinations and routes in the database equal to the configuration;
    returns what changed (also written to the audit log)."""
    changes = config_diff(session, settings)
    existing = {d.name: d for d in session.scalars(select(DestinationRow))}
    for name, values in _file_destinations(settings).items():
        row = existing.pop(name, None) or DestinationRow(name=name)
        for key, value in values.items():
            setattr(row, key, value)
        row.enabled = True
        session.add(row)
    for stale in existing.values():
        stale.enabled = False  # deliveries may reference it; keep the row, stop using it
    session.execute(delete(RouteRow))
    for position, route in enumerate(_file_routes(settings)):
        session.add(RouteRow(position=position, **route))
    session.execute(delete(AllowedPeer))
    for peer in settings.dicom.all_peers:
        session.add(AllowedPeer(ae_title=peer.ae_title, hosts=",".join(peer.hosts),
                                description=peer.description))
    meta = session.get(Meta, SEEDED_KEY) or Meta(key=SEEDED_KEY, value="")
    meta.value = utcnow().isoformat()
    session.add(meta)
    audit(session, actor=actor, action="config-apply", target="peers, destinations, routes", detail="\n".join(changes) or "no differences")
    log.info(
        "configuration applied: %d destinations, %d routes, %d allowed calling AE titles "
        "(%d differences)", len(settings.destinations), len(settings.routes),
        len(settings.dicom.all_peers), len(changes),
    )
    return changes
