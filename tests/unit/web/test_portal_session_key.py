"""The session key: from the environment, else generated once into data_dir with mode 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mammogate.config.settings import load_settings
from mammogate.db import Database
from mammogate.web import SessionKeyError, create_app, load_session_key


def _settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_settings(None, node={"data_dir": str(tmp_path / "data")})


def test_key_file_is_created_with_mode_0600_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    settings = _settings(tmp_path)
    key_file = settings.data_dir / "session.key"
    first = load_session_key(settings)
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_session_key(settings) == first
    create_app(settings, db)  # a restart reads the same file
    assert load_session_key(settings) == first


def test_too_open_key_file_is_tightened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAMMOGATE_SESSION_KEY", raising=False)
    settings = _settings(tmp_path)
    key = load_session_key(settings)
    key_file = settings.data_dir / "session.key"
    key_file.chmod(0o644)
    assert load_session_key(settings) == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_key_from_the_environment_wins_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMMOGATE_SESSION_KEY", "k" * 40)
    settings = _settings(tmp_path)
    assert load_session_key(settings) == b"k" * 40
    assert not (settings.data_dir / "session.key").exists()


def test_short_key_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMMOGATE_SESSION_KEY", "short")
    with pytest.raises(SessionKeyError, match="MAMMOGATE_SESSION_KEY"):
        load_session_key(_settings(tmp_path))
