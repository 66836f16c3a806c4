"""Routing and delivery end to end: three destination kinds (DIMSE, Orthanc REST, DICOMweb
STOW-RS) on real Orthanc servers, routes that match on the association, the headers and the
result, the dry run, re-analysis with predecessors, resubmission, connection tests, and the
file/database drift that is never silent. On SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from mammogate.db import Analysis, AuditEntry, Delivery, Report, Study
from mammogate.training.synthetic import write_study
from tests.peers import Node, Orthanc, wait_until

USER, PASSWORD = "mammogate", "orthanc-test-password"
ADMIN_PASSWORD = "a long enough passphrase"


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[dict[str, Orthanc]]:
    """Three PACS, one per destination kind, so each delivery is seen where it landed."""
    servers = {
        "dimse": Orthanc(tmp_path / "pacs-dimse", aet="PACSDIMSE"),
        "rest": Orthanc(tmp_path / "pacs-rest", users={USER: PASSWORD}),
        "web": Orthanc(tmp_path / "pacs-web", dicomweb=True, users={USER: PASSWORD}),
    }
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _destinations(pacs: dict[str, Orthanc]) -> list[dict[str, object]]:
    return [
        {"name": "pacs-dimse", "kind": "dimse", "ae_title": pacs["dimse"].aet,
         "host": "127.0.0.1", "port": pacs["dimse"].dicom_port},
        {"name": "pacs-rest", "kind": "orthanc", "url": pacs["rest"].url, "username": USER,
         "password_env": "TEST_PACS_PASSWORD"},
        {"name": "pacs-web", "kind": "stow", "url": f"{pacs['web'].url}/dicom-web",
         "username": USER, "password_env": "TEST_PACS_PASSWORD"},
    ]


ROUTES: list[dict[str, object]] = [
    # on the association and a header regex, and on the result (any analysed study has a score)
    {"name": "modality1-scored", "destinations": ["pacs-rest"],
     "match": {"calling_ae_title": "MODALITY1", "manufacturer": "re:mammogate .*",
               "exam_score_min": 0.0}},
    # a glob on the institution and a result clause that fails (no score reaches 1)
    {"name": "certain-only", "destinations": ["pacs-dimse"],
     "match": {"institution": "Synthetic*", "exam_score_min": 1.0}},
    {"name": "everything-web", "destinations": ["pacs-web"], "stop": True},
    # after a route that stops: never evaluated
    {"name": "after-stop", "destinations": ["pacs-dimse"]},
]


def _session(node: Node, database_url: str) -> Session:
    url = database_url or f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}"
    return Session(create_engine(url))


def _sr_uids(server: Orthanc, study_uid: str) -> set[str]:
    return {i["MainDicomTags"]["SOPInstanceUID"]
            for i in server.find_instances(StudyInstanceUID=study_uid, Modality="SR")}


def _deliveries(node: Node, database_url: str) -> list[tuple[Any, ...]]:
    """(route, destination, state, report SOP Instance UID, attempts, delivered at) of every
    delivery."""
    with _session(node, database_url) as session:
        return [(d.route, d.destination.name, d.state, d.report.sop_instance_uid, d.attempts,
                 d.delivered_at)
                for d in session.scalars(select(Delivery).order_by(Delivery.id))]


def test_routes_deliver_by_dimse_rest_and_stow_and_can_be_explained_redone_and_resent(
    tmp_path: Path, pacs: dict[str, Orthanc], database_url: str
) -> None:
    node = Node(tmp_path / "node", destinations=_destinations(pacs), routes=ROUTES,
                database_url=database_url, extra_env={"TEST_PACS_PASSWORD": PASSWORD})
    node.write_config()
    study = write_study(tmp_path / "study", seed=808, lesion=True)
    files = [i.path for i in study.images if i.path]
    uid = study.study_instance_uid

    # the dry run on the files, before they are sent: result clauses undecided
    dry = node.run_cli("route", "explain", str(tmp_path / "study"), "--calling-ae-title",
                       "MODALITY1").stdout
    assert "route 'modality1-scored': UNDECIDED" in dry
    assert "manufacturer: holds: wanted 're:mammogate .*'; found 'mammogate synthetic'" in dry
    assert "route 'certain-only': UNDECIDED" in dry
    assert "route 'everything-web': FIRES" in dry
    assert "route 'after-stop': does not fire (not evaluated: route 'everything-web'" in dry

    node.start()
    try:
        assert node.storescu(*files, calling="MODALITY1").returncode == 0
        wait_until(lambda: _sr_uids(pacs["rest"], uid), 120, "the CAD SR in the REST PACS")
        first_sr = _sr_uids(pacs["rest"], uid)
        wait_until(lambda: _sr_uids(pacs["web"], uid) == first_sr, 60,
                   "the same CAD SR in the DICOMweb PACS")
        rows = wait_until(
            lambda: (r := _deliveries(node, database_url)) and all(d[2] == "delivered" for d in r)
            and r, 30, "every delivery recorded as delivered")
        assert sorted((route, dest) for route, dest, *_ in rows) == [
            ("everything-web", "pacs-web"), ("modality1-scored", "pacs-rest")]
        assert _sr_uids(pacs["dimse"], uid) == set(), "routes that do not fire send nothing"

        # the dry run for the analysed study: every clause decided
        explained = node.run_cli("route", "explain", uid).stdout
        assert "route 'modality1-scored': FIRES (every clause holds)" in explained
        assert "calling_ae_title: holds: wanted 'MODALITY1'; found 'MODALITY1'" in explained
        assert "route 'certain-only': does not fire (does not hold: exam_score_min)" in explained
        assert "institution: holds: wanted 'Synthetic*'" in explained

        # the connection test of each kind
        for name in ("pacs-dimse", "pacs-rest", "pacs-web"):
            tested = node.run_cli("destination", "test", name)
            assert f"{name}: OK" in tested.stdout
        assert "C-ECHO to PACSDIMSE" in node.run_cli("destination", "test", "pacs-dimse").stdout

        # a re-analysis supersedes the result; its SR names its predecessor
        out = node.run_cli("study", "reanalyse", uid).stdout
        assert "queued" in out
        second = wait_until(lambda: _sr_uids(pacs["rest"], uid) - first_sr, 120,
                            "the re-analysis's SR in the REST PACS")
        (second_uid,) = second
        (first_uid,) = first_sr
        orthanc_id = pacs["rest"].find_instances(SOPInstanceUID=second_uid)[0]["ID"]
        sr = pydicom.dcmread(io.BytesIO(pacs["rest"].instance_file(orthanc_id)))
        predecessor = sr.PredecessorDocumentsSequence[0]
        assert predecessor.StudyInstanceUID == uid
        refs = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence
        assert [r.ReferencedSOPInstanceUID for r in refs] == [first_uid]
        with _session(node, database_url) as session:
            analyses = session.scalars(select(Analysis).join(Study, Study.id == Analysis.study_id)
                                       .where(Study.study_instance_uid == uid)
                                       .order_by(Analysis.id)).all()
            assert len(analyses) == 2 and analyses[1].supersedes_id == analyses[0].id
            audit = session.scalars(select(AuditEntry.action)).all()
            assert "study-reanalyse" in audit

        wait_until(lambda: all(d[2] == "delivered" for d in _deliveries(node, database_url))
                   and len(_deliveries(node, database_url)) == 4, 60, "the second deliveries")
        before = {d[:4]: d[5] for d in _deliveries(node, database_url)}

        # resubmitting the study's current deliveries sends them again (attempts start over)
        out = node.run_cli("delivery", "resubmit", "--study", uid).stdout
        assert "2 deliveries queued again" in out

        def resent() -> bool:
            rows = _deliveries(node, database_url)
            again = [d for d in rows if d[2] == "delivered" and d[5] > before[d[:4]]]
            return len(again) == 2 and all(d[3] == second_uid and d[4] == 1 for d in again)
        wait_until(resent, 60, "the resubmitted deliveries delivered again")
        # the same from the JSON API, for an admin only
        node.run_cli("user", "add", "ada", "--role", "admin", "--password-stdin",
                     stdin=ADMIN_PASSWORD + "\n")
        node.run_cli("user", "add", "rita", "--role", "radiologist", "--password-stdin",
                     stdin=ADMIN_PASSWORD + "\n")
        with closing(node.login("ada", ADMIN_PASSWORD)) as admin:
            # the portal shows one current result, the superseded one as history
            detail = admin.get(f"/api/studies/{uid}").json()
            assert [e["superseded_by"] for e in detail["earlier"]] == [detail["analysis"]["id"]]
            delivered_by = {(d["destination"], d["route"]) for r in detail["analysis"]["reports"]
                            for d in r["deliveries"]}
            assert delivered_by == {("pacs-rest", "modality1-scored"), ("pacs-web", "everything-web")}
            page = admin.get(f"/studies/{uid}").text
            assert 'id="earlier-analyses"' in page and "Earlier results (superseded)" in page
            answer = admin.get(f"/api/admin/studies/{uid}/routes")
            assert answer.status_code == 200
            routes = {r["route"]: r for r in answer.json()["routes"]}
            assert routes["modality1-scored"]["fires"] is True
            assert routes["after-stop"]["fires"] is False
            assert {c["key"]: c["holds"] for c in routes["certain-only"]["clauses"]} == {
                "institution": True, "exam_score_min": False}
            csrf = {"x-csrftoken": admin.cookies["mammogate_csrf"]}
            answer = admin.post("/api/admin/deliveries/resubmit", json={"ids": [1]}, headers=csrf)
            assert answer.status_code == 202 and answer.json() == {"resubmitted": [1]}
            answer = admin.post("/api/admin/studies/1.2.3.4/reanalyse", headers=csrf)
            assert answer.status_code == 404 and "no study 1.2.3.4" in answer.text
            assert admin.post("/api/admin/deliveries/resubmit", json={"ids": [1]}).status_code == 403
            # a connection test from the portal is a job for the sender
            job = admin.post("/api/admin/destinations/pacs-web/test", headers=csrf).json()["job"]
            done = wait_until(lambda: (j := admin.get(f"/api/admin/jobs/{job}").json())["state"]
                              in ("done", "failed") and j, 30, "the connection test")
            assert done["state"] == "done" and "DICOMweb server answers" in done["result"]
            assert admin.post("/api/admin/destinations/nowhere/test", headers=csrf).status_code == 404
        with closing(node.login("rita", ADMIN_PASSWORD)) as radiologist:
            assert radiologist.get(f"/api/admin/studies/{uid}/routes").status_code == 403
        refused = node.run_cli("delivery", "resubmit", "99999", check=False)
        assert refused.returncode == 1 and "no delivery 99999" in refused.stderr
        refused = node.run_cli("study", "reanalyse", "1.2.3.4", check=False)
        assert refused.returncode == 1 and "no study 1.2.3.4" in refused.stderr
    finally:
        node.stop()


def test_wrong_credentials_end_dead_with_the_reason_and_resubmit_revives(
    tmp_path: Path, pacs: dict[str, Orthanc]
) -> None:
    node = Node(tmp_path / "node", destinations=_destinations(pacs)[1:2],
                extra_env={"TEST_PACS_PASSWORD": "not the password"})
    node.write_config()
    study = write_study(tmp_path / "study", seed=809, lesion=False)
    failed = node.run_cli("destination", "test", "pacs-rest", check=False)
    assert failed.returncode == 1
    assert "HTTP 401" in failed.stdout and "credentials" in failed.stdout
    node.start()
    try:
        assert node.storescu(*[i.path for i in study.images if i.path]).returncode == 0
        (row,) = wait_until(lambda: [d for d in _deliveries(node, "") if d[2] == "dead"], 120,
                            "the delivery to die on HTTP 401")
        assert row[4] == 1, "a refusal of the credentials is not retried"
        with _session(node, "") as session:
            error = session.scalars(select(Delivery.last_error)).one()
        assert "HTTP 401" in error and "password_env" in error
    finally:
        node.stop()
    # the admin fixes the secret and resubmits the dead deliveries
    node.extra_env["TEST_PACS_PASSWORD"] = PASSWORD
    node.start()
    try:
        out = node.run_cli("delivery", "resubmit", "--dead").stdout
        assert "1 deliveries queued again" in out
        wait_until(lambda: _sr_uids(pacs["rest"], study.study_instance_uid), 60,
                   "the SR in the PACS after the resubmission")
    finally:
        node.stop()


def test_file_and_database_never_differ_silently(tmp_path: Path, pacs: dict[str, Orthanc]) -> None:
    node = Node(tmp_path / "node", destinations=_destinations(pacs)[:1])
    node.write_config()
    assert "match the file" in node.run_cli("config", "diff").stdout  # seeded on first use

    # the admin edits the file: a new destination and a route that filters
    node.destinations = _destinations(pacs)[:2]
    node.routes = [{"name": "flagged", "destinations": ["pacs-rest"],
                    "match": {"exam_category": ["flagged"]}}]
    node.write_config()
    diff = node.run_cli("config", "diff", check=False)
    assert diff.returncode == 1
    assert "destination 'pacs-rest': in the file, not in the database" in diff.stdout
    assert "route 'flagged': in the file, not in the database" in diff.stdout
    assert "route 'route-1': in the database, not in the file" in diff.stdout

    node.extra_env["TEST_PACS_PASSWORD"] = PASSWORD
    node.start()
    try:
        log = node.log_text()
        assert "the configuration file differs from the database" in log
        assert "destination 'pacs-rest': in the file, not in the database" in log
    finally:
        node.stop()

    applied = node.run_cli("config", "apply").stdout
    assert "destination 'pacs-rest': in the file" in applied
    assert node.run_cli("config", "diff").returncode == 0
    with _session(node, "") as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "config-apply")
                                .order_by(AuditEntry.id.desc())).first()
        assert entry is not None and "pacs-rest" in entry.detail
        assert entry.actor.startswith("cli:")
        assert session.scalar(select(Report.id)) is None  # nothing analysed in this test


def test_an_unknown_match_key_is_refused_at_start_with_its_name(tmp_path: Path) -> None:
    node = Node(tmp_path / "node", destinations=[
        {"name": "pacs", "kind": "dimse", "ae_title": "X", "host": "127.0.0.1", "port": 4242}],
        routes=[{"destinations": ["pacs"], "match": {"manufacturor": "GE*"}}])
    node.write_config()
    result = node.run_cli("serve", check=False)
    assert result.returncode == 2
    assert "routes.0.match.manufacturor: not a setting this node knows" in result.stderr
