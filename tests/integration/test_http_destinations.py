"""The HTTP backends against a real Orthanc (REST API and DICOMweb plugin, basic auth): what is
delivered, what is final, what is retried, and what each says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mammogate.db import DestinationRow
from mammogate.delivery import SendError
from mammogate.delivery.http import OrthancRestDestination, StowRsDestination, stow_body
from tests.integration.test_sender import _sr_file
from tests.peers import Orthanc, free_port

USER, PASSWORD = "mammogate", "http-test-password"


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path / "pacs", dicomweb=True, users={USER: PASSWORD}).start()
    try:
        yield server
    finally:
        server.stop()


def _row(kind: str, url: str, **auth: str) -> DestinationRow:
    return DestinationRow(name=f"test-{kind}", kind=kind, url=url, timeout_seconds=10, **auth)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HTTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("TEST_WRONG_PASSWORD", "wrong")


@pytest.mark.parametrize("kind", ["orthanc", "stow"])
def test_an_sr_is_stored_once_however_often_it_is_sent(pacs: Orthanc, tmp_path: Path, kind: str) -> None:
    backend = OrthancRestDestination() if kind == "orthanc" else StowRsDestination()
    url = pacs.url if kind == "orthanc" else f"{pacs.url}/dicom-web"
    row = _row(kind, url, username=USER, password_env="TEST_HTTP_PASSWORD")
    sr = _sr_file(tmp_path / "sr.dcm")
    backend.send(sr, row)
    backend.send(sr, row)  # a resend after a crash: the PACS keeps one copy
    uid = str(pydicom.dcmread(sr).SOPInstanceUID)
    assert [i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.find_instances(SOPInstanceUID=uid)] == [uid]
    assert "answers" in backend.test(row)


@pytest.mark.parametrize("kind", ["orthanc", "stow"])
def test_what_is_final_and_what_is_retried(pacs: Orthanc, tmp_path: Path, kind: str) -> None:
    backend = OrthancRestDestination() if kind == "orthanc" else StowRsDestination()
    url = pacs.url if kind == "orthanc" else f"{pacs.url}/dicom-web"
    garbage = tmp_path / "not-dicom.dcm"
    garbage.write_bytes(b"this is not DICOM" * 20)
    good = _row(kind, url, username=USER, password_env="TEST_HTTP_PASSWORD")
    with pytest.raises(SendError) as refused:
        backend.send(garbage, good)
    assert refused.value.retryable is False and "HTTP 4" in refused.value.reason

    wrong = _row(kind, url, username=USER, password_env="TEST_WRONG_PASSWORD")
    with pytest.raises(SendError) as unauthorised:
        backend.send(_sr_file(tmp_path / "sr.dcm"), wrong)
    assert unauthorised.value.retryable is False
    assert "HTTP 401" in unauthorised.value.reason and "credentials" in unauthorised.value.reason

    unset = _row(kind, url, username=USER, password_env="TEST_UNSET_PASSWORD")
    with pytest.raises(SendError) as missing:
        backend.send(_sr_file(tmp_path / "sr2.dcm"), unset)
    assert "TEST_UNSET_PASSWORD" in missing.value.reason and "not set" in missing.value.reason

    down = _row(kind, f"http://127.0.0.1:{free_port()}", username=USER, password_env="TEST_HTTP_PASSWORD")
    with pytest.raises(SendError) as unreachable:
        backend.send(_sr_file(tmp_path / "sr3.dcm"), down)
    assert unreachable.value.retryable is True and "cannot connect" in unreachable.value.reason


def test_the_stow_body_is_multipart_related_with_crlf() -> None:
    body, content_type = stow_body(b"DICM-bytes")
    boundary = content_type.split("boundary=")[1]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert body.startswith(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nDICM-bytes".encode())
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())


def test_a_secret_with_a_line_break_is_refused_without_being_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TOKEN", "s3cr3t-token-value\n")
    row = _row("stow", f"http://127.0.0.1:{free_port()}", token_env="TEST_TOKEN")
    with pytest.raises(SendError) as refused:
        StowRsDestination().send(_sr_file(tmp_path / "sr.dcm"), row)
    assert refused.value.retryable is False
    assert "TEST_TOKEN" in refused.value.reason and "line break" in refused.value.reason
    assert "s3cr3t" not in refused.value.reason
