"""The SCP's TLS context from dicom.tls_*: TLS 1.2+, client certificates per the settings, and
unusable files refused naming the setting (openssl makes the certificates)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from mammogate.config import ConfigError, load_settings
from mammogate.config.settings import DicomSettings
from mammogate.dicom_node.tls import describe, server_context
from tests.peers import certificates


def _dicom(**values: object) -> DicomSettings:
    return load_settings(None, dicom=values).dicom


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return certificates(tmp_path_factory.mktemp("tls"), "pki")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return certificates(tmp_path_factory.mktemp("tls"), "other")


def test_no_context_without_tls() -> None:
    assert server_context(_dicom()) is None
    assert describe(_dicom()) == "plain TCP, no TLS"


def test_tls_1_2_at_least_and_client_certificates_as_configured(pki: Path) -> None:
    files = {"tls_cert_file": str(pki / "server.crt"), "tls_key_file": str(pki / "server.key")}
    plain = server_context(_dicom(tls=True, **files))
    assert plain is not None and plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    optional = server_context(_dicom(tls=True, tls_ca_file=str(pki / "ca.crt"), **files))
    assert optional is not None and optional.verify_mode == ssl.CERT_OPTIONAL
    required = _dicom(tls=True, tls_ca_file=str(pki / "ca.crt"),
                      tls_require_client_certificate=True, **files)
    context = server_context(required)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert describe(required) == "TLS, client certificates required"
    suites = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert suites and all("GCM" in s or "CHACHA20" in s for s in suites)  # AEAD only


def test_a_key_of_another_certificate_names_the_key_setting(pki: Path, other: Path) -> None:
    dicom = _dicom(tls=True, tls_cert_file=str(pki / "server.crt"),
                   tls_key_file=str(other / "server.key"))
    with pytest.raises(ConfigError, match="dicom.tls_key_file: .* is not the private key of the "
                                          "certificate in dicom.tls_cert_file"):
        server_context(dicom)


def test_files_that_are_not_pem_certificates_or_keys_name_their_setting(pki: Path) -> None:
    key, cert = str(pki / "server.key"), str(pki / "server.crt")
    with pytest.raises(ConfigError, match="dicom.tls_cert_file: .* holds no PEM certificate"):
        server_context(_dicom(tls=True, tls_cert_file=key, tls_key_file=key))
    with pytest.raises(ConfigError, match="dicom.tls_key_file: .* holds no PEM private key"):
        server_context(_dicom(tls=True, tls_cert_file=cert, tls_key_file=cert))
    with pytest.raises(ConfigError, match="dicom.tls_ca_file: .* holds no PEM certificate"):
        server_context(_dicom(tls=True, tls_cert_file=cert, tls_key_file=key, tls_ca_file=key))


def test_an_encrypted_key_is_refused_without_a_prompt(pki: Path, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki / "server.key"), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    with pytest.raises(ConfigError, match="dicom.tls_key_file: .* is encrypted"):
        server_context(_dicom(tls=True, tls_cert_file=str(pki / "server.crt"),
                              tls_key_file=str(encrypted)))
