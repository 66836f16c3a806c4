"""``/metrics``: the Prometheus text format, open like /healthz, or behind a bearer token when
``$MAMMOGATE_METRICS_TOKEN`` is set; the queue depths are the portal's database's."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mammogate.config.settings import Settings
from mammogate.db import Database
from mammogate.web import create_app
from mammogate.web.system import METRICS_TOKEN_ENV
from tests.unit.web.portal_sample import PATIENT_NAME, STUDY_UID

TOKEN = "s3cret-scrape-token-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_open_without_a_token_and_reports_this_databases_queues(
    client: TestClient[Litestar], study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(METRICS_TOKEN_ENV, raising=False)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("mammogate_queue_depth", (("queue", "analysis"), ("state", "pending")))] == 0
    assert ("mammogate_queue_depth", (("queue", "delivery"), ("state", "dead"))) in samples
    assert "mammogate_instances_received_total" in response.text
    assert PATIENT_NAME not in response.text and STUDY_UID not in response.text
    assert client.head("/metrics").status_code == 200


def test_with_a_token_set_only_that_bearer_token_reads_the_metrics(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(METRICS_TOKEN_ENV, TOKEN)
    with TestClient(create_app(settings, db)) as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert METRICS_TOKEN_ENV in missing.text and "Bearer" in missing.headers["www-authenticate"]
        assert "mammogate_" not in missing.text
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401 and "wrong" in wrong.text
        basic = client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        good = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and "mammogate_queue_depth" in good.text


def test_the_queue_depths_follow_the_database(
    client: TestClient[Litestar], db: Database, study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select

    from mammogate.db import Study
    from mammogate.db.queue import enqueue_analysis

    monkeypatch.delenv(METRICS_TOKEN_ENV, raising=False)
    key = ("mammogate_queue_depth", (("queue", "analysis"), ("state", "pending")))
    before = _samples(client.get("/metrics").text)[key]
    with db.session() as session:
        row = session.scalar(select(Study).where(Study.study_instance_uid == study))
        assert row is not None
        enqueue_analysis(session, row)
    assert _samples(client.get("/metrics").text)[key] == before + 1
