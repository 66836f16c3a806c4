"""Backups restore: scripts/backup and scripts/restore (the commands docs/deployment.md gives)
take a node's PostgreSQL database and data directory to a new database and a new data
directory, and a fresh node there serves the same study, scores, findings, overlays and
result objects, without analysing or sending anything again."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom

from mammogate.training.synthetic import write_study
from tests.peers import PG_ADMIN_URL, REPO, Node, postgres_database, wait_until

PASSWORD = "backup restore passphrase 7"
CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
BACKUP = REPO / "scripts" / "backup"
RESTORE = REPO / "scripts" / "restore"


def _script(script: Path, argument: Path, database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOGATE_")}
    env.update(MAMMOGATE_DATABASE__URL=database_url, MAMMOGATE_NODE__DATA_DIR=str(data_dir))
    return subprocess.run([str(script), str(argument)], env=env, capture_output=True, text=True,
                          timeout=300)


@contextmanager
def _dropped_afterwards(name: str) -> Iterator[str]:
    """The URL of a database named ``name`` that does not exist yet (the restore makes it),
    dropped at the end whatever happened."""
    import psycopg

    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _get(client: httpx.Client, path: str) -> httpx.Response:
    response = client.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    return response


def _snapshot(client: httpx.Client, uid: str) -> dict[str, Any]:
    """What the portal serves of the study: its JSON, the worklist, and every byte of its
    overlays, heatmaps, viewer pixels (read from the spool file) and result objects."""
    detail = _get(client, f"/api/studies/{uid}").json()
    analysis = detail["analysis"]
    base = f"/studies/{uid}"
    images = [i for i in analysis["images"] if i["status"] == "analysed"]
    return {
        "detail": detail,
        "worklist": _get(client, "/api/studies").json(),
        "overlays": {i["sop_instance_uid"]: _get(client, f"{base}/images/{i['sop_instance_uid']}/overlay.png").content
                     for i in images},
        "heatmaps": {i["sop_instance_uid"]: _get(client, f"{base}/images/{i['sop_instance_uid']}/heatmap.png").content
                     for i in images},
        "pixels": {i["sop_instance_uid"]: _get(client, f"{base}/images/{i['sop_instance_uid']}/pixels").content
                   for i in images},
        "objects": {r["sop_instance_uid"]: _get(client, f"{base}/objects/{r['sop_instance_uid']}").content
                    for r in analysis["reports"]},
    }


def test_backup_then_restore_into_a_new_database_and_data_directory(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study", seed=4247, lesion=True)
    uid = study.study_instance_uid
    paths = [i.path for i in study.images if i.path is not None]
    backup = tmp_path / "backup"
    # sensitivity_90: the operating point at which the shipped model marks findings on this
    # study (the findings must come back too)
    env = {"MAMMOGATE_MODEL__OPERATING_POINT": "sensitivity_90"}

    with postgres_database() as original_url:
        node = Node(tmp_path / "node", database_url=original_url, extra_env=env)
        data_dir = node.root / "var"
        node.write_config()
        node.run_cli("user", "add", "dr.restore", "--role", "radiologist", "--password-stdin",
                     stdin=PASSWORD + "\n")
        node.start()
        try:
            stored = node.storescu(*paths)
            assert stored.returncode == 0, stored.stderr
            client = node.login("dr.restore", PASSWORD)
            wait_until(lambda: client.get(f"/api/studies/{uid}").json().get("state") == "done",
                       240, "the study to be analysed")
            before = _snapshot(client, uid)
        finally:
            assert node.stop() == 0, node.log_text()[-3000:]

        made = _script(BACKUP, backup, original_url, data_dir)
        assert made.returncode == 0, made.stdout + made.stderr
        assert {p.name for p in backup.iterdir()} == {"mammogate.dump", "data.tar", "SHA256SUMS"}
        again = _script(BACKUP, backup, original_url, data_dir)
        assert again.returncode != 0 and "already holds a backup" in again.stderr
    # The original database is dropped now, and its data directory goes too: what the restored
    # node serves can only come from the backup.
    shutil.rmtree(data_dir)

    analysis = before["detail"]["analysis"]
    assert before["detail"]["state"] == "done" and analysis["exam_score"] is not None
    assert analysis["findings"], "the study must have findings for this test to bite"
    assert len(before["overlays"]) == 4 and all(png.startswith(b"\x89PNG") for png in before["overlays"].values())
    assert [r["kind"] for r in analysis["reports"]] == ["cad_sr"]
    sr = pydicom.dcmread(BytesIO(next(iter(before["objects"].values()))))
    assert sr.SOPClassUID == CAD_SR and sr.StudyInstanceUID == uid

    with _dropped_afterwards(f"mammogate_test_restored_{uuid.uuid4().hex[:12]}") as restored_url:
        # the data directory at the path it had (the database names files by absolute path),
        # restored into an empty one; a directory with something in it is refused
        data_dir.mkdir()
        (data_dir / "leftover").write_text("x")
        refused = _script(RESTORE, backup, restored_url, data_dir)
        assert refused.returncode != 0 and "not empty" in refused.stderr
        (data_dir / "leftover").unlink()
        restored = _script(RESTORE, backup, restored_url, data_dir)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert oct(data_dir.stat().st_mode & 0o777) == "0o700"
        # a second restore into the now full database is refused, the database left alone
        data_dir_2 = tmp_path / "second"
        twice = _script(RESTORE, backup, restored_url, data_dir_2)
        assert twice.returncode != 0 and "tables" in twice.stderr and not data_dir_2.exists()

        fresh = Node(tmp_path / "restored-node", database_url=restored_url,
                     extra_env={**env, "MAMMOGATE_NODE__DATA_DIR": str(data_dir)})
        fresh.start()
        try:
            client = fresh.login("dr.restore", PASSWORD)  # the account came back with the database
            after = _snapshot(client, uid)
            assert after["detail"] == before["detail"]
            assert after["worklist"] == before["worklist"]
            for kind in ("overlays", "heatmaps", "pixels", "objects"):
                assert after[kind] == before[kind], f"the {kind} differ after the restore"
            # nothing is analysed again: the node sits idle on the restored study
            time.sleep(3)
            assert _get(client, f"/api/studies/{uid}").json() == before["detail"]
        finally:
            assert fresh.stop() == 0, fresh.log_text()[-3000:]
