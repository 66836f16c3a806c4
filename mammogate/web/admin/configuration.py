"""Peers, destinations and routes as one JSON document an admin edits in the portal.

The document has the shape of the configuration file's tables (``peers``, ``destinations``,
``routes``, each key as documented in mammogate.example.toml). Saving validates it with the very
models that validate the file (an unknown key, a route naming a destination that does not
exist, a bad AE title are refused with the key's name) and then applies it as
``mammogate config apply`` does (``db.seed.apply_config``: one transaction, audited with the
differences). Secrets are not in it: destinations name the environment variables that hold
them.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammogate.config.settings import ConfigError, Settings, load_settings
from mammogate.db import AllowedPeer, Database, DestinationRow, RouteRow
from mammogate.db.seed import DESTINATION_FIELDS, apply_config, config_diff
from mammogate.routing import RouteRule
from mammogate.web.i18n import gettext as _
from mammogate.web.i18n import grouped

MAX_DOCUMENT = 200_000  # characters


def document_routes(text: str) -> list[RouteRule]:
    """The routes of an edited document, in order, as the node would evaluate them (for the
    dry run before saving). ValueError as :func:`parse_document`."""
    return [RouteRule.from_record(route) for route in parse_document(text).routes]


def current_document(session: Session) -> str:
    """The database's peers, enabled destinations and routes as the JSON an admin edits."""
    peers = [{"ae_title": p.ae_title, "hosts": [h for h in p.hosts.split(",") if h],
              **({"description": p.description} if p.description else {})}
             for p in session.scalars(select(AllowedPeer).order_by(AllowedPeer.ae_title))]
    destinations = []
    for row in session.scalars(select(DestinationRow).where(DestinationRow.enabled.is_(True))
                               .order_by(DestinationRow.name)):
        entry: dict[str, Any] = {"name": row.name, "kind": row.kind}
        for key, empty in DESTINATION_FIELDS.items():
            value = getattr(row, key)
            if key != "kind" and value != empty:
                entry[key] = value
        destinations.append(entry)
    routes = []
    for rule in session.scalars(select(RouteRow).order_by(RouteRow.position)):
        route: dict[str, Any] = {"name": rule.name, "destinations": list(rule.destinations)}
        if rule.match:
            route["match"] = dict(rule.match)
        route["objects"] = list(rule.objects)
        if rule.stop:
            route["stop"] = True
        if rule.on_not_analysed != "report":
            route["on_not_analysed"] = rule.on_not_analysed
        routes.append(route)
    return json.dumps({"peers": peers, "destinations": destinations, "routes": routes},
                      indent=2, ensure_ascii=False)


def parse_document(text: str) -> Settings:
    """``text`` validated as the configuration file is: settings holding its peers,
    destinations and routes. ValueError with a message naming the problem."""
    if len(text) > MAX_DOCUMENT:
        raise ValueError(_("the document is longer than %(limit)s characters") % {"limit": grouped(MAX_DOCUMENT)})
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(_("not valid JSON: %(problem)s at line %(line)d, column %(column)d")
                         % {"problem": exc.msg, "line": exc.lineno, "column": exc.colno}) from None
    if not isinstance(document, dict):
        raise ValueError(_("the document must be a JSON object with peers, destinations and routes"))
    unknown = sorted(set(document) - {"peers", "destinations", "routes"})
    if unknown:
        raise ValueError(_("unknown key(s) %(keys)s: the document holds peers, destinations and routes")
                         % {"keys": ", ".join(unknown)})
    try:
        return load_settings(None, dicom={"peers": document.get("peers", [])},
                             destinations=document.get("destinations", []),
                             routes=document.get("routes", []))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def apply_document(db: Database, text: str, *, actor: str) -> list[str]:
    """Validate ``text`` and make the database follow it; the differences applied (empty: the
    document said what the database had). ValueError with a message naming the problem."""
    settings = parse_document(text)
    with db.session() as session:
        if not config_diff(session, settings):
            return []
        return apply_config(session, settings, actor=actor)
