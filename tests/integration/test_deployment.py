"""The deployment files say what they mean: docker-compose.yml, the Dockerfile and the
Kubernetes example are read and checked against each other, and the compose file's role
services are started here as the processes their containers would run (Docker does not run on
these machines): the same commands, the same environment with the test's database, spool, ports
and PACS, one PostgreSQL database and one spool for all, a study pushed by storescu, its result
objects delivered to an Orthanc by DIMSE and by STOW-RS."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pydicom
import pytest
import yaml

from mammogate.config import load_settings
from mammogate.config.settings import NodeSettings
from mammogate.training.synthetic import write_study
from tests.peers import (
    REPO,
    STORESCU,
    Orthanc,
    dcmtk_env,
    free_port,
    postgres_database,
    require_tool,
    wait_until,
)

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
KUBERNETES = REPO / "deploy" / "kubernetes"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
SPOOL = "/var/lib/mammogate"
# each role service and the port its /healthz answers on in the container
ROLES = {"scp": 9464, "worker": 9464, "sender": 9464, "web": 8080}
CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
OBJECT_CLASSES = {"cad_sr": CAD_SR, "comprehensive_sr": COMPREHENSIVE_SR}
# ${VAR}, ${VAR:?message}, ${VAR?message}, ${VAR:-default}, ${VAR-default}
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|SESSION_KEY|REGISTERED_USERS", re.IGNORECASE)
PASSWORD = "deployment test passphrase 9"


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose allows a mapping or a list of K=V)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


# --- the Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), per stage."""
    instructions: list[str] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        instructions.append((current + stripped).strip())
        current = ""
    stages: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"{instruction!r} comes before the first FROM"
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def _instruction(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [rest for k, rest in stage if k == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]


def dockerfile_healthcheck() -> list[str]:
    rest = _instruction(dockerfile_stages()[-1], "HEALTHCHECK")
    assert " CMD " in f" {rest} ", f"HEALTHCHECK without CMD: {rest}"
    command = json.loads(rest.split("CMD", 1)[1].strip())
    assert isinstance(command, list)
    return [str(part) for part in command]


def test_the_image_is_built_in_two_stages_and_runs_mammogate_as_an_unprivileged_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a final stage"
    builder, final = stages[0], stages[-1]
    assert builder[0] == ("FROM", "python:3.11-slim-bookworm AS builder")
    assert any(k == "RUN" and "pip wheel" in r and "pip install" in r for k, r in builder)
    assert final[0] == ("FROM", "python:3.11-slim-bookworm")
    # the final stage copies the venv from the builder, nothing from the build context, and
    # installs nothing with pip
    copies = [rest for k, rest in final if k in ("COPY", "ADD")]
    assert copies and all(c.startswith("--from=builder ") for c in copies), copies
    assert any("/opt/venv" in c for c in copies)
    assert not any(k == "RUN" and "pip " in r for k, r in final)
    assert dockerfile_env(final)["PATH"].startswith("/opt/venv/bin:")

    user = _instruction(final, "USER")
    uid = user.split(":")[0]
    assert uid not in ("root", "0") and user.split(":")[-1] not in ("root", "0"), user
    created = re.search(r"useradd --system --uid (\d+) .*mammogate", _instruction(final, "RUN"))
    assert created is not None and created.group(1) == uid, "USER is the mammogate system user"
    assert re.search(rf"install -d -m 0700 -o mammogate -g mammogate {SPOOL}\b",
                     _instruction(final, "RUN"))

    assert json.loads(_instruction(final, "ENTRYPOINT")) == ["mammogate"]
    assert json.loads(_instruction(final, "CMD")) == ["serve"]
    assert {int(p) for p in _instruction(final, "EXPOSE").split()} == {11112, 8080, 9464}
    assert SPOOL in json.loads(_instruction(final, "VOLUME"))
    env = dockerfile_env(final)
    assert env["MAMMOGATE_NODE__DATA_DIR"] == SPOOL
    for bind in ("MAMMOGATE_DICOM__BIND", "MAMMOGATE_WEB__BIND", "MAMMOGATE_STATUS__BIND"):
        assert env[bind] == "0.0.0.0", f"{bind}: inside a container the ports listen beyond loopback"

    healthcheck = dockerfile_healthcheck()
    assert healthcheck[:2] == ["python", "-c"] and "/healthz" in healthcheck[2]
    compile(healthcheck[2], "HEALTHCHECK", "exec")


def test_the_image_environment_is_a_configuration_the_node_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image's environment, with the compose file's, loads: binding beyond loopback is
    allowed because the compose file lists the calling AE titles, and every destination and
    route is valid."""
    for name in list(os.environ):
        if name.upper().startswith("MAMMOGATE_"):
            monkeypatch.delenv(name)
    env = {**dockerfile_env(dockerfile_stages()[-1]), **environment(services()["scp"])}
    for name, value in env.items():
        if name.startswith("MAMMOGATE_"):
            monkeypatch.setenv(name, REFERENCE.sub("secret-value-for-the-test", value))
    settings = load_settings(None)
    assert settings.dicom.bind == "0.0.0.0" and settings.dicom.all_peers
    assert str(settings.data_dir) == SPOOL
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert {d.kind for d in settings.destinations} == {"dimse", "stow"}


# --- docker-compose.yml -------------------------------------------------------------------------


def test_every_role_runs_the_one_image_on_the_one_spool() -> None:
    document = compose()
    every = services()
    anchor = document["x-node-env"]
    for name in (*ROLES, "migrate"):
        service = every[name]
        assert service["build"] == "." and service["image"] == every["scp"]["image"], name
        assert service["volumes"] == [f"spool:{SPOOL}"], f"{name}: the shared spool at {SPOOL}"
        assert environment(service) == {k: str(v) for k, v in anchor.items()}, (
            f"{name}: the shared environment (x-node-env)")
        assert "MAMMOGATE_NODE__DATA_DIR" not in environment(service), "the image sets it"
    assert "spool" in document["volumes"]
    # only the roles' services mount the spool: nothing else writes into it
    assert [n for n, s in every.items() if f"spool:{SPOOL}" in s.get("volumes", [])] == [
        n for n in every if n in (*ROLES, "migrate")]


def test_role_commands_ports_healthchecks_and_start_order() -> None:
    every = services()
    grace = NodeSettings().stop_grace_seconds
    for role, port in ROLES.items():
        service = every[role]
        assert service["command"] == [role]
        assert service["restart"] == "unless-stopped"
        period = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
        assert period and int(period.group(1)) > grace, (
            f"{role}: Docker waits longer than node.stop_grace_seconds before SIGKILL")
        assert service["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, role
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python"
        targets = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(test))
        assert targets == [(str(port), "/healthz")], f"{role}'s healthcheck asks its own /healthz"
    assert every["scp"]["ports"] == ["127.0.0.1:11112:11112"]
    assert every["web"]["ports"] == ["127.0.0.1:8080:8080"]
    for role in ("worker", "sender"):
        assert "ports" not in every[role], f"{role} publishes nothing (docker compose --scale)"
        assert "container_name" not in every[role]
    for name, service in every.items():
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published} beyond loopback"

    migrate = every["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"
    assert every["db"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def _strings(node: Any, key: str = "") -> list[tuple[str, str]]:
    """Every string in the document with the key it sits under."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(v, str(k))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v, key)]
    return [(key, str(node))] if isinstance(node, str | int | float) else []


def test_the_compose_file_holds_no_secret_only_references() -> None:
    document = compose()
    secrets_referenced: set[str] = set()
    for key, value in _strings(document):
        for match in REFERENCE.finditer(value):
            name, operator = match.group(1), match.group(2)
            if SECRET_NAME.search(name):
                secrets_referenced.add(name)
                assert operator in (":?", "?"), (
                    f"${{{name}}} must be required (${{{name}:?...}}), never given a default")
        bare = REFERENCE.sub("", value)
        if SECRET_NAME.search(key) and not key.upper().endswith("_ENV"):
            if value.lstrip().startswith("{"):  # e.g. Orthanc's users: {"name": "password"}
                for user, secret in json.loads(value).items():
                    assert REFERENCE.fullmatch(secret), f"{key}: {user}'s password is a literal"
            else:
                assert REFERENCE.fullmatch(value.strip()), f"{key} holds a literal: {value!r}"
        userinfo = re.search(r"://[^/@\s]*:([^/@\s]*)@", value)
        if userinfo:
            assert REFERENCE.fullmatch(userinfo.group(1)), f"{key}: a password in a URL: {value!r}"
        if bare.lstrip().startswith("["):  # destinations: secrets only by variable name
            for entry in json.loads(value):
                if isinstance(entry, dict):
                    assert not {"password", "token"} & set(entry), f"{key}: a secret in {entry}"
    assert {"POSTGRES_PASSWORD", "MAMMOGATE_SESSION_KEY"} <= secrets_referenced
    header = COMPOSE_FILE.read_text().split("\nservices:")[0]
    for name in secrets_referenced:
        assert name in header, f"the comment at the top says where {name} comes from (.env)"
    assert "--scale worker=" in header


def test_the_pacs_takes_dicomweb_where_the_stow_destination_sends() -> None:
    every = services()
    pacs = environment(every["pacs"])
    assert pacs["DICOM_WEB_PLUGIN_ENABLED"] == "true" and pacs["ORTHANC__DICOM_WEB__ENABLE"] == "true"
    root = pacs["ORTHANC__DICOM_WEB__ROOT"].strip("/")
    destinations = json.loads(environment(every["scp"])["MAMMOGATE_DESTINATIONS"])
    stow = [d for d in destinations if d["kind"] == "stow"]
    assert stow, "a STOW-RS destination"
    for d in stow:
        parts = urlsplit(d["url"])
        assert (parts.hostname, parts.port, parts.path.strip("/")) == ("pacs", 8042, root)
        users = json.loads(REFERENCE.sub("x", pacs["ORTHANC__REGISTERED_USERS"]))
        assert d["username"] in users and d["password_env"] in environment(every["scp"])
    dimse = [d for d in destinations if d["kind"] == "dimse"]
    assert [(d["host"], d["port"], d["ae_title"]) for d in dimse] == [
        ("pacs", 4242, pacs["ORTHANC__DICOM_AET"])]


# --- the Kubernetes example ---------------------------------------------------------------------


def kubernetes() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":  # kustomize's list, not a resource
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].removeprefix("mammogate-"): d for d in kubernetes()
            if d["kind"] == "Deployment"}


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_kubernetes_example_runs_the_compose_roles_with_probes_secrets_and_a_shared_spool() -> None:
    documents = kubernetes()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in KUBERNETES.glob("*.yaml")
                                    if p.name != "kustomization.yaml")
    deployments = _deployments()
    assert set(deployments) == set(ROLES)
    pvc = next(d for d in documents if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    final = dockerfile_stages()[-1]
    uid = int(_instruction(final, "USER").split(":")[0])
    every = services()
    images = set()
    env_blocks = []
    secret_keys: set[str] = set()
    pods = [(role, d["spec"]["template"]) for role, d in deployments.items()]
    job = next(d for d in documents if d["kind"] == "Job")
    pods.append(("migrate", job["spec"]["template"]))
    for role, template in pods:
        spec = template["spec"]
        container = _container(spec)
        command = every[role]["command"]
        assert container["args"] == command, f"{role} runs what the compose file runs"
        images.add(container["image"])
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == uid
        assert security["fsGroup"] == uid
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        assert mounts == {"spool": SPOOL} and claims == {"spool": pvc["metadata"]["name"]}
        env_blocks.append((container["env"], container["envFrom"]))
        for item in container["env"]:
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secret_keys.add(ref["key"])
            else:
                assert not SECRET_NAME.search(item["name"]) or "$(" in item["value"], item
        if role == "migrate":
            continue
        assert spec["terminationGracePeriodSeconds"] > NodeSettings().stop_grace_seconds, role
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/ready"),
                            ("startupProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{role} {probe}"
            assert ports[get["port"]] == ROLES[role], f"{role} {probe} on its own port"
        labels = template["metadata"]["labels"]
        assert deployments[role]["spec"]["selector"]["matchLabels"] == labels
    assert len(images) == 1, "one image for every role"
    assert all(block == env_blocks[0] for block in env_blocks), "every role: the same environment"
    assert secret_keys == {"POSTGRES_PASSWORD", "MAMMOGATE_SESSION_KEY"}
    # the Services: DICOM to the scp pods, the portal to the web pods
    for role, port in (("scp", 11112), ("web", 8080)):
        service = next(d for d in documents if d["kind"] == "Service"
                       and d["metadata"]["name"] == f"mammogate-{role}")
        labels = deployments[role]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"] == labels
        (exposed,) = service["spec"]["ports"]
        container_ports = {p["name"]: p["containerPort"]
                           for p in _container(deployments[role]["spec"]["template"]["spec"])["ports"]}
        assert exposed["port"] == port and container_ports[exposed["targetPort"]] == port
    assert ("Service", "mammogate-worker") not in kinds
    # the ConfigMap: the compose file's settings, no secret
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    assert not any(SECRET_NAME.search(k) for k in config)
    assert config["MAMMOGATE_DICOM__ALLOWED_CALLING_AE_TITLES"] == environment(every["scp"])[
        "MAMMOGATE_DICOM__ALLOWED_CALLING_AE_TITLES"]
    # the documented `kubectl create secret` gives every key the pods read
    doc = DEPLOYMENT_DOC.read_text()
    created = re.search(r"kubectl create secret generic mammogate-secrets(.*?)\n(?!\s)", doc, re.S)
    assert created is not None, "docs/deployment.md says how to create the Secret"
    assert set(re.findall(r"--from-literal=(\w+)=", created.group(1))) == secret_keys


# --- the roles, started as the compose file starts them -----------------------------------------


def _interpolate(value: str, variables: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in variables, f"the compose file refers to ${{{name}}}, unknown to this test"
        return variables[name]

    return REFERENCE.sub(substitute, value)


def _translate_destinations(value: str, pacs: Orthanc) -> str:
    """The compose file's destinations, each pointing at the service `pacs`, pointed at the
    test's Orthanc (DIMSE port 4242 and HTTP port 8042 in the container)."""
    destinations = json.loads(value)
    for d in destinations:
        if d["kind"] == "dimse":
            assert (d["host"], d["port"]) == ("pacs", 4242), d
            d["host"], d["port"] = "127.0.0.1", pacs.dicom_port
        else:
            parts = urlsplit(d["url"])
            assert (parts.hostname, parts.port) == ("pacs", 8042), d
            d["url"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{pacs.http_port}"))
    return json.dumps(destinations)


def _check(command: list[str], env: dict[str, str], port: int | None = None) -> bool:
    """Run a healthcheck command (compose's or the Dockerfile's, ``python -c CODE``) here with
    this Python; ``port``: the process's port in place of the container's."""
    assert command[:2] == ["python", "-c"], command
    code = command[2]
    if port is not None:
        code, count = re.subn(r"127\.0\.0\.1:(8080|9464)/", f"127.0.0.1:{port}/", code)
        assert count == 1, code
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                            env={**os.environ, **env})
    return result.returncode == 0


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    return int(process.returncode)


def test_the_compose_roles_as_processes_take_a_study_and_deliver_its_results(tmp_path: Path) -> None:
    require_tool(STORESCU)
    cli = [sys.executable, "-m", "mammogate.cli"]
    every = services()
    for role in ROLES:
        has = subprocess.run([*cli, *every[role]["command"], "--help"], capture_output=True,
                             text=True, timeout=60)
        assert has.returncode == 0, (
            f"`mammogate {role}` does not exist yet (docs/deployment.md describes the roles): "
            f"{has.stderr[-500:]}")

    study = write_study(tmp_path / "study", seed=6262, lesion=True)
    paths = [str(i.path) for i in study.images if i.path is not None]
    orthanc_password = uuid.uuid4().hex
    variables = {"POSTGRES_PASSWORD": uuid.uuid4().hex,
                 "MAMMOGATE_SESSION_KEY": "test-session-key-" + uuid.uuid4().hex,
                 "ORTHANC_PASSWORD": orthanc_password}
    pacs_env = environment(every["pacs"])
    users = json.loads(_interpolate(pacs_env["ORTHANC__REGISTERED_USERS"], variables))
    pacs = Orthanc(tmp_path / "pacs", aet=pacs_env["ORTHANC__DICOM_AET"], dicomweb=True,
                   users=users).start()
    spool = tmp_path / "spool"
    image_env = dockerfile_env(dockerfile_stages()[-1])
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        with postgres_database() as database_url:
            anchor = {k: _interpolate(v, variables) for k, v in environment(every["migrate"]).items()}
            assert urlsplit(anchor["MAMMOGATE_DATABASE__URL"]).hostname == "db"
            anchor["MAMMOGATE_DATABASE__URL"] = database_url
            anchor["MAMMOGATE_DESTINATIONS"] = _translate_destinations(
                anchor["MAMMOGATE_DESTINATIONS"], pacs)
            translated_image_env = {
                **{k: v for k, v in image_env.items() if k.startswith("MAMMOGATE_")},
                "MAMMOGATE_NODE__DATA_DIR": str(spool),
                "MAMMOGATE_DICOM__BIND": "127.0.0.1", "MAMMOGATE_WEB__BIND": "127.0.0.1",
                "MAMMOGATE_STATUS__BIND": "127.0.0.1",
            }
            host_env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOGATE_")}

            def container_env() -> tuple[dict[str, str], dict[str, int]]:
                """One container's environment: its own ports, as each container has its own
                network namespace."""
                ports = {"dicom": free_port(), "web": free_port(), "status": free_port()}
                return {**host_env, **translated_image_env, **anchor,
                        "MAMMOGATE_DICOM__PORT": str(ports["dicom"]),
                        "MAMMOGATE_WEB__PORT": str(ports["web"]),
                        "MAMMOGATE_STATUS__PORT": str(ports["status"])}, ports

            migrate_env, _ = container_env()
            migrated = subprocess.run([*cli, *every["migrate"]["command"]], env=migrate_env,
                                      capture_output=True, text=True, timeout=300)
            assert migrated.returncode == 0, migrated.stderr[-3000:]
            added = subprocess.run([*cli, "user", "add", "dr.roles", "--role", "radiologist",
                                    "--password-stdin"], input=PASSWORD + "\n", env=migrate_env,
                                   capture_output=True, text=True, timeout=120)
            assert added.returncode == 0, added.stderr[-3000:]

            role_ports: dict[str, dict[str, int]] = {}
            role_env: dict[str, dict[str, str]] = {}
            try:
                for role in ROLES:
                    role_env[role], role_ports[role] = container_env()
                    logs[role] = tmp_path / f"{role}.log"
                    with logs[role].open("wb") as log:
                        processes[role] = subprocess.Popen(
                            [*cli, *every[role]["command"]], env=role_env[role], stdout=log,
                            stderr=subprocess.STDOUT)

                def port_of(role: str) -> int:
                    return role_ports[role]["web" if ROLES[role] == 8080 else "status"]

                def healthy(role: str) -> bool:
                    if processes[role].poll() is not None:
                        raise AssertionError(f"{role} exited ({processes[role].returncode}): "
                                             f"{logs[role].read_text(errors='replace')[-3000:]}")
                    return _check(every[role]["healthcheck"]["test"][1:], {}, port_of(role))

                for role in ROLES:  # the compose healthcheck, as Docker would run it
                    wait_until(lambda role=role: healthy(role), 180, f"{role}'s /healthz")
                # the image's HEALTHCHECK too: healthy by its role's own port, and not without it
                check = dockerfile_healthcheck()
                for role in ROLES:
                    own = {"MAMMOGATE_WEB__PORT": str(role_ports[role]["web"]),
                           "MAMMOGATE_STATUS__PORT": str(role_ports[role]["status"])}
                    assert _check(check, own), f"the image's HEALTHCHECK fails for {role}"
                nothing = {"MAMMOGATE_WEB__PORT": str(free_port()),
                           "MAMMOGATE_STATUS__PORT": str(free_port())}
                assert not _check(check, nothing), "the HEALTHCHECK passes with nothing there"
                scp_ready = f"http://127.0.0.1:{role_ports['scp']['status']}/ready"
                wait_until(lambda: httpx.get(scp_ready, timeout=5).status_code == 200, 60,
                           "the SCP to be ready (database, spool, DICOM port)")

                calling = json.loads(anchor["MAMMOGATE_DICOM__ALLOWED_CALLING_AE_TITLES"])[0]
                stored = subprocess.run(
                    [STORESCU, "-aet", calling, "-aec",
                     anchor.get("MAMMOGATE_DICOM__AE_TITLE", "MAMMOGATE"),
                     "127.0.0.1", str(role_ports["scp"]["dicom"]), *paths],
                    capture_output=True, text=True, timeout=120, env=dcmtk_env())
                assert stored.returncode == 0, stored.stdout + stored.stderr

                # every object the compose routes ask for arrives at its destination
                routes = json.loads(anchor["MAMMOGATE_ROUTES"])
                wanted = {OBJECT_CLASSES[kind] for route in routes for kind in route["objects"]}
                assert wanted == {CAD_SR, COMPREHENSIVE_SR}

                def arrived() -> set[str]:
                    for role, process in processes.items():
                        assert process.poll() is None, (
                            f"{role} exited: {logs[role].read_text(errors='replace')[-3000:]}")
                    found = pacs.find_instances(StudyInstanceUID=study.study_instance_uid,
                                                Modality="SR")
                    classes = {str(pydicom.dcmread(_bytes(pacs, str(f["ID"]))).SOPClassUID)
                               for f in found}
                    return classes if classes >= wanted else set()

                assert wait_until(arrived, 300, "the CAD SR (DIMSE) and the TID 1500 SR "
                                  "(STOW-RS) in the PACS") == wanted

                # the portal (another process, the same database and spool) shows the result
                web = f"http://127.0.0.1:{role_ports['web']['web']}"
                client = _login(web, "dr.roles", PASSWORD)
                detail = client.get(f"/api/studies/{study.study_instance_uid}").json()
                assert detail["state"] == "done" and detail["analysis"]["exam_score"] is not None
                analysed = [i for i in detail["analysis"]["images"] if i["status"] == "analysed"]
                assert len(analysed) == 4
                overlay = client.get(f"/studies/{study.study_instance_uid}/images/"
                                     f"{analysed[0]['sop_instance_uid']}/overlay.png")
                assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG"), (
                    "the worker's overlay, read by the portal from the shared spool")
                for role in ROLES:  # every role ready: database, spool, port, model
                    ready = httpx.get(f"http://127.0.0.1:{port_of(role)}/ready", timeout=10)
                    assert ready.status_code == 200, f"{role} /ready: {ready.text}"
            finally:
                codes = {role: _stop(process) for role, process in processes.items()}
            for role, code in codes.items():
                assert code == 0, (f"{role} exited {code} after SIGTERM: "
                                   f"{logs[role].read_text(errors='replace')[-3000:]}")
    finally:
        for process in processes.values():  # a failure before the inner finally
            if process.poll() is None:
                _stop(process)
        pacs.stop()


def _bytes(pacs: Orthanc, orthanc_id: str) -> Any:
    from io import BytesIO

    return BytesIO(pacs.instance_file(orthanc_id))


def _login(url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10, follow_redirects=True)
    page = client.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert token is not None, "the sign-in page has no CSRF token field"
    signed_in = client.post("/login", data={"username": username, "password": password,
                                            "_csrf_token": token.group(1), "next": "/"})
    assert signed_in.status_code == 200 and "/login" not in str(signed_in.url), signed_in.text[:300]
    return client
