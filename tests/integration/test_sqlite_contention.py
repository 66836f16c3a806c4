"""On the embedded SQLite the portal and the DICOM service share one database file: a crowd of
portal requests (pages, the JSON API, failed sign-ins) never delays a C-STORE, never gets a
500, and SIGTERM stops the node within its grace time."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom

from mammogate.training.synthetic import write_study
from tests.peers import Node
from tests.tiny_bundle import write_tiny_bundle

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
PASSWORD = "a long viewer passphrase"


# A modality sending the files on one association: [status, seconds] per C-STORE, as JSON.
MODALITY = f"""
import json, sys, time
import pydicom
from pynetdicom import AE
ae = AE(ae_title="MODALITY")
ae.add_requested_context("{MG_FOR_PRESENTATION}", sys.argv[2])
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="MAMMOGATE")
assert assoc.is_established
answers = []
for path in sys.argv[3:]:
    ds = pydicom.dcmread(path)
    started = time.monotonic()
    status = assoc.send_c_store(ds)
    answers.append([int(status.Status), time.monotonic() - started])
assoc.release()
print(json.dumps(answers))
"""


def _failed_sign_in(url: str) -> int:
    with httpx.Client(base_url=url, timeout=30) as client:
        page = client.get("/login")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
        assert token
        return client.post("/login", data={
            "username": "vic", "password": "wrong", "next": "/", "_csrf_token": token.group(1),
        }).status_code


def test_portal_crowd_never_delays_storage_and_sigterm_stops_in_time(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    node = Node(tmp_path / "node", settle_seconds=600, extra_env={
        "MAMMOGATE_MODEL__BUNDLE": str(bundle), "MAMMOGATE_NODE__STOP_GRACE_SECONDS": "10",
    })
    node.start()
    node.run_cli("user", "add", "vic", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n")
    viewer = node.login("vic", PASSWORD)
    paths: list[Path] = []
    for seed in range(25):
        study = write_study(tmp_path / f"s{seed}", seed=700 + seed, lesion=False, rows=128, columns=104)
        paths += study.paths
    syntax = str(pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID)
    durations: list[float] = []
    statuses: list[int] = []

    def store() -> None:
        # the modality in its own process: the durations are the node's, not this process's
        # threads (the crowd's clients) competing with the sender for the interpreter lock
        run = subprocess.run(
            [sys.executable, "-c", MODALITY, str(node.dicom_port), syntax, *map(str, paths)],
            capture_output=True, text=True, timeout=300, check=True)
        for status, seconds in json.loads(run.stdout.strip().splitlines()[-1]):
            statuses.append(status)
            durations.append(seconds)

    def page(number: int) -> int:
        kind = number % 4
        if kind == 0:
            return _failed_sign_in(node.url)
        path = ("/", "/api/studies", "/studies")[kind - 1]
        return viewer.get(path).status_code

    storer = threading.Thread(target=store, daemon=True)
    storer.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(page, range(200)))
        storer.join(120)
        assert len(statuses) == 100 and set(statuses) == {0}
        assert max(durations) < 1.0, f"slowest C-STORE {max(durations):.2f} s"
        assert all(code < 500 for code in codes), sorted(set(codes))
        assert codes.count(200) >= 100
    except BaseException:
        node.stop()  # a failed check leaves no node running
        raise
    # a stop is never held up by the crowd or the database: within the grace time
    assert node.process is not None
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(30)
    assert time.monotonic() - started < 10 + 2
    node.process = None
