"""Ingest as a PACS administrator manages it: several listening AE titles, peers bound to hosts,
the association history (CLI and API), start-up errors that name the setting, readiness, and
studies that are analysed the moment their four views are present."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mammogate.app import open_database
from mammogate.config import load_settings
from mammogate.db import AssociationRecord, Database, Study
from mammogate.dicom_node.scp import Scp
from mammogate.dicom_node.spool import Spool
from mammogate.training.synthetic import write_study
from tests.peers import ECHOSCU, STORESCU, Node, Orthanc, free_port, require_tool, wait_until

PASSWORD = "correct horse battery staple"


def _dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    require_tool(tool)
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60,
                          env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})


class Listening:
    """The SCP in this process, with two AE titles and three kinds of peer."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.settings = load_settings(None, node={"data_dir": str(root)}, dicom={
            "port": self.port, "ae_title": "MAMMOGATE", "additional_ae_titles": ["MAMMO_RESEARCH"],
            "allowed_calling_ae_titles": ["ANYWHERE"],
            "peers": [{"ae_title": "MODALITY", "hosts": ["127.0.0.0/8"]},
                      {"ae_title": "FARAWAY", "hosts": ["192.0.2.7", "198.51.100.0/24"]}],
            "settle_seconds": 60,
        })
        self.db: Database = open_database(self.settings)
        self.scp = Scp(self.settings, self.db, Spool(self.settings.spool_dir))
        self.scp.start()

    def echo(self, calling: str, called: str) -> subprocess.CompletedProcess[str]:
        return _dcmtk(ECHOSCU, "-aet", calling, "-aec", called, "127.0.0.1", str(self.port))

    def store(self, calling: str, called: str, *files: Path) -> subprocess.CompletedProcess[str]:
        return _dcmtk(STORESCU, "-aet", calling, "-aec", called, "127.0.0.1", str(self.port),
                      *map(str, files))

    def history(self) -> list[AssociationRecord]:
        with self.db.read_session() as session:
            return list(session.scalars(select(AssociationRecord).order_by(AssociationRecord.id)))


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Listening]:
    running = Listening(tmp_path / "node")
    try:
        yield running
    finally:
        running.scp.stop()
        running.db.dispose()


def _closed(listening: Listening, count: int) -> list[AssociationRecord]:
    """The history once ``count`` associations are in it and none is open any more."""
    def settled() -> list[AssociationRecord] | None:
        rows = listening.history()
        return rows if len(rows) == count and all(r.outcome != "open" for r in rows) else None
    result: list[AssociationRecord] = wait_until(settled, 10, f"{count} associations recorded")
    return result


def test_each_listening_ae_title_and_peer_rule_with_the_reason_in_the_history(
    listening: Listening, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mammogate")
    study = write_study(tmp_path / "study", seed=5, lesion=False)
    files = [image.path for image in study.images if image.path is not None]

    assert listening.echo("MODALITY", "MAMMOGATE").returncode == 0
    stored = listening.store("MODALITY", "MAMMO_RESEARCH", *files)
    assert stored.returncode == 0, stored.stderr
    assert listening.echo("ANYWHERE", "MAMMO_RESEARCH").returncode == 0

    wrong_called = listening.echo("MODALITY", "SOMEONE_ELSE")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
    unknown = listening.echo("INTRUDER", "MAMMOGATE")
    assert "Calling AE Title Not Recognized" in unknown.stdout + unknown.stderr
    wrong_host = listening.echo("FARAWAY", "MAMMOGATE")  # a known peer, but not from here
    assert "Calling AE Title Not Recognized" in wrong_host.stdout + wrong_host.stderr

    rows = _closed(listening, 6)
    by_calling = [(r.calling_ae_title, r.called_ae_title, r.accepted, r.outcome) for r in rows]
    assert by_calling == [
        ("MODALITY", "MAMMOGATE", True, "released"),
        ("MODALITY", "MAMMO_RESEARCH", True, "released"),
        ("ANYWHERE", "MAMMO_RESEARCH", True, "released"),
        ("MODALITY", "SOMEONE_ELSE", False, "rejected"),
        ("INTRUDER", "MAMMOGATE", False, "rejected"),
        ("FARAWAY", "MAMMOGATE", False, "rejected"),
    ]
    assert [r.instances_stored for r in rows[:3]] == [0, 4, 0]
    assert all(r.address == "127.0.0.1" and r.port > 0 and r.security == "" for r in rows)
    assert "'SOMEONE_ELSE' is not one of this node's (MAMMOGATE, MAMMO_RESEARCH" in rows[3].reason
    assert "'INTRUDER' is not an allowed peer" in rows[4].reason
    assert "allowed from 192.0.2.7, 198.51.100.0/24 only, not from 127.0.0.1" in rows[5].reason
    assert rows[0].ended_at is not None and rows[0].ended_at >= rows[0].requested_at

    with listening.db.read_session() as session:
        (row,) = session.scalars(select(Study)).all()
        # the study remembers which of the node's AE titles was called (routes match on it)
        assert row.called_ae_title == "MAMMO_RESEARCH" and row.calling_ae_title == "MODALITY"
    # the calling AE title is logged as sent (pynetdicom has not set it when the request comes)
    assert "association accepted: MODALITY -> MAMMO_RESEARCH from 127.0.0.1" in caplog.text


def test_a_refreshed_peer_list_applies_to_the_next_association(listening: Listening) -> None:
    from mammogate.db import AllowedPeer

    assert listening.echo("MODALITY", "MAMMOGATE").returncode == 0
    with listening.db.session() as session:
        peer = session.scalars(select(AllowedPeer).where(AllowedPeer.ae_title == "MODALITY")).one()
        peer.hosts = "192.0.2.0/24"
    listening.scp.refresh_policy()
    moved = listening.echo("MODALITY", "MAMMOGATE")
    assert moved.returncode != 0
    rows = _closed(listening, 2)
    assert rows[1].reason.endswith("allowed from 192.0.2.0/24 only, not from 127.0.0.1")


def test_association_history_from_the_cli_and_the_admin_api(tmp_path: Path) -> None:
    node = Node(tmp_path / "node", allowed_calling_ae_titles=["MODALITY"],
                dicom={"additional_ae_titles": ["MAMMO_RESEARCH"]})
    node.write_config()
    node.run_cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    node.run_cli("user", "add", "reader", "--role", "radiologist", "--password-stdin",
                 stdin=PASSWORD)
    node.start()
    try:
        assert node.echoscu().returncode == 0
        assert node.echoscu(calling="STRANGER").returncode != 0
        wait_until(lambda: "rejected" in node.run_cli("association", "list").stdout, 10,
                   "the rejection in the history")
        listed = node.run_cli("association", "list").stdout
        assert "MODALITY" in listed and "released" in listed
        assert "reason: calling AE title 'STRANGER' is not an allowed peer" in listed
        only_rejected = node.run_cli("association", "list", "--rejected").stdout
        assert "STRANGER" in only_rejected and "released" not in only_rejected

        admin = node.login("admin", PASSWORD)
        rows = admin.get("/api/admin/associations", params={"rejected": "true"}).json()
        assert [(r["calling_ae_title"], r["accepted"], r["outcome"]) for r in rows] == [
            ("STRANGER", False, "rejected")]
        assert "not an allowed peer" in rows[0]["reason"]
        every = admin.get("/api/admin/associations", params={"calling": "MODALITY"}).json()
        assert [r["called_ae_title"] for r in every] == ["MAMMOGATE"]
        assert admin.get("/api/admin/associations", params={"limit": 0}).status_code == 400
        reader = node.login("reader", PASSWORD)
        assert reader.get("/api/admin/associations").status_code == 403
    finally:
        assert node.stop() == 0


def test_ready_reports_each_check_and_a_model_that_did_not_load(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    node.start()
    try:
        ready = httpx.get(f"{node.url}/ready", timeout=10)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {
            "database": "ok", "spool": "ok", "dicom": "ok", "model": "ok"}}
    finally:
        assert node.stop() == 0

    # a model process that may not hold the model (TensorFlow alone needs more than the
    # smallest limit allowed): the node serves, /ready says why not
    starved = Node(tmp_path / "starved",
                   extra_env={"MAMMOGATE_WORKER__MAX_MEMORY_BYTES": str(256 * 2**20)})
    starved.write_config()
    log_from = 0
    process = subprocess.Popen(
        [*starved.executable, "serve", "--config", str(starved.config_path)],
        stdout=starved.log_path.open("ab"), stderr=subprocess.STDOUT, env=starved.env())
    starved.process = process
    try:
        wait_until(lambda: "the model did not load" in starved.log_text()[log_from:], 120,
                   "the model to fail to load")
        answer = httpx.get(f"{starved.url}/ready", timeout=10)
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
        assert body["checks"]["model"].startswith("the model did not load")
        assert httpx.get(f"{starved.url}/healthz", timeout=10).status_code == 200
    finally:
        starved.stop()


def test_a_busy_port_names_the_port_and_the_setting(tmp_path: Path) -> None:
    first = Node(tmp_path / "first")
    first.start()
    try:
        for key, clash in (("dicom.port", {"dicom_port": first.dicom_port}),
                           ("web.port", {"web_port": first.web_port})):
            second = Node(tmp_path / f"second-{key}", **clash)  # type: ignore[arg-type]
            second.write_config()
            result = subprocess.run(
                [*second.executable, "serve", "--config", str(second.config_path)],
                capture_output=True, text=True, env=second.env(), timeout=120)
            assert result.returncode == 1
            port = clash.get("dicom_port") or clash.get("web_port")
            assert f"port {port} on 127.0.0.1" in result.stderr and key in result.stderr
            assert "Traceback" not in result.stderr
        assert first.echoscu().returncode == 0  # the first node is unharmed
    finally:
        assert first.stop() == 0


def test_data_dir_is_relative_to_the_configuration_file_and_logged(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    node.write_config()
    text = node.config_path.read_text().replace(f'data_dir = "{node.root / "var"}"',
                                                'data_dir = "relative-var"')
    node.config_path.write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    process = subprocess.Popen(
        [*node.executable, "serve", "--config", str(node.config_path)], cwd=elsewhere,
        stdout=node.log_path.open("ab"), stderr=subprocess.STDOUT, env=node.env())
    node.process = process
    try:
        wait_until(node._ready, 120, "the node to serve")
        assert f"data directory {node.root / 'relative-var'}" in node.log_text()
        assert (node.root / "relative-var" / "mammogate.sqlite3").is_file()
        assert not (elsewhere / "relative-var").exists()
    finally:
        assert node.stop() == 0


def _state(db: Database, study_uid: str) -> str:
    with db.read_session() as session:
        return str(session.scalars(
            select(Study.state).where(Study.study_instance_uid == study_uid)).one())


def test_four_views_are_analysed_at_once_and_three_wait_for_quiet(tmp_path: Path) -> None:
    node = Node(tmp_path / "node", settle_seconds=600)  # quiet would take ten minutes
    node.start()
    db = Database(load_settings(node.config_path).database_url)
    try:
        complete = write_study(tmp_path / "complete", seed=11, lesion=False)
        partial = write_study(tmp_path / "partial", seed=12, lesion=False)
        partial_files = [i.path for i in partial.images if i.path is not None
                         and i.path.name != "R_MLO.dcm"]
        assert len(partial_files) == 3
        assert node.storescu(*partial_files).returncode == 0
        assert node.storescu(*[i.path for i in complete.images if i.path]).returncode == 0
        wait_until(lambda: _state(db, complete.study_instance_uid) == "done", 120,
                   "the four-view study to be analysed")
        assert _state(db, partial.study_instance_uid) == "receiving"
        assert (f"study {complete.study_instance_uid} ready (views RCC, LCC, RMLO, LMLO present)"
                in node.log_text())
    finally:
        db.dispose()
        assert node.stop() == 0


def test_a_peer_host_that_is_not_an_address_network_or_name_is_refused_at_start(
    tmp_path: Path
) -> None:
    node = Node(tmp_path / "node", dicom={"peers": [{"ae_title": "MG1", "hosts": ["10.0.0.1/40"]}]})
    node.write_config()
    result = node.run_cli("config", "diff", check=False)
    assert result.returncode != 0
    assert "dicom.peers.hosts: '10.0.0.1/40' is neither an IP address" in result.stderr
    listed = json.dumps(["RCC", "LXX"])
    node.config_path.write_text(node.config_path.read_text().replace(
        "peers = [{ ae_title = \"MG1\", hosts = [\"10.0.0.1/40\"] }]", f"expected_views = {listed}"))
    result = node.run_cli("config", "diff", check=False)
    assert "dicom.expected_views: 'LXX' is not laterality" in result.stderr


def test_the_readmes_ways_of_sending_real_compressed_files(listening: Listening) -> None:
    """RLE (CBIS-DDSM) and JPEG Lossless (GE, Siemens) files: plain storescu cannot send them,
    dcmsend and storescu -xr/-xs can, and each is stored in its own transfer syntax with the
    view and laterality the node read from it (for CBIS-DDSM: from the PatientID)."""
    from mammogate.db import Instance
    from tests.shared_data import shared_data_dir

    data = shared_data_dir() / "dicom"
    cbis = sorted((data / "cbis_ddsm").glob("*.dcm"))
    jpeg = sorted((data / "vendor_samples").glob("fodicom_*.dcm"))
    assert cbis and jpeg
    plain = listening.store("MODALITY", "MAMMOGATE", cbis[0])
    assert plain.returncode != 0 or "No presentation context" in plain.stdout + plain.stderr
    dcmsend = _dcmtk("/usr/bin/dcmsend", "-dn", "-aet", "MODALITY", "-aec", "MAMMOGATE", "127.0.0.1",
                     str(listening.port), *map(str, cbis))
    assert dcmsend.returncode == 0, dcmsend.stdout + dcmsend.stderr
    xs = _dcmtk(STORESCU, "-xs", "-aet", "MODALITY", "-aec", "MAMMOGATE", "127.0.0.1",
                str(listening.port), *map(str, jpeg))
    assert xs.returncode == 0, xs.stdout + xs.stderr
    with listening.db.read_session() as session:
        rows = {Path(r.path).stem: r for r in session.scalars(select(Instance))}
    syntaxes = {r.transfer_syntax_uid for r in rows.values()}
    assert syntaxes == {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.70"}  # RLE, JPEG Lossless
    assert len(rows) == len(cbis) + len(jpeg)
    assert all(r.laterality in ("L", "R") and r.view in ("CC", "MLO") for r in rows.values())


def _cbis_four_views() -> list[Path]:
    from tests.shared_data import shared_data_dir

    files = sorted((shared_data_dir() / "dicom" / "cbis_ddsm").glob("*.dcm"))
    assert len(files) == 4  # one woman's four views, each its own StudyInstanceUID
    return files


def test_without_grouping_cbis_views_stay_four_studies_each_missing_three_views(
    listening: Listening
) -> None:
    from mammogate.db.queue import views_present

    files = _cbis_four_views()
    result = _dcmtk("/usr/bin/dcmsend", "-dn", "-aet", "MODALITY", "-aec", "MAMMOGATE",
                    "127.0.0.1", str(listening.port), *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr
    with listening.db.read_session() as session:
        studies = list(session.scalars(select(Study)))
        assert len(studies) == 4 and all(s.exam_key == "" for s in studies)
        present = views_present(session, [s.id for s in studies])
    assert sorted(v for views in present.values() for v in views) == ["LCC", "LMLO", "RCC", "RMLO"]
    assert all(len(views) == 1 for views in present.values())


def test_grouping_makes_one_exam_of_a_womans_per_image_studies_and_says_so(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    import pydicom

    from tests.peers import DCIODVFY

    files = _cbis_four_views()
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    own_studies = [str(h.StudyInstanceUID) for h in headers]
    assert len(set(own_studies)) == 4
    node = Node(tmp_path / "node", settle_seconds=600,  # ready by its views, not by quiet
                dicom={"group_studies_by_patient_and_date": True},
                destinations=[{"name": "pacs", "kind": "dimse", "ae_title": orthanc.aet,
                               "host": "127.0.0.1", "port": orthanc.dicom_port}])
    node.write_config()
    node.run_cli("user", "add", "rita", "--role", "radiologist", "--password-stdin",
                 stdin=PASSWORD)
    node.start()
    try:
        sent = _dcmtk("/usr/bin/dcmsend", "-dn", "-aet", "MODALITY", "-aec", "MAMMOGATE",
                      "127.0.0.1", str(node.dicom_port), *map(str, files))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        exam = own_studies[0]  # the first to arrive names the exam
        srs = wait_until(lambda: orthanc.find_instances(StudyInstanceUID=exam, Modality="SR"),
                         180, "the exam's CAD SR in the PACS")
        assert len(srs) == 1
        sr_file = tmp_path / "sr.dcm"
        sr_file.write_bytes(orthanc.instance_file(srs[0]["ID"]))
        sr = pydicom.dcmread(sr_file)
        assert sr.StudyInstanceUID == exam
        evidence = {str(item.StudyInstanceUID): [str(ref.ReferencedSOPInstanceUID)
                    for series in item.ReferencedSeriesSequence
                    for ref in series.ReferencedSOPSequence]
                    for item in sr.CurrentRequestedProcedureEvidenceSequence}
        assert sorted(evidence) == sorted(own_studies)  # each image under its own study
        assert sorted(u for refs in evidence.values() for u in refs) == sorted(
            str(h.SOPInstanceUID) for h in headers)
        vfy = subprocess.run([DCIODVFY, str(sr_file)], capture_output=True, text=True)
        assert "Error" not in vfy.stdout + vfy.stderr, vfy.stderr

        detail = node.login("rita", PASSWORD).get(f"/api/studies/{exam}").json()
        assert detail["assembled_from"][0] == exam
        assert sorted(detail["assembled_from"]) == sorted(own_studies)
        assert detail["views_summary"] == "4 of 4 expected views"
        assert detail["instance_count"] == 4
        assert "views RCC, LCC, RMLO, LMLO present" in node.log_text()
    finally:
        assert node.stop() == 0
