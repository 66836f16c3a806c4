"""The command line as an admin uses it, and the safety rules it enforces at start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.peers import Node

COMMANDS = [
    ["serve"], ["user", "add"], ["config", "apply"], ["db", "upgrade"], ["train"], ["synthetic"],
]


def _mammogate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mammogate.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_help_documents_every_command() -> None:
    top = _mammogate("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command[0] in top.stdout
        result = _mammogate(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: mammogate " + " ".join(command) in result.stdout


def test_serve_refuses_public_bind_with_empty_allow_list(tmp_path: Path) -> None:
    node = Node(tmp_path, extra_env={"MAMMOGATE_DICOM__BIND": "0.0.0.0"})
    node.write_config()
    result = subprocess.run([*node.executable, "serve", "--config", str(node.config_path)],
                            capture_output=True, text=True, timeout=120, env=node.env())
    assert result.returncode == 2
    assert "dicom.bind" in result.stderr and "accept_any_calling_ae" in result.stderr


def test_what_the_node_writes_to_its_data_directory_only_its_user_can_read(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.write_config()
    node.run_cli("user", "add", "bob", "--role", "admin", "--password-stdin", stdin="pw-123456789\n")
    data_dir = node.root / "var"
    assert data_dir.stat().st_mode & 0o777 == 0o700
    written = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "mammogate.sqlite3" for p in written)
    for path in written:  # the database (patients, password hashes, audit log) included
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"


def test_serve_with_a_too_short_session_key_says_so_in_one_line(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.write_config()
    env = {**node.env(), "MAMMOGATE_SESSION_KEY": "short"}
    result = subprocess.run([*node.executable, "serve", "--config", str(node.config_path)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert "session key of 5 characters" in result.stderr and "Traceback" not in result.stderr


def test_user_add_rejects_bad_role_and_duplicate(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.write_config()
    ok = node.run_cli("user", "add", "bob", "--role", "admin", "--password-stdin", stdin="pw-123456789\n")
    assert "bob" in ok.stdout
    again = node.run_cli("user", "add", "bob", "--role", "admin", "--password-stdin",
                         stdin="pw-123456789\n", check=False)
    assert again.returncode == 1 and "bob" in again.stderr
    bad = node.run_cli("user", "add", "eve", "--role", "root", "--password-stdin",
                       stdin="pw\n", check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_serve_refuses_a_tampered_model_bundle(tmp_path: Path) -> None:
    import shutil

    from mammogate.inference import default_bundle_dir

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    weights = bundle / "model.keras"
    weights.write_bytes(weights.read_bytes() + b"tampered")
    node = Node(tmp_path / "node", extra_env={"MAMMOGATE_MODEL__BUNDLE": str(bundle)})
    node.write_config()
    result = subprocess.run([*node.executable, "serve", "--config", str(node.config_path)],
                            capture_output=True, text=True, timeout=120, env=node.env())
    assert result.returncode == 1
    assert "sha256" in result.stderr and "cannot start" in result.stderr
    assert not (node.root / "var" / "mammogate.sqlite3").exists(), "refused before opening anything"


def test_serve_refuses_an_operating_point_the_bundle_does_not_have(tmp_path: Path) -> None:
    node = Node(tmp_path / "node", extra_env={"MAMMOGATE_MODEL__OPERATING_POINT": "sensitivity_99"})
    node.write_config()
    result = subprocess.run([*node.executable, "serve", "--config", str(node.config_path)],
                            capture_output=True, text=True, timeout=120, env=node.env())
    assert result.returncode == 1
    assert "'sensitivity_99'" in result.stderr and "balanced" in result.stderr


def test_allow_list_rule_is_checked_against_the_database_that_enforces_it(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.write_config()
    node.run_cli("db", "upgrade")  # first start: the database is seeded with an empty list
    text = node.config_path.read_text().replace('bind = "127.0.0.1"\nport', 'bind = "0.0.0.0"\nport', 1)
    text = text.replace("allowed_calling_ae_titles = []", 'allowed_calling_ae_titles = ["MODALITY"]')
    node.config_path.write_text(text)
    refused = subprocess.run([*node.executable, "serve", "--config", str(node.config_path)],
                             capture_output=True, text=True, timeout=120, env=node.env())
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "mammogate config apply" in refused.stderr
    node.run_cli("config", "apply")
    node.start()
    try:
        assert "allowed calling AE titles: MODALITY" in node.log_text()
        echo = subprocess.run(["/usr/bin/echoscu", "-aet", "INTRUDER", "-aec", "MAMMOGATE",
                               "127.0.0.1", str(node.dicom_port)], capture_output=True, text=True)
        assert echo.returncode != 0 and "Association Rejected" in echo.stdout + echo.stderr
    finally:
        assert node.stop() == 0


def test_user_management_from_the_command_line(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.write_config()
    node.run_cli("user", "add", "hannah", "--role", "radiologist", "--password-stdin",
                 stdin="correct horse battery staple\n")
    weak = node.run_cli("user", "add", "eve", "--role", "viewer", "--password-stdin",
                        stdin="abc\n", check=False)
    assert weak.returncode == 1 and "password: at least 12 characters" in weak.stderr
    listed = node.run_cli("user", "list").stdout
    assert re.search(r"hannah\s+radiologist\s+enabled\s+local\s+never", listed)
    assert not re.search(r"^eve\s", listed, re.MULTILINE)
    assert "user hannah disabled" in node.run_cli("user", "disable", "hannah").stdout
    assert re.search(r"hannah\s+radiologist\s+disabled", node.run_cli("user", "list").stdout)
    node.run_cli("user", "enable", "hannah")
    node.run_cli("user", "set-role", "hannah", "admin")
    assert re.search(r"hannah\s+admin\s+enabled", node.run_cli("user", "list").stdout)
    short = node.run_cli("user", "reset-password", "hannah", "--password-stdin", stdin="short\n",
                         check=False)
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    node.run_cli("user", "reset-password", "hannah", "--password-stdin",
                 stdin="another long passphrase\n")
    missing = node.run_cli("user", "disable", "nobody", check=False)
    assert missing.returncode == 1 and "no user 'nobody'" in missing.stderr


def test_serve_logs_one_json_object_per_line_when_configured(tmp_path: Path) -> None:
    import json

    node = Node(tmp_path, extra_env={"MAMMOGATE_NODE__LOG_FORMAT": "json"})
    node.write_config()
    env = {**node.env(), "MAMMOGATE_SESSION_KEY": "short"}
    result = subprocess.run([*node.executable, "serve", "--config", str(node.config_path)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["level"] == "CRITICAL" and "session key of 5 characters" in r["message"]
               for r in records)


def test_a_json_log_record_carries_its_traceback_in_one_line() -> None:
    import json

    program = (
        "import logging\n"
        "from mammogate.cli import _configure_logging\n"
        "_configure_logging('INFO', 'json')\n"
        "log = logging.getLogger('mammogate.dicom_node.scp')\n"
        "log.info('association accepted: %s -> %s', 'MODALITY', 'MAMMOGATE')\n"
        "try:\n"
        "    raise OSError('disk gone')\n"
        "except OSError:\n"
        "    log.exception('C-STORE of %s: cannot make it durable', '1.2.3')\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stderr.splitlines())
    assert first["message"] == "association accepted: MODALITY -> MAMMOGATE"
    assert first["logger"] == "mammogate.dicom_node.scp" and first["level"] == "INFO"
    assert first["time"].endswith("+00:00") and "exception" not in first
    assert second["level"] == "ERROR" and "OSError: disk gone" in second["exception"]
