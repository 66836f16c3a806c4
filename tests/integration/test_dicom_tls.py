"""C-STORE and C-ECHO over TLS to an Orthanc that requires it (and our client certificate):
certificates made by openssl for this test, the peer verified by CA and host name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from mammogate.db import Delivery
from mammogate.training.synthetic import write_study
from tests.peers import Node, Orthanc, certificates, wait_until


@pytest.fixture
def tls_pacs(tmp_path: Path) -> Iterator[tuple[Orthanc, Path]]:
    certs = certificates(tmp_path, "pki")
    pacs = Orthanc(tmp_path / "pacs", aet="TLSPACS", extra_config={
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(certs / "server.crt"),
        "DicomTlsPrivateKey": str(certs / "server.key"),
        "DicomTlsTrustedCertificates": str(certs / "ca.crt"),
        "DicomTlsRemoteCertificateRequired": True,
    })
    pacs.start()
    try:
        yield pacs, certs
    finally:
        pacs.stop()


def test_results_reach_a_pacs_that_requires_tls_and_a_wrong_ca_is_named(
    tmp_path: Path, tls_pacs: tuple[Orthanc, Path]
) -> None:
    pacs, certs = tls_pacs
    impostor = certificates(tmp_path, "other")  # a CA that did not sign the PACS's certificate
    tls = {"kind": "dimse", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port,
           "tls": True, "tls_cert_file": str(certs / "client.crt"),
           "tls_key_file": str(certs / "client.key")}
    node = Node(tmp_path / "node", destinations=[
        {"name": "pacs-tls", **tls, "tls_ca_file": str(certs / "ca.crt")},
        {"name": "pacs-wrong-ca", **tls, "tls_ca_file": str(impostor / "ca.crt")},
        {"name": "pacs-plain", "kind": "dimse", "ae_title": pacs.aet, "host": "127.0.0.1",
         "port": pacs.dicom_port},
    ], routes=[{"destinations": ["pacs-tls"]}])
    node.write_config()

    assert "C-ECHO to TLSPACS" in node.run_cli("destination", "test", "pacs-tls").stdout
    wrong = node.run_cli("destination", "test", "pacs-wrong-ca", check=False)
    assert wrong.returncode == 1 and "TLS handshake failed: CERTIFICATE_VERIFY_FAILED" in wrong.stdout
    plain = node.run_cli("destination", "test", "pacs-plain", check=False)
    assert plain.returncode == 1 and "FAILED" in plain.stdout

    study = write_study(tmp_path / "study", seed=4711, lesion=True)
    node.start()
    try:
        assert node.storescu(*[i.path for i in study.images if i.path]).returncode == 0
        wait_until(lambda: pacs.find_instances(StudyInstanceUID=study.study_instance_uid,
                                               Modality="SR"), 120, "the SR over TLS")
        engine = create_engine(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
        with Session(engine) as session:
            wait_until(lambda: session.scalar(select(Delivery.state)) == "delivered"
                       or session.expire_all(), 30, "the delivery recorded")
        engine.dispose()
    finally:
        node.stop()
