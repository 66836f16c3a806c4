# mammogate node image. Build: docker build -t mammogate .
# One image for every role: `serve` (the default: SCP, worker, sender and portal in one
# process), or `scp`, `worker`, `sender`, `web`, `db upgrade` (docker-compose.yml,
# docs/deployment.md).

# --- builder: a wheel of the project, installed with its dependencies into a venv -------------
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY mammogate ./mammogate
# the venv lives where the final stage runs it: its scripts name /opt/venv/bin/python
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/mammogate-*.whl

# --- final: the venv only, run by an unprivileged user ----------------------------------------
FROM python:3.11-slim-bookworm
# python-gdcm, pylibjpeg-openjpeg and pylibjpeg-rle are self-contained wheels: no system libraries needed.
# A system user with a fixed uid (10001), so a volume, a Kubernetes securityContext
# (runAsUser/fsGroup) or an NFS export can name it; its home is the data directory.
RUN groupadd --system --gid 10001 mammogate \
 && useradd --system --uid 10001 --gid mammogate --home-dir /var/lib/mammogate \
    --no-create-home --shell /usr/sbin/nologin mammogate \
 && install -d -m 0700 -o mammogate -g mammogate /var/lib/mammogate
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The spool, the ingest journal, result objects and overlays (and SQLite, when no
# MAMMOGATE_DATABASE__URL is given). Every role of one node needs the same data directory:
# a shared volume.
ENV MAMMOGATE_NODE__DATA_DIR=/var/lib/mammogate
# Inside a container the ports must listen beyond loopback; list the calling AE titles in the
# configuration (MAMMOGATE_DICOM__ALLOWED_CALLING_AE_TITLES or dicom.peers; or set
# MAMMOGATE_DICOM__ACCEPT_ANY_CALLING_AE=true on purpose): the node refuses to start with the
# DICOM port open to anyone by accident. The status server (/healthz, /ready, /metrics of scp,
# worker and sender) listens beyond loopback too, for the orchestrator's probes.
ENV MAMMOGATE_DICOM__BIND=0.0.0.0 MAMMOGATE_WEB__BIND=0.0.0.0 MAMMOGATE_STATUS__BIND=0.0.0.0
WORKDIR /var/lib/mammogate
USER 10001:10001
# DICOM, the portal (serve, web), the status server (scp, worker, sender)
EXPOSE 11112 8080 9464
# Whichever role runs, its /healthz answers on the portal's port (serve, web) or on the status
# port (scp, worker, sender): healthy when either answers 200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["python", "-c", "import os, urllib.request\ndef ok(port):\n    try:\n        return urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3).status == 200\n    except OSError:\n        return False\nports = {os.environ.get('MAMMOGATE_WEB__PORT', '8080'), os.environ.get('MAMMOGATE_STATUS__PORT', '9464')}\nraise SystemExit(0 if any(ok(p) for p in ports) else 1)"]
VOLUME ["/var/lib/mammogate"]
ENTRYPOINT ["mammogate"]
CMD ["serve"]
