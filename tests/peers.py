"""Real peers for the tests: free ports, an Orthanc PACS, the node as a subprocess, PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom

REPO = Path(__file__).resolve().parents[1]
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
DCIODVFY = "/usr/bin/dciodvfy"
DSRDUMP = "/usr/bin/dsrdump"
PIXELMED_JAR = "/usr/share/java/pixelmed.jar"  # Debian libpixelmed-java
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian orthanc-dicomweb
PG_ADMIN_URL = os.environ.get("MAMMOGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def dcmtk_env() -> dict[str, str]:
    """The environment for DCMTK's tools: TCP_NODELAY turns Nagle's algorithm off (else each
    small PDU write waits for the peer's delayed ACK)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def pixelmed_sr_validation(path: Path) -> str:
    """PixelMed's DicomSRValidator: the one validator here that checks template content."""
    require_tool(PIXELMED_JAR)
    result = subprocess.run(
        ["java", "-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
         "-Djdk.xml.xpathTotalOpLimit=0", "-cp", PIXELMED_JAR,
         "com.pixelmed.validate.DicomSRValidator", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    return result.stdout + result.stderr


# PixelMed (20220618) decides whether an Imaging Measurements container holds TID 1410 groups by
# counting Image Region SCOORDs over ALL its Measurement Groups, not per group: when the report
# has exactly one, it checks EVERY group as TID 1410, so each TID 1501 group (breast, exam: no
# region by design) is reported "Missing conditional content item" for rows 5 and 7. With two
# or more regions it checks none as TID 1410. This matches only that report, at a position
# that really is a group without a region, in a report with exactly one region.
_PIXELMED_1410_MISAPPLIED = re.compile(
    r'^Error: Template 1410 PlanarROIMeasurements/\[Row 1\] CONTAINER \(125007,DCM,"Measurement '
    r'Group"\)/\[Row [57]\] [^:]*: within (?P<position>1(?:\.\d+)+): .*: Missing conditional '
    r"content item$")


def _content_item(ds: Any, position: str) -> Any:
    """The content item at PixelMed's dotted position ("1" is the document's root), or None."""
    item = ds
    for index in position.split(".")[1:]:
        children = item.get("ContentSequence", [])
        if not 1 <= int(index) <= len(children):
            return None
        item = children[int(index) - 1]
    return item


def _is_finding_group(group: Any) -> bool:
    """A group whose tracking identifier (112039, DCM) names a finding ("finding N"): ours are
    TID 1410 groups, so an error on one is never set aside, region or not."""
    return any(child.get("ValueType") == "TEXT" and child.ConceptNameCodeSequence[0].CodeValue == "112039"
               and str(child.TextValue).startswith("finding") for child in group.get("ContentSequence", []))


def _region_count(item: Any) -> int:
    """Image Region (111030, DCM) SCOORDs anywhere below ``item``."""
    count = 0
    for child in item.get("ContentSequence", []):
        name = child.get("ConceptNameCodeSequence")
        if child.get("ValueType") == "SCOORD" and name and name[0].CodeValue == "111030":
            count += 1
        count += _region_count(child)
    return count


def drop_misapplied_1410(errors: list[str], ds: Any) -> list[str]:
    """``errors`` less PixelMed's misapplied TID 1410 errors (above) on the SR ``ds``."""
    if _region_count(ds) != 1:
        return errors
    kept = []
    for line in errors:
        match = _PIXELMED_1410_MISAPPLIED.match(line)
        group = _content_item(ds, match["position"]) if match else None
        if (group is None or group.get("ValueType") != "CONTAINER" or _region_count(group) != 0
                or _is_finding_group(group)):
            kept.append(line)
    return kept


def pixelmed_sr_errors(path: Path) -> tuple[list[str], str]:
    """PixelMed's errors for the SR at ``path`` less its misapplied TID 1410 ones, and its
    whole output."""
    output = pixelmed_sr_validation(path)
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    return drop_misapplied_1410(errors, pydicom.dcmread(path)), output


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this test run has handed out before.

    The kernel may give the same ephemeral port twice while neither is bound yet.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def require_tool(path: str) -> None:
    if not Path(path).exists():
        raise AssertionError(f"{path} is missing: install the Debian package (see .ci/run)")


@dataclass
class Orthanc:
    """An Orthanc playing the PACS, on free loopback ports, with its own storage."""

    root: Path
    aet: str = "ORTHANC"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_config: dict[str, Any] = field(default_factory=dict)  # more Orthanc configuration keys
    dicomweb: bool = False  # load Debian's DICOMweb plugin (orthanc-dicomweb) at /dicom-web/
    users: dict[str, str] = field(default_factory=dict)  # HTTP basic auth, when given

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        require_tool("/usr/sbin/Orthanc")
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "mammogate-test-pacs",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "DicomServerEnabled": True,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
            "StableAge": 1,
            "HttpServerEnabled": True,
            "StorageCompression": False,
            "DicomAssociationCloseDelay": 0,
            **self.extra_config,
        }
        if self.dicomweb:
            require_tool(DICOMWEB_PLUGIN)
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(config))
        log = (self.root / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            ["/usr/sbin/Orthanc", str(cfg)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until(self._up, 30, "Orthanc to answer on its REST port")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}"
            )
        try:
            return httpx.get(f"{self.url}/system", timeout=1, auth=self.auth).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def auth(self) -> tuple[str, str] | None:
        return next(iter(self.users.items())) if self.users else None

    def find_instances(self, **query: str) -> list[dict[str, Any]]:
        r = httpx.post(
            f"{self.url}/tools/find",
            json={"Level": "Instance", "Query": query, "Expand": True},
            timeout=10, auth=self.auth,
        )
        r.raise_for_status()
        return list(r.json())

    def instance_file(self, orthanc_id: str) -> bytes:
        r = httpx.get(f"{self.url}/instances/{orthanc_id}/file", timeout=10, auth=self.auth)
        r.raise_for_status()
        return r.content


def toml_value(value: Any) -> str:
    """A value as TOML (inline tables for dicts)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class Node:
    """``mammogate serve`` as a subprocess on free loopback ports."""

    root: Path
    destinations: list[dict[str, Any]] = field(default_factory=list)
    # [[routes]] tables; None: one route sending the CAD SR of every study to every destination
    routes: list[dict[str, Any]] | None = None
    database_url: str = ""
    # Long enough that a slow fsync between two images of one association does not split a study.
    settle_seconds: float = 3.0
    ae_title: str = "MAMMOGATE"
    allowed_calling_ae_titles: list[str] = field(default_factory=list)
    dicom: dict[str, Any] = field(default_factory=dict)  # further [dicom] settings
    # the worker's and sender's fallback poll (tests: short; benchmarks: the shipped 1 s)
    poll_seconds: float = 0.2
    extra_env: dict[str, str] = field(default_factory=dict)
    dicom_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    executable: list[str] = field(default_factory=lambda: [sys.executable, "-m", "mammogate.cli"])
    process: subprocess.Popen[bytes] | None = None
    _log_from: int = 0  # where this run's lines start in the (appended) log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def config_path(self) -> Path:
        return self.root / "mammogate.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "node.log"

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        lines = [
            "[node]", f'data_dir = "{self.root / "var"}"',
            "[dicom]", f'ae_title = "{self.ae_title}"', 'bind = "127.0.0.1"',
            f"port = {self.dicom_port}",
            f"allowed_calling_ae_titles = {json.dumps(self.allowed_calling_ae_titles)}",
            f"settle_seconds = {self.settle_seconds}",
            *(f"{key} = {toml_value(value)}" for key, value in self.dicom.items()),
            "[web]", 'bind = "127.0.0.1"', f"port = {self.web_port}",
            "[database]", f'url = "{self.database_url}"',
            "[worker]", f"poll_seconds = {self.poll_seconds}", "retry_seconds = 1",
            "[sender]", f"poll_seconds = {self.poll_seconds}", "retry_initial_seconds = 0.5",
            "retry_max_seconds = 2",
        ]
        for d in self.destinations:
            lines += ["[[destinations]]"] + [f"{k} = {json.dumps(v)}" for k, v in d.items()]
        routes = self.routes
        if routes is None and self.destinations:
            routes = [{"destinations": [d["name"] for d in self.destinations],
                       "objects": ["cad_sr"]}]
        for route in routes or []:
            lines.append("[[routes]]")
            for key, value in route.items():
                lines.append(f"{key} = {toml_value(value)}")
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MAMMOGATE_CONFIG", None)
        env["MAMMOGATE_SESSION_KEY"] = "test-session-key-" + uuid.uuid4().hex
        env.update(self.extra_env)
        return env

    def run_cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        if not self.config_path.exists():
            self.write_config()
        result = subprocess.run(
            [*self.executable, *args, "--config", str(self.config_path)],
            input=stdin, capture_output=True, text=True, env=self.env(), timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"mammogate {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self, timeout: float = 120) -> Node:
        if not self.config_path.exists():
            self.write_config()
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.executable, "serve", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(),
        )
        wait_until(self._ready, timeout, "the node to serve web and DICOM")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"mammogate serve exited: {self.log_text()[-3000:]}")
        try:
            if httpx.get(f"{self.url}/healthz", timeout=1).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
        text = self.log_text()[self._log_from:]  # not the lines of an earlier run
        return "worker" in text and "model ready" in text

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def start_role(self, role: str, name: str = "") -> RoleProcess:
        """One role (``mammogate scp|worker|sender|web``) as a process of its own on this
        node's configuration; its status server (the portal, for web) on a free port."""
        if not self.config_path.exists():
            self.write_config()
        name = name or role
        status_port = self.web_port if role == "web" else free_port()
        log_path = self.root / f"{name}.log"
        with log_path.open("ab") as log:
            extra = [] if role == "web" else ["--status-port", str(status_port)]
            process = subprocess.Popen(
                [*self.executable, role, "--config", str(self.config_path), *extra],
                stdout=log, stderr=subprocess.STDOUT, env=self.env(),
            )
        return RoleProcess(name, process, f"http://127.0.0.1:{status_port}", log_path)

    def storescu(self, *files: Path, calling: str = "MODALITY", called: str | None = None,
                 options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        require_tool(STORESCU)
        return subprocess.run(
            [STORESCU, *options, "-aet", calling, "-aec", called or self.ae_title, "127.0.0.1",
             str(self.dicom_port), *map(str, files)],
            capture_output=True, text=True, timeout=120, env=dcmtk_env(),
        )

    def echoscu(self, calling: str = "MODALITY",
                options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        require_tool(ECHOSCU)
        return subprocess.run(
            [ECHOSCU, *options, "-aet", calling, "-aec", self.ae_title, "127.0.0.1",
             str(self.dicom_port)],
            capture_output=True, text=True, timeout=30, env=dcmtk_env(),
        )

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def login(self, username: str, password: str) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=10, follow_redirects=True)
        page = client.get("/login")
        match = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
        if match is None:
            raise AssertionError("the sign-in page has no CSRF token field")
        r = client.post(
            "/login",
            data={"username": username, "password": password, "_csrf_token": match.group(1),
                  "next": "/"},
        )
        if r.status_code != 200 or "/login" in str(r.url):
            raise AssertionError(f"sign-in failed: {r.status_code} {r.text[:300]}")
        return client


@dataclass
class RoleProcess:
    """A role of the node run alone (``Node.start_role``), with its status server."""

    name: str
    process: subprocess.Popen[bytes]
    status_url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"{self.status_url}{path}", timeout=2)
        except httpx.HTTPError:
            return None

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"mammogate {self.name} exited: {self.log_text()[-3000:]}")
        response = self.get("/ready")
        return response is not None and response.status_code == 200

    def stop(self) -> int:
        """SIGTERM, as an orchestrator stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def postgres_database() -> Iterator[str]:
    """A database of its own on the local PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"mammogate_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AssertionError(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        ) from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own (initdb on a free port), to stop and start at will
    without touching the shared server."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def bin(self) -> Path:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not versions:
            raise AssertionError("PostgreSQL server binaries are missing (Debian postgresql)")
        return versions[-1].parent

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, timeout=120)

    def init(self) -> ThrowawayPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.root / "data"), "-A", "trust",
                          "-U", "postgres", "--no-sync")
        return self.start()

    def start(self) -> ThrowawayPostgres:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-w",
                          "-l", str(self.root / "server.log"), "-o",
                          f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
                          "start")
        return self

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-w",
                          "-m", "fast", "stop")

    def running(self) -> bool:
        status = subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"),
                                 "-D", str(self.root / "data"), "status"], capture_output=True)
        return status.returncode == 0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def certificates(root: Path, name: str) -> Path:
    """A CA (ca.crt, ca.key), and certificates for 127.0.0.1 signed by it, for the server
    (server.crt, server.key) and for the client (client.crt, client.key): PEM files in
    root/name."""
    require_tool("/usr/bin/openssl")
    d = root / name
    d.mkdir(parents=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name} test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "san.cnf").write_text("subjectAltName = IP:127.0.0.1\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                 "-keyout", f"{who}.key", "-out", f"{who}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{who}.crt",
                 cwd=d)
    return d


def which(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise AssertionError(f"{tool} not found")
    return found


OIDC_DIR = Path(__file__).parent / "oidc"


def _drain(stream: Any) -> None:
    for _line in stream:
        continue


@dataclass
class OidcProvider:
    """A real OpenID Connect provider (panva/oidc-provider on Node.js, tests/oidc) on a free
    loopback port. ``accounts``: account id -> provider roles; any password signs them in."""

    clients: list[dict[str, Any]]
    accounts: dict[str, list[str]]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        require_tool("/usr/bin/node")
        require_tool(str(OIDC_DIR / "node_modules" / "oidc-provider"))  # scripts/test: npm ci
        env = {**os.environ, "PORT": str(self.port), "CLIENTS": json.dumps(self.clients),
               "ACCOUNTS": json.dumps({k: {"roles": v} for k, v in self.accounts.items()})}
        self.process = subprocess.Popen(
            ["/usr/bin/node", str(OIDC_DIR / "provider.mjs")], cwd=OIDC_DIR, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            if line.startswith("ready "):
                break
            if time.monotonic() > deadline:
                break
        else:
            raise AssertionError(f"the OpenID provider did not start (exit {self.process.poll()})")
        # keep reading its output so it never blocks on a full pipe
        threading.Thread(target=_drain, args=(self.process.stdout,), daemon=True).start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def migrated_database(engine: str, tmp_path: Path) -> Iterator[Any]:
    """A migrated database of the test's own: SQLite in ``tmp_path`` or one on the local
    PostgreSQL (``engine``: "sqlite" or "postgresql"), disposed (and dropped) afterwards."""
    from mammogate.db import Database

    if engine == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'test.sqlite3'}")
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()
        return
    with postgres_database() as url:
        database = Database(url)
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()
