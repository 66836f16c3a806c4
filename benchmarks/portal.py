#!/usr/bin/env python3
"""Portal pages on a big database: the worklist and the statistics with PostgreSQL holding
100,000 studies and 1,000,000 findings (the portal issue's quality bar: worklist p95 < 150 ms,
statistics p95 < 300 ms).

A database of its own on the local PostgreSQL (dropped afterwards) is filled with Core bulk
inserts: N studies over the last 30 days (4 analysed views each, 10 findings per study, a CAD
SR and a delivery per analysed study, 1 in 20 not analysed). Then the portal (in-process, the
same app ``serve`` runs, signed in as a radiologist) serves each page R times over HTTP:
the first worklist page, a filtered and sorted one, a search, the statistics of 30 days and of
7 days. Timings are the client's wall clock per request.

    .venv/bin/python benchmarks/portal.py --studies 100000 --repeat 20
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from litestar.testing import TestClient  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from mammogate.config.settings import load_settings  # noqa: E402
from mammogate.db import (  # noqa: E402
    Analysis,
    AnalysisImage,
    Database,
    Delivery,
    DestinationRow,
    Finding,
    Report,
    Study,
    utcnow,
)
from mammogate.web import create_app, create_local_user  # noqa: E402
from tests.peers import postgres_database  # noqa: E402
from tests.unit.web.portal_sample import PASSWORDS, sign_in  # noqa: E402

VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


def fill(db: Database, studies: int, findings_per_study: int, batch: int = 5000) -> None:
    rng = random.Random(7)
    now = utcnow()
    with db.session() as session:
        pacs = DestinationRow(name="pacs", kind="dimse", ae_title="PACS", host="pacs", port=104)
        session.add(pacs)
        session.flush()
        destination = pacs.id
    started = time.perf_counter()
    for first in range(0, studies, batch):
        ids = range(first + 1, min(studies, first + batch) + 1)
        study_rows, analysis_rows, image_rows, finding_rows, report_rows, delivery_rows = [], [], [], [], [], []
        for i in ids:
            at = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            analysed = i % 20 != 0
            study_rows.append(dict(
                id=i, study_instance_uid=f"1.2.826.0.1.3680043.8.498.9.{i}", state="done" if analysed else "skipped",
                accession_number=f"ACC{i:07d}", patient_name=f"PATIENT{i % 5000:04d}^Anne", patient_id=f"PID{i:07d}",
                patient_birth_date="19600101", study_date=at.strftime("%Y%m%d"), study_description="MAMMO",
                calling_ae_title=f"MODALITY{i % 6}", called_ae_title="MAMMOGATE", manufacturer=("HOLOGIC", "GE", "SIEMENS")[i % 3],
                manufacturer_model="", exam_key="", instance_count=4, first_received_at=at, last_received_at=at,
                updated_at=at, last_error="", source="dicom"))
            score = rng.random() if analysed else None
            analysis_rows.append(dict(
                id=i, study_id=i, model_name="mammogate-cnn", model_version="2.0.0", model_sha256="0" * 64,
                model_description="", operating_point=0.32, exam_score=score, score_left=score, score_right=score,
                category=("flagged" if score is not None and score >= 0.32 else "not_flagged") if analysed else "skipped",
                elapsed_seconds=1.0, worker="w", created_at=at + timedelta(seconds=rng.uniform(2, 60))))
            for k, (laterality, view) in enumerate(VIEWS):
                image_rows.append(dict(analysis_id=i, sop_instance_uid=f"1.2.9.{i}.{k}", status="analysed" if analysed else "skipped",
                                       laterality=laterality, view=view, score=score, reason="", overlay_path=""))
            if analysed:
                for f in range(findings_per_study):
                    laterality, view = VIEWS[f % 4]
                    finding_rows.append(dict(analysis_id=i, sop_instance_uid=f"1.2.9.{i}.{f % 4}", laterality=laterality,
                                             view=view, probability=rng.random(), center_column=100.0, center_row=200.0,
                                             outline=[], certainty=0.5, nipple_distance_mm=40.0, lesion=None))
                report_rows.append(dict(id=i, analysis_id=i, kind="cad_sr", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.50",
                                        sop_instance_uid=f"1.2.9.{i}.99", series_instance_uid=f"1.2.9.{i}.98", path="",
                                        created_at=at))
                delivery_rows.append(dict(report_id=i, destination_id=destination, route="r",
                                          state="dead" if i % 97 == 0 else "delivered", attempts=1, next_attempt_at=at,
                                          locked_by="", last_error="", created_at=at))
        with db.session() as session:
            for model, rows in ((Study, study_rows), (Analysis, analysis_rows), (AnalysisImage, image_rows),
                                (Finding, finding_rows), (Report, report_rows), (Delivery, delivery_rows)):
                if rows:
                    session.execute(insert(model), rows)
        print(f"  {min(studies, first + batch):,} studies written ({time.perf_counter() - started:.0f} s)", flush=True)
    with db.session() as session:
        # bulk inserts bypass the ORM event that keeps each study's current analysis
        session.execute(text("UPDATE studies SET current_analysis_id = id"))
        for table in ("studies", "analyses", "reports"):
            session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))


def timed(client: TestClient, path: str, repeat: int) -> list[float]:  # type: ignore[type-arg]
    client.get(path)  # warm
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return samples


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--findings-per-study", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{platform.node()} {platform.machine()}, Python {platform.python_version()}, {datetime.now():%Y-%m-%d}")
    with postgres_database() as url:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(None, node={"data_dir": tmp}, database={"url": url})
            db = Database(settings.database_url)
            db.migrate()
            create_local_user(db, "rita", "radiologist", PASSWORDS["rita"])
            print(f"filling PostgreSQL with {args.studies:,} studies, {args.studies * 19 // 20 * args.findings_per_study:,} findings")
            fill(db, args.studies, args.findings_per_study)
            with TestClient(create_app(settings, db)) as client:
                sign_in(client, "rita")
                pages = {
                    "worklist, first page": "/",
                    "worklist, flagged, score 50-100 %, by score": "/?category=flagged&score_min=50&sort=score",
                    "worklist, search by patient ID": "/?q=PID00123",
                    "worklist API, page 100": "/api/studies?page=100",
                    "statistics, 30 days": "/statistics?days=30",
                    "statistics, 7 days": "/statistics?days=7",
                }
                print(f"\n| page ({args.studies:,} studies) | median ms | p95 ms |\n|---|---|---|")
                for name, path in pages.items():
                    samples = timed(client, path, args.repeat)
                    print(f"| {name} | {statistics.median(samples) * 1000:.0f} | {p95(samples) * 1000:.0f} |", flush=True)
            db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
