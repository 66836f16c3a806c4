"""The status server of a role run alone (``mammogate scp``, ``worker``, ``sender``): liveness,
readiness and metrics on ``status.bind``:``status.port``, for a load balancer, an orchestrator's
probes and Prometheus. No portal, no sign-in, no patient data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.di import Provide

from mammogate.db import Database
from mammogate.web.http import read
from mammogate.web.system import metrics, ready, report_queues_of


def create_status_app(roles: str, db: Database, readiness: Callable[[], dict[str, str]]) -> Litestar:
    """``/healthz`` (the process answers: 200), ``/ready`` (each of ``readiness``'s checks
    "ok": 200, else 503 with what is not) and ``/metrics`` (this process's counters and the
    database's queue depths; ``MAMMOGATE_METRICS_TOKEN`` guards it as on the portal)."""
    report_queues_of(db)

    @read("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "role": roles}

    def provide_readiness() -> Callable[[], dict[str, str]]:
        return readiness

    return Litestar(
        route_handlers=[healthz, ready, metrics],
        dependencies={"readiness": Provide(provide_readiness, use_cache=True, sync_to_thread=False)},
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
