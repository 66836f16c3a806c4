"""The built wheel, installed (not editable) into a fresh venv, starts and serves: the model
bundle, migrations, templates, static files and message catalogs are package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx

from tests.peers import ECHOSCU, REPO, Node, require_tool


def test_wheel_in_fresh_venv_serves(tmp_path: Path) -> None:
    # Build from a copy of what git tracks (and the uncommitted edits to it), so nothing
    # untracked — and no build/ folder — can leak into or out of the wheel.
    source = tmp_path / "source"
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("mammogate-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    # Dependencies come from the test environment (no index here); the project itself only
    # from the wheel: a path entry does not run the editable install's .pth hook.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(python), "-c", "import mammogate; print(mammogate.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(str(venv)), where

    node = Node(tmp_path / "node", executable=[str(venv / "bin" / "mammogate")])
    node.start()
    try:
        login = httpx.get(f"{node.url}/login", timeout=10)
        assert login.status_code == 200 and "not for clinical use" in login.text.lower()
        french = httpx.get(f"{node.url}/login", headers={"Accept-Language": "fr"}, timeout=10)
        assert 'lang="fr"' in french.text and "Se connecter" in french.text  # the catalogs shipped
        assert httpx.get(f"{node.url}/static/portal.css", timeout=10).status_code == 200
        require_tool(ECHOSCU)
        echo = subprocess.run([ECHOSCU, "-aec", "MAMMOGATE", "127.0.0.1", str(node.dicom_port)],
                              capture_output=True, text=True, timeout=30)
        assert echo.returncode == 0, echo.stderr
    finally:
        assert node.stop() == 0, node.log_text()[-3000:]
    assert "database schema at head" in node.log_text()
