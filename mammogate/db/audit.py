"""The audit log, written one way by every part of the node: who did what to which target,
when; what the portal, the CLI, the SCP and the worker record (see ``docs/architecture.md``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mammogate.db.engine import utcnow
from mammogate.db.models import AuditEntry

# the columns' sizes: a longer actor or target (an attacker's user name, a long filter) is cut
_ACTOR, _ACTION, _TARGET = 128, 64, 255


def audit(session: Session, actor: str, action: str, target: str = "", detail: str = "",
          *, at: datetime | None = None) -> AuditEntry:
    """Add an audit row to the caller's transaction (committed with what it records)."""
    row = AuditEntry(at=at or utcnow(), actor=actor[:_ACTOR], action=action[:_ACTION],
                     target=target[:_TARGET], detail=detail)
    session.add(row)
    return row
