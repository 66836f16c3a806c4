"""Destination kinds and their settings: refused with the key named, secrets only by name."""

from __future__ import annotations

import pytest

from mammogate.config import ConfigError, load_settings


def _load(*destinations: dict[str, object]):  # type: ignore[no-untyped-def]
    return load_settings(None, destinations=list(destinations))


def test_three_kinds_and_dimse_by_default() -> None:
    settings = _load(
        {"name": "d", "ae_title": "PACS", "host": "pacs", "port": 104},
        {"name": "o", "kind": "orthanc", "url": "https://pacs:8042/", "username": "u",
         "password_env": "PACS_PASSWORD"},
        {"name": "s", "kind": "stow", "url": "http://pacs/dicom-web", "token_env": "TOKEN"},
    )
    assert [d.kind for d in settings.destinations] == ["dimse", "orthanc", "stow"]
    assert settings.destinations[1].url == "https://pacs:8042"  # trailing slash dropped


@pytest.mark.parametrize(("destination", "message"), [
    ({"name": "x", "kind": "ftp"}, "destinations.0.kind: destinations.kind: 'ftp' is not a destination kind"),
    ({"name": "x", "kind": "orthanc", "url": "pacs:8042"}, "is not an http:// or https:// URL"),
    ({"name": "x", "kind": "orthanc", "url": "http://p", "username": "u"},
     "basic authentication needs both username and password_env"),
    ({"name": "x", "kind": "stow", "url": "http://p", "token_env": "T", "username": "u",
      "password_env": "P"}, "not both"),
    ({"name": "x", "kind": "stow", "url": "http://p", "token_env": "s3cr3t-token!"},
     "is not an environment variable name"),
    ({"name": "x", "kind": "orthanc", "url": "http://p", "password": "clear"},
     "destinations.0.password: not a setting this node knows"),
    ({"name": "x", "ae_title": "PACS", "host": "h", "port": 104, "url": "http://p"},
     "destinations.0.url: not a setting this node knows"),
    ({"name": "x", "kind": "orthanc", "url": "https://user:secret@pacs:8042"},
     "holds a user name or password; give username and password_env"),
    ({"name": "x", "kind": "stow", "url": "https://pacs/dicom-web?token=abc"}, "no query or fragment"),
    ({"name": "x", "kind": "stow", "url": "https://pacs/dicom-web", "timeout_seconds": 400},
     "sender.lease_seconds (300) must be longer than destination 'x''s timeout_seconds (400)"),
    ({"name": "x", "ae_title": "PACS", "host": "h", "port": 104, "tls_ca_file": "/etc/hostname"},
     "tls_ca_file given but tls is false"),
    ({"name": "x", "ae_title": "PACS", "host": "h", "port": 104, "tls": True,
      "tls_ca_file": "/nonexistent.pem"}, "tls_ca_file '/nonexistent.pem' is not a file"),
])
def test_bad_destinations_are_refused_with_the_key_named(destination: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(destination)
    assert message in str(caught.value)


def test_a_misspelt_section_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMOGATE_WEBB__PORT", "9090")
    with pytest.raises(ConfigError, match="MAMMOGATE_WEBB__PORT: 'webb' is not a section"):
        load_settings(None)
