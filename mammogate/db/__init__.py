"""Persistence: SQLAlchemy 2 models, sessions, Alembic migrations and the job queues.

The same code runs on SQLite (embedded default: WAL, busy timeout, ``BEGIN IMMEDIATE``, atomic
``UPDATE ... RETURNING`` claims) and on PostgreSQL (``FOR UPDATE SKIP LOCKED`` claims).

Errors:
    DatabaseError -- the database cannot be reached or migrated; wraps SQLAlchemy's errors.
"""

from mammogate.db.audit import audit
from mammogate.db.engine import Database, DatabaseError, utcnow
from mammogate.db.models import (
    AllowedPeer,
    Analysis,
    AnalysisImage,
    ApiToken,
    AssociationRecord,
    AuditEntry,
    Base,
    Delivery,
    DestinationRow,
    Feedback,
    Finding,
    Instance,
    Job,
    Report,
    RouteRow,
    SignInThrottle,
    Study,
    User,
    WebSession,
    heatmap_file,
)

__all__ = [
    "AllowedPeer",
    "Analysis",
    "ApiToken",
    "AssociationRecord",
    "AnalysisImage",
    "AuditEntry",
    "Base",
    "Database",
    "DatabaseError",
    "Delivery",
    "DestinationRow",
    "Feedback",
    "Finding",
    "Instance",
    "Job",
    "Report",
    "RouteRow",
    "SignInThrottle",
    "Study",
    "User",
    "audit",
    "utcnow",
    "WebSession",
    "heatmap_file",
]
