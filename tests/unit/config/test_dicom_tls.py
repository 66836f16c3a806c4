"""dicom.tls_*: refused with the key named, before anything listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammogate.config import ConfigError, load_settings


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("cert", "key", "ca"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN CERTIFICATE-----\n")  # existence is what is checked here
        files[name] = str(path)
    return files


def _load(**dicom: object):  # type: ignore[no-untyped-def]
    return load_settings(None, dicom=dicom)


def test_tls_is_off_by_default_and_on_with_a_certificate_and_key(pem: dict[str, str]) -> None:
    assert _load().dicom.tls is False
    on = _load(tls=True, tls_cert_file=pem["cert"], tls_key_file=pem["key"]).dicom
    assert on.tls and not on.tls_require_client_certificate and on.tls_ca_file == ""
    mutual = _load(tls=True, tls_cert_file=pem["cert"], tls_key_file=pem["key"],
                   tls_ca_file=pem["ca"], tls_require_client_certificate=True).dicom
    assert mutual.tls_require_client_certificate


@pytest.mark.parametrize(("dicom", "message"), [
    ({"tls": True, "tls_cert_file": "CERT"}, "dicom.tls_key_file is required when dicom.tls is true"),
    ({"tls": True, "tls_key_file": "KEY"}, "dicom.tls_cert_file is required when dicom.tls is true"),
    ({"tls": True, "tls_cert_file": "CERT", "tls_key_file": "KEY",
      "tls_require_client_certificate": True},
     "dicom.tls_ca_file is required when dicom.tls_require_client_certificate is true"),
    ({"tls_cert_file": "CERT", "tls_key_file": "KEY"},
     "dicom.tls_cert_file, dicom.tls_key_file given but dicom.tls is false"),
    ({"tls_require_client_certificate": True},
     "dicom.tls_require_client_certificate given but dicom.tls is false"),
])
def test_incomplete_tls_settings_name_the_key(pem: dict[str, str], dicom: dict[str, object],
                                              message: str) -> None:
    values = {k: pem["cert"] if v == "CERT" else pem["key"] if v == "KEY" else v
              for k, v in dicom.items()}
    with pytest.raises(ConfigError, match=message):
        _load(**values)


def test_a_missing_file_names_the_key(pem: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.key")
    with pytest.raises(ConfigError, match=r"dicom.tls_key_file: '.*nowhere.key' is not a file"):
        _load(tls=True, tls_cert_file=pem["cert"], tls_key_file=missing)
    with pytest.raises(ConfigError, match=r"dicom.tls_ca_file: '.*nowhere.key' is not a file"):
        _load(tls=True, tls_cert_file=pem["cert"], tls_key_file=pem["key"], tls_ca_file=missing)


def test_the_environment_turns_tls_on(pem: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMOGATE_DICOM__TLS", "true")
    monkeypatch.setenv("MAMMOGATE_DICOM__TLS_CERT_FILE", pem["cert"])
    with pytest.raises(ConfigError, match="dicom.tls_key_file is required"):
        load_settings(None)
    monkeypatch.setenv("MAMMOGATE_DICOM__TLS_KEY_FILE", pem["key"])
    assert load_settings(None).dicom.tls
