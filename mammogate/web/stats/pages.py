"""The statistics page and its JSON twin."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller
from litestar.params import QueryParameter
from litestar.response import Template
from sqlalchemy.orm import Session

from mammogate.db import utcnow
from mammogate.web.auth.users import any_role
from mammogate.web.http import DbSession, read
from mammogate.web.stats.statistics import Statistics, as_dict, compute

Days = Annotated[int, QueryParameter(name="days", ge=1, le=3650)]


def _statistics(db_session: Session, days: int) -> Statistics:
    return compute(db_session, days, utcnow().date())


class StatisticsController(Controller):
    """What the node did, and how the model does here by the radiologists' ground truth. Counts
    only, no patient data: every role may look."""

    guards = [any_role]

    @read("/statistics", sync_to_thread=True)
    def page(self, db_session: DbSession, days: Days = 30) -> Template:
        return Template("statistics.html", context={"stats": _statistics(db_session, days)})

    @read("/api/statistics", sync_to_thread=True)
    def api(self, db_session: DbSession, days: Days = 30) -> dict[str, Any]:
        return as_dict(_statistics(db_session, days))
