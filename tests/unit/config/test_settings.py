from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mammogate.config import ConfigError, load_settings
from mammogate.config.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def test_example_config_loads_and_resolves_data_dir_beside_the_file() -> None:
    settings = load_settings(REPO / "mammogate.example.toml")
    assert settings.dicom.ae_title == "MAMMOGATE"
    assert settings.data_dir == (REPO / "var").resolve()
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith(
        "var/mammogate.sqlite3")
    assert [d.name for d in settings.destinations] == ["pacs"]
    assert settings.routes[0].objects == ["cad_sr"]


def test_the_example_lists_every_key_with_its_default() -> None:
    example = tomllib.loads((REPO / "mammogate.example.toml").read_text())
    defaults = load_settings(None)
    for section, field in Settings.model_fields.items():
        keys = getattr(field.annotation, "model_fields", None)
        if keys is None:  # destinations and routes: lists of tables, shown by example
            continue
        written = example.get(section, {})
        assert sorted(keys) == sorted(written), f"[{section}] in the example"
        for key, value in written.items():
            if (section, key) in {("node", "data_dir"), ("dicom", "allowed_calling_ae_titles")}:
                continue
            assert getattr(getattr(defaults, section), key) == value, f"{section}.{key}"


def test_environment_overrides_scalars_and_replaces_lists_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMOGATE_DICOM__PORT", "11999")
    monkeypatch.setenv("MAMMOGATE_DICOM__SETTLE_SECONDS", "0.5")
    monkeypatch.setenv(
        "MAMMOGATE_DESTINATIONS",
        '[{"name": "archive", "kind": "dimse", "ae_title": "ARCH", "host": "127.0.0.1", "port": 104}]',
    )
    monkeypatch.setenv("MAMMOGATE_ROUTES", '[{"destinations": ["archive"]}]')
    settings = load_settings(REPO / "mammogate.example.toml")
    assert settings.dicom.port == 11999
    assert settings.dicom.settle_seconds == 0.5
    assert settings.dicom.ae_title == "MAMMOGATE"  # the rest of the section still from the file
    assert [d.name for d in settings.destinations] == ["archive"]


def test_public_bind_with_empty_allow_list_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dicom]\nbind = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"dicom.bind.*accept_any_calling_ae"):
        load_settings(cfg)
    cfg.write_text('[dicom]\nbind = "0.0.0.0"\nallowed_calling_ae_titles = ["MODALITY"]\n')
    assert load_settings(cfg).dicom.allowed_calling_ae_titles == ["MODALITY"]
    cfg.write_text('[dicom]\nbind = "0.0.0.0"\naccept_any_calling_ae = true\n')
    assert load_settings(cfg).dicom.accept_any_calling_ae is True


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[dicom]\nport = 70000\n', "dicom.port"),
        ('[dicom]\nae_title = "THIS_AE_TITLE_IS_TOO_LONG"\n', "dicom.ae_title"),
        ('[dicom]\nsettle_secs = 3\n', "dicom.settle_secs"),
        ('[database]\nurl = "mysql://x"\n', "database.url"),
        ('[[routes]]\ndestinations = ["nowhere"]\n', "routes.destinations"),
        ('[sender]\ncalling_ae_title = "BAD\\\\TITLE"\n', "sender.calling_ae_title"),
        ('[sender]\nretry_initial_seconds = 60\nretry_max_seconds = 5\n', "sender.retry_max_seconds"),
        ('[node]\nlog_level = "CHATTY"\n', "node.log_level"),
        ('[[destinations]]\nname = "p"\nae_title = "A"\nhost = ""\nport = 1\n',
         "destinations.0.host"),
        ('[[destinations]]\nname = "p"\nkind = "ftp"\nae_title = "A"\nhost = "h"\nport = 1\n',
         "destinations.0.kind"),
    ],
)
def test_validation_messages_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert key in str(info.value)


def test_missing_and_malformed_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[dicom\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_a_portal_served_beyond_loopback_without_tls_is_warned_about(tmp_path: Path) -> None:
    assert load_settings(None, node={"data_dir": str(tmp_path)}).web.exposure_warning is None
    exposed = load_settings(None, node={"data_dir": str(tmp_path)}, web={"bind": "0.0.0.0"})
    assert exposed.web.exposure_warning is not None
    assert "web.secure_cookies" in exposed.web.exposure_warning
    behind_tls = load_settings(None, node={"data_dir": str(tmp_path)},
                               web={"bind": "0.0.0.0", "secure_cookies": True})
    assert behind_tls.web.exposure_warning is None


def test_a_backoff_key_given_alone_moves_the_default_of_the_other(tmp_path: Path) -> None:
    def sender(**keys: float) -> tuple[float, float]:
        loaded = load_settings(None, node={"data_dir": str(tmp_path)}, sender=keys).sender
        return loaded.retry_initial_seconds, loaded.retry_max_seconds

    assert sender(retry_max_seconds=5) == (5, 5)
    assert sender(retry_initial_seconds=1200) == (1200, 1200)
    assert sender(retry_initial_seconds=0, retry_max_seconds=0) == (0, 0)


@pytest.mark.parametrize(("given", "level"), [("warn", "WARNING"), ("fatal", "CRITICAL"),
                                              (" debug ", "DEBUG")])
def test_log_level_takes_loggings_names_and_aliases(tmp_path: Path, given: str, level: str) -> None:
    loaded = load_settings(None, node={"data_dir": str(tmp_path), "log_level": given})
    assert loaded.node.log_level == level
