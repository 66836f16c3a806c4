"""On the embedded SQLite the portal and the DICOM service share one database file: a crowd of
portal requests (pages, the JSON API, failed sign-ins) never delays a C-STORE, never gets a
500, and SIGTERM stops the node within its grace time."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
from pynetdicom import AE

from mammogate.training.synthetic import write_study
from tests.peers import Node
from tests.tiny_bundle import write_tiny_bundle

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
PASSWORD = "a long viewer passphrase"


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
    datasets = []
    for seed in range(25):
        study = write_study(tmp_path / f"s{seed}", seed=700 + seed, lesion=False, rows=128, columns=104)
        datasets += [pydicom.dcmread(p) for p in study.paths]
    durations: list[float] = []
    statuses: list[int] = []

    def store() -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(MG_FOR_PRESENTATION, datasets[0].file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="MAMMOGATE")
        assert assoc.is_established
        try:
            for ds in datasets:
                started = time.monotonic()
                statuses.append(int(assoc.send_c_store(ds).Status))
                durations.append(time.monotonic() - started)
        finally:
            assoc.release()

    def page(number: int) -> int:
        kind = number % 4
        if kind == 0:
            return _failed_sign_in(node.url)
        path = ("/", "/api/studies", "/studies")[kind - 1]
        return viewer.get(path).status_code

    storer = threading.Thread(target=store, daemon=True)
    storer.start()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(page, range(200)))
    storer.join(120)
    assert len(statuses) == 100 and set(statuses) == {0}
    assert max(durations) < 1.0, f"slowest C-STORE {max(durations):.2f} s"
    assert all(code < 500 for code in codes), sorted(set(codes))
    assert codes.count(200) >= 100
    # a stop is never held up by the crowd or the database: within the grace time
    assert node.process is not None
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(30)
    assert time.monotonic() - started < 10 + 2
    node.process = None
