"""The SCP over TLS (dicom.tls): DCMTK's storescu/echoscu and pynetdicom as TLS clients, with
certificates made by openssl for each test; failed handshakes named, audited and survived."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from mammogate.db import AuditEntry, Instance, Study
from mammogate.training.synthetic import write_study
from tests.integration.test_scp import RunningScp
from tests.peers import (
    ECHOSCU,
    STORESCU,
    Node,
    certificates,
    dcmtk_env,
    require_tool,
    wait_until,
)

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


def _tls(certs: Path, client: Path | None = None) -> tuple[str, ...]:
    """DCMTK's options: trust certs' CA; present client's certificate, or none (+tla)."""
    if client is None:
        return ("+tla", "+cf", str(certs / "ca.crt"))
    return ("+tls", str(client / "client.key"), str(client / "client.crt"),
            "+cf", str(certs / "ca.crt"))


def _storescu(port: int, options: tuple[str, ...], *files: Path) -> subprocess.CompletedProcess[str]:
    require_tool(STORESCU)
    return subprocess.run([STORESCU, *options, "-aet", "MODALITY", "-aec", "MAMMOGATE",
                           "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=60, env=dcmtk_env())


def _echoscu(port: int, options: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    require_tool(ECHOSCU)
    return subprocess.run([ECHOSCU, *options, "-aet", "MODALITY", "-aec", "MAMMOGATE",
                           "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=30, env=dcmtk_env())


def _out(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def _files(root: Path, seed: int) -> tuple[str, list[Path]]:
    study = write_study(root, seed=seed, lesion=False)
    return study.study_instance_uid, [i.path for i in study.images if i.path is not None]


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return certificates(tmp_path, "pki")


@pytest.fixture
def mutual(tmp_path: Path, pki: Path) -> Iterator[RunningScp]:
    """An SCP that requires client certificates signed by pki's CA."""
    running = RunningScp(
        tmp_path / "node", allowed=[], tls=True, tls_cert_file=str(pki / "server.crt"),
        tls_key_file=str(pki / "server.key"), tls_ca_file=str(pki / "ca.crt"),
        tls_require_client_certificate=True, association_request_seconds=2, max_connections=2,
    )
    try:
        yield running
    finally:
        running.scp.stop()
        running.db.dispose()


def test_dcmtk_stores_and_echoes_over_tls_and_a_plain_client_is_refused_with_the_reason(
    tmp_path: Path, pki: Path
) -> None:
    study_uid, files = _files(tmp_path / "study", seed=31)
    later_uid, later = _files(tmp_path / "later", seed=32)
    node = Node(tmp_path / "node", dicom={
        "tls": True, "tls_cert_file": str(pki / "server.crt"),
        "tls_key_file": str(pki / "server.key"), "tls_ca_file": str(pki / "ca.crt"),
    })
    node.start()
    try:
        assert "(TLS, client certificates verified when presented;" in node.log_text()
        echo = node.echoscu(options=_tls(pki, pki))
        assert echo.returncode == 0, _out(echo)
        stored = node.storescu(*files, options=_tls(pki, pki))
        assert stored.returncode == 0, _out(stored)

        plain = node.storescu(*later)
        assert plain.returncode != 0
        wait_until(lambda: "TLS handshake with 127.0.0.1 failed: not a TLS client hello"
                   in node.log_text(), 10, "the failed handshake in the log")
        assert node.process is not None and node.process.poll() is None
        # a certificate is optional here: a client without one is served (over TLS)
        anonymous = node.storescu(*later, options=_tls(pki))
        assert anonymous.returncode == 0, _out(anonymous)

        engine = create_engine(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
        try:
            with Session(engine) as session:
                counts = {s.study_instance_uid: s.instance_count
                          for s in session.scalars(select(Study))}
                assert counts == {study_uid: len(files), later_uid: len(later)}
                assert session.scalar(select(Instance.calling_ae_title).limit(1)) == "MODALITY"
                (refused,) = session.scalars(
                    select(AuditEntry).where(AuditEntry.action == "connection-refused"))
                assert refused.target == "127.0.0.1"
                assert refused.detail.startswith("TLS handshake failed: not a TLS client hello")
        finally:
            engine.dispose()
    finally:
        assert node.stop() == 0


def test_mutual_tls_refuses_a_client_without_a_trusted_certificate_and_serves_one_with(
    tmp_path: Path, pki: Path, mutual: RunningScp
) -> None:
    other = certificates(tmp_path, "other")  # a CA the node does not trust
    _, files = _files(tmp_path / "study", seed=33)

    nothing = _storescu(mutual.port, _tls(pki), files[0])  # TLS, but no client certificate
    assert nothing.returncode != 0
    stranger = _storescu(mutual.port, _tls(pki, other), files[0])  # signed by another CA
    assert stranger.returncode != 0
    distrustful = _storescu(mutual.port, _tls(other, pki), files[0])  # does not trust the node
    assert distrustful.returncode != 0 and "certificate verify failed" in _out(distrustful)
    assert mutual.instances() == []

    refusals = wait_until(lambda: len(mutual.audit("connection-refused")) == 3
                          and sorted(mutual.audit("connection-refused"), key=lambda a: a.id),
                          10, "three refusals audited")
    details = [a.detail for a in refusals]
    assert details == [
        "TLS handshake failed: the client sent no certificate and "
        "dicom.tls_require_client_certificate is true [PEER_DID_NOT_RETURN_A_CERTIFICATE]",
        "TLS handshake failed: the client's certificate fails verification against "
        "dicom.tls_ca_file: "
        "unable to get local issuer certificate",
        "TLS handshake failed: the client does not trust this node's certificate (unknown CA) "
        "[TLSV1_ALERT_UNKNOWN_CA]",
    ]
    assert {a.target for a in refusals} == {"127.0.0.1"}

    trusted = _storescu(mutual.port, _tls(pki, pki), *files)
    assert trusted.returncode == 0, _out(trusted)
    assert len(mutual.instances()) == len(files)
    # the association history says how each association was secured
    from mammogate.db import AssociationRecord
    with mutual.db.read_session() as session:
        secured = [r.security for r in session.scalars(
            select(AssociationRecord).where(AssociationRecord.accepted.is_(True)))]
    assert secured and all(s.startswith("TLSv1.") and "client certificate commonName=client" in s
                           for s in secured), secured
    assert _echoscu(mutual.port, _tls(pki, pki)).returncode == 0


def test_a_client_offering_only_tls_1_1_is_refused(pki: Path, mutual: RunningScp) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.crt")
    context.load_cert_chain(pki / "client.crt", pki / "client.key")
    with warnings.catch_warnings():  # the deprecation of TLS 1.0 and 1.1 is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", mutual.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    (refused,) = wait_until(lambda: mutual.audit("connection-refused"), 10, "the refusal audited")
    assert refused.detail == ("TLS handshake failed: the client offers only TLS versions below "
                              "1.2 [UNSUPPORTED_PROTOCOL]")


def test_a_silent_connection_holds_neither_the_port_nor_a_connection_slot_for_long(
    pki: Path, mutual: RunningScp
) -> None:
    """pynetdicom would run the handshake in its accepting loop: one silent client would stop
    the port. Here it waits in its own thread, counts towards max_connections (2), and is closed
    after association_request_seconds (2 s)."""
    silent = socket.create_connection(("127.0.0.1", mutual.port), timeout=10)
    try:
        started = time.monotonic()
        echo = _echoscu(mutual.port, _tls(pki, pki))
        assert echo.returncode == 0, _out(echo)
        assert time.monotonic() - started < 1.5, "the echo waited for the silent handshake"

        server = mutual.scp.server
        assert server is not None
        wait_until(lambda: not server.active_associations, 10, "the echo's association to end")
        second = socket.create_connection(("127.0.0.1", mutual.port), timeout=10)
        try:
            time.sleep(0.3)  # both now in their handshakes: the slots are taken
            over = _echoscu(mutual.port, _tls(pki, pki))
            assert over.returncode != 0
            wait_until(lambda: any("dicom.max_connections (2) open" in a.detail
                                   for a in mutual.audit("connection-refused")),
                       10, "the connection over max_connections audited")
            assert silent.recv(16) == b""  # closed by the node
            assert time.monotonic() - started < 5
            assert second.recv(16) == b""
        finally:
            second.close()
    finally:
        silent.close()
    wait_until(lambda: len([a for a in mutual.audit("connection-refused")
                            if "no TLS handshake within dicom.association_request_seconds (2 s)"
                            in a.detail]) == 2, 10, "both silent connections audited")
    assert _echoscu(mutual.port, _tls(pki, pki)).returncode == 0


def test_the_pdu_bound_holds_inside_tls(pki: Path, mutual: RunningScp) -> None:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "client.crt", pki / "client.key")
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MG_FOR_PRESENTATION, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", mutual.port, ae_title="MAMMOGATE",
                         tls_args=(context, "127.0.0.1"))
    assert assoc.is_established
    encrypted = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert isinstance(encrypted, ssl.SSLSocket)
    try:
        encrypted.sendall(b"\x04\x00" + (0xFFFFFFF0).to_bytes(4, "big") + b"\x00" * 65536)
    except OSError as exc:  # ssl.SSLEOFError, a reset: the node hung up before the tail was in
        hang_up = str(exc)
    else:
        hang_up = ""
    deadline = time.monotonic() + 10
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not assoc.is_established, f"the node kept reading a 4 GB PDU ({hang_up})"
    assert _echoscu(mutual.port, _tls(pki, pki)).returncode == 0


def test_a_key_that_is_not_the_certificates_is_a_start_up_error_naming_the_setting(
    tmp_path: Path, pki: Path
) -> None:
    other = certificates(tmp_path, "other")
    node = Node(tmp_path / "node", dicom={
        "tls": True, "tls_cert_file": str(pki / "server.crt"),
        "tls_key_file": str(other / "server.key"),
    })
    result = node.run_cli("serve", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "dicom.tls_key_file" in result.stderr and "is not the private key of the certificate" \
        in result.stderr
    assert "Traceback" not in result.stderr
