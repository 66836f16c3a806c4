"""Storage limits and retention on a running node: C-STORE refused with 0xA700 and the reason
while the spool's disk is below storage.min_free_bytes, the spool files of delivered studies
removed after storage.retention_days (results and overlays kept), and a 20 MB tmpfs filled to
the brim: every Success durable, every refusal 0xA700 with the reason, no job left running."""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from mammogate.db import AnalysisImage, AuditEntry, Instance, Job, Study
from mammogate.training.synthetic import write_study
from tests.peers import Node, Orthanc, free_port, wait_until

HUGE = 2**60  # more than any disk has free


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def _session(node: Node) -> Session:
    return Session(create_engine(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}"))


def _files(tmp_path: Path, name: str, seed: int) -> tuple[str, list[Path]]:
    study = write_study(tmp_path / name, seed=seed, lesion=False)
    return study.study_instance_uid, [i.path for i in study.images if i.path is not None]


def test_a_spool_disk_below_min_free_bytes_refuses_with_0xa700_and_why_then_accepts(
    tmp_path: Path
) -> None:
    node = Node(tmp_path / "node", extra_env={"MAMMOGATE_STORAGE__MIN_FREE_BYTES": str(HUGE),
                                              "MAMMOGATE_STORAGE__REFUSAL_LOG_SECONDS": "3600"})
    _, files = _files(tmp_path, "study", 11)
    node.start()
    try:
        refused = node.storescu(*files, options=("-d",))
        text = _output(refused)
        assert "0xa700: refused: out of resources" in text.lower(), text[-3000:]
        assert re.search(r"spool disk has \d+ MiB free, below storage\.min_free_bytes", text)
        health = node.client().get("/healthz").json()
        assert health["status"] == "ok" and health["storage"]["accepting_images"] is False
        assert "below storage.min_free_bytes" in health["storage"]["reason"]
        assert health["storage"]["spool_free_bytes"] > 0
    finally:
        assert node.stop() == 0
    log = node.log_text()
    assert log.count("below storage.min_free_bytes (1 C-STOREs refused") == 1, \
        "one log line for the storm, not one per image"
    assert "(4 C-STOREs refused" not in log
    with _session(node) as session:
        assert session.scalars(select(Instance)).all() == []
        (audit,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "c-store-refused"))
        assert "min_free_bytes" in audit.detail
    assert not list((node.root / "var" / "spool").glob("*/*")), "nothing written"

    node.extra_env["MAMMOGATE_STORAGE__MIN_FREE_BYTES"] = str(1024**2)  # lowered: restart
    node.start()
    try:
        accepted = node.storescu(*files)
        assert accepted.returncode == 0 and "0xa700" not in _output(accepted).lower(), \
            _output(accepted)
        assert node.client().get("/healthz").json()["storage"]["accepting_images"] is True
    finally:
        node.stop()
    with _session(node) as session:
        rows = session.scalars(select(Instance)).all()
    assert len(rows) == 4
    for row in rows:
        assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256


def _study(session: Session, uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
    assert study is not None
    return study


def test_retention_removes_a_delivered_studys_images_keeps_its_results_and_refuses_it_again(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    nowhere = free_port()  # nothing listens: its deliveries never arrive
    node = Node(
        tmp_path / "node",
        destinations=[
            {"name": "pacs", "kind": "dimse", "ae_title": orthanc.aet, "host": "127.0.0.1",
             "port": orthanc.dicom_port},
            {"name": "nowhere", "kind": "dimse", "ae_title": "NOWHERE", "host": "127.0.0.1",
             "port": nowhere},
        ],
        routes=[{"name": "to-pacs", "match": {"calling_ae_title": "MODALITY1"},
                 "destinations": ["pacs"]},
                {"name": "to-nowhere", "match": {"calling_ae_title": "MODALITY2"},
                 "destinations": ["nowhere"]}],
        extra_env={"MAMMOGATE_STORAGE__RETENTION_DAYS": str(3 / 86400),  # three seconds
                   "MAMMOGATE_STORAGE__RETENTION_CHECK_SECONDS": "0.5"},
    )
    delivered_uid, delivered_files = _files(tmp_path, "delivered", 21)
    pending_uid, pending_files = _files(tmp_path, "pending", 22)
    node.start()
    try:
        assert node.storescu(*delivered_files, calling="MODALITY1").returncode == 0
        assert node.storescu(*pending_files, calling="MODALITY2").returncode == 0
        wait_until(lambda: orthanc.find_instances(StudyInstanceUID=delivered_uid, Modality="SR"),
                   180, "the CAD SR in Orthanc")

        def removed() -> bool:
            with _session(node) as session:
                return _study(session, delivered_uid).images_removed_at is not None

        wait_until(removed, 60, "retention to remove the delivered study's images")
        with _session(node) as session:
            gone = session.scalars(select(Instance).join(Study)
                                   .where(Study.study_instance_uid == delivered_uid)).all()
            assert len(gone) == 4 and not any(Path(r.path).exists() for r in gone)
            overlays = [Path(i.overlay_path) for i in session.scalars(select(AnalysisImage))
                        if i.overlay_path and delivered_uid in i.overlay_path]
            assert overlays and all(p.is_file() for p in overlays), "the renderings stay"
            kept = session.scalars(select(Instance).join(Study)
                                   .where(Study.study_instance_uid == pending_uid)).all()
            assert len(kept) == 4 and all(Path(r.path).is_file() for r in kept), \
                "a study not delivered keeps its images"
            assert _study(session, pending_uid).images_removed_at is None
        assert any(Path(p).is_file() for p in (node.root / "var" / "reports" / delivered_uid)
                   .glob("*.dcm")), "the result objects stay"

        # the portal says so, and the study takes no images and no re-analysis again
        node.run_cli("user", "add", "admin", "--role", "admin", "--password-stdin",
                     stdin="a long enough passphrase\n")
        with closing(node.login("admin", "a long enough passphrase")) as client:
            detail = client.get(f"/api/studies/{delivered_uid}").json()
            assert detail["images_removed_at"] and detail["analysis"]["images"]
            page = client.get(f"/studies/{delivered_uid}/").text
            assert "Images removed by retention on" in page
        again = node.storescu(delivered_files[0], calling="MODALITY1", options=("-d",))
        assert "images were removed by retention on" in _output(again), _output(again)[-2000:]
        refused = node.run_cli("study", "reanalyse", delivered_uid, check=False)
        assert refused.returncode == 1
        assert "removed by retention on" in refused.stderr
        assert "cannot be analysed again" in refused.stderr
    finally:
        node.stop()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs of the test's own, unmounted afterwards."""
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_20_mb_disk_filled_to_the_brim_loses_nothing_and_leaves_no_job_running(
    tmp_path: Path, tmpfs: Path
) -> None:
    node = Node(tmp_path / "node", extra_env={
        "MAMMOGATE_NODE__DATA_DIR": str(tmpfs),
        "MAMMOGATE_STORAGE__MIN_FREE_BYTES": str(6 * 2**20),
        "MAMMOGATE_STORAGE__RESULTS_MIN_FREE_BYTES": str(2 * 2**20),
        "MAMMOGATE_STORAGE__FREE_SPACE_CHECK_SECONDS": "0",
    }, settle_seconds=1)
    node.start()
    accepted: list[str] = []
    refusals = 0
    try:
        for n in range(6):  # 6 studies of 4 images of about 1.7 MB each: more than fits
            _, files = _files(tmp_path, f"study-{n}", 100 + n)
            for path in files:
                result = node.storescu(path, options=("-d",))
                text = _output(result)
                if "0xa700" in text.lower():
                    assert re.search(r"spool disk has [\d.]+ MiB free, below "
                                     r"storage\.min_free_bytes", text), text[-2000:]
                    refusals += 1
                else:
                    assert result.returncode == 0 and "Success" in text, text[-2000:]
                    accepted.append(str(pydicom.dcmread(path).SOPInstanceUID))
        assert accepted and refusals, f"{len(accepted)} accepted, {refusals} refused"

        def settled() -> list[tuple[int, str]] | bool:
            with Session(create_engine(f"sqlite:///{tmpfs / 'mammogate.sqlite3'}")) as session:
                jobs = [(j.id, j.state) for j in session.scalars(select(Job))]
                studies = [s.state for s in session.scalars(select(Study))]
            # queued and pending too: a study that settled a moment ago is not yet analysed
            busy = [j for j in jobs if j[1] in ("pending", "running")] or [
                s for s in studies if s in ("receiving", "queued", "processing")]
            return not busy and jobs

        wait_until(settled, 240, "every study analysed or failed, no job running")
    finally:
        node.stop()
    with Session(create_engine(f"sqlite:///{tmpfs / 'mammogate.sqlite3'}")) as session:
        rows = {r.sop_instance_uid: r for r in session.scalars(select(Instance))}
        jobs = [(j.id, j.state, j.last_error) for j in session.scalars(select(Job))]
    assert sorted(rows) == sorted(accepted), "every Success recorded, nothing else"
    for row in rows.values():
        data = Path(row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert pydicom.dcmread(row.path).SOPInstanceUID == row.sop_instance_uid
    # images stopped at storage.min_free_bytes, above storage.results_min_free_bytes: every
    # study taken had room for its results
    assert jobs and all(state == "done" for _, state, _ in jobs), jobs
