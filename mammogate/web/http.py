"""What every handler of the portal shares: the route decorator for reads (GET and HEAD) and
the dependencies' types (the request's read-only session, the database for short writes, the
data directory, the expected views)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import HttpMethod, Request, route
from litestar.di import NamedDependency
from sqlalchemy.orm import Session

from mammogate.db import Database

DbSession = NamedDependency[Session]  # the request's read-only transaction
Db = NamedDependency[Database]  # for the short write transactions (audit rows)
DataDir = NamedDependency[Path]
ExpectedViews = NamedDependency[list[str]]  # dicom.expected_views
AnyRequest = Request[Any, Any, Any]



def read(path: str, **kwargs: Any) -> Any:
    """``@get`` that also answers HEAD (monitoring probes and link checkers use it)."""
    return route(path, http_method=[HttpMethod.GET, HttpMethod.HEAD], **kwargs)
