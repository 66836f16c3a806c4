"""The portal's secret key: from the environment, else generated once into the data directory."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from mammogate.config.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE_NAME = "session.key"
_MIN_KEY_CHARS = 16


class SessionKeyError(Exception):
    """The session key can be neither read nor created."""


def load_session_key(settings: Settings) -> bytes:
    """The master key: ``$<web.session_key_env>`` if set, else ``data_dir/session.key`` (0600)."""
    env_name = settings.web.session_key_env
    from_env = os.environ.get(env_name, "")
    if from_env:
        if len(from_env) < _MIN_KEY_CHARS:
            raise SessionKeyError(
                f"${env_name} holds a session key of {len(from_env)} characters; "
                f"use at least {_MIN_KEY_CHARS} (e.g. `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`)"
            )
        return from_env.encode()
    return _key_from_file(settings.data_dir / KEY_FILE_NAME)


def _key_from_file(path: Path) -> bytes:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            log.info("generated a new session key in %s", path)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("%s was readable by others; its mode is now 0600", path)
        key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionKeyError(f"cannot read or create the session key {path}: {exc}") from exc
    if len(key) < _MIN_KEY_CHARS:
        raise SessionKeyError(
            f"the session key in {path} is too short; delete the file to generate a new one"
        )
    return key.encode()


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose, so the cookie and CSRF secrets are independent."""
    return hmac.new(master, f"mammogate.web.{purpose}".encode(), hashlib.sha256).digest()
