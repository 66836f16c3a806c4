"""The settings model, its validation rules and how a file plus the environment become one."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "MAMMOGATE_"
CONFIG_ENV = "MAMMOGATE_CONFIG"

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash
OBJECT_KINDS = ("cad_sr", "comprehensive_sr", "sc_overlay")


class ConfigError(Exception):
    """A configuration file or value is invalid; the message names the key."""


class StartupError(Exception):
    """The node cannot start as configured (a port in use, ...); the message names the
    setting to change."""


class PolicyError(StartupError):
    """A safety rule refuses to start the node (the DICOM port open to any caller)."""


def _check_ae_title(value: str, key: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_TITLE.match(value):
        raise ValueError(
            f"{key}: {value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)"
        )
    return stripped


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSettings(_Section):
    data_dir: Path = Path("var")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # "text": one readable line per record; "json": one JSON object per line (for a log
    # collector): time, level, logger, message, and the traceback of an exception
    log_format: Literal["text", "json"] = "text"
    # after SIGTERM/SIGINT the node stops gracefully within this, else exits anyway (what was
    # committed stays; a study in analysis is analysed again after the restart)
    stop_grace_seconds: float = Field(30.0, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        level = v.strip().upper()
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)  # logging's aliases


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")
_VIEW_NAME = re.compile(r"^[RL](CC|MLO|ML|LM|LMO|XCCL|XCCM|FB|SIO|AT|CV)$")
DEFAULT_EXPECTED_VIEWS = ("RCC", "LCC", "RMLO", "LMLO")


def check_peer_host(value: str, key: str) -> str:
    """An IP address, a network in CIDR notation or a host name."""
    text = value.strip()
    try:
        ipaddress.ip_network(text, strict=False)
        return text
    except ValueError:
        pass
    if not _HOST_NAME.match(text) or text.replace(".", "").isdigit():
        raise ValueError(f"{key}: {value!r} is neither an IP address, a network (CIDR) nor a host name")
    return text


class Peer(_Section):
    """A sender allowed to associate: its calling AE title, and the hosts it may call from
    (empty: any host)."""

    ae_title: str
    hosts: list[str] = Field(default_factory=list)
    description: str = Field("", max_length=255)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae_title(v, "dicom.peers.ae_title")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        hosts = [check_peer_host(h, "dicom.peers.hosts") for h in v]
        if len(",".join(hosts)) > 1024:
            raise ValueError("dicom.peers.hosts: at most 1024 characters in all")
        return hosts


class DicomSettings(_Section):
    ae_title: str = "MAMMOGATE"
    # further called AE titles the node answers to (routes tell them apart by
    # match.called_ae_title); ae_title is the one it calls peers with
    additional_ae_titles: list[str] = Field(default_factory=list)
    bind: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535)
    allowed_calling_ae_titles: list[str] = Field(default_factory=list)  # peers from any host
    peers: list[Peer] = Field(default_factory=list)
    accept_any_calling_ae: bool = False
    settle_seconds: float = Field(10.0, ge=0)
    # how often the SCP reads its allowed peers from the database again (a peer an admin adds
    # is accepted within this), and retries instances the database refused before
    refresh_seconds: float = Field(1.0, gt=0)
    # A study is ready for analysis as soon as these views are all present (laterality + view,
    # as read from the images), or after settle_seconds without new images; [] waits for quiet.
    expected_views: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPECTED_VIEWS))
    # Opt-in: images of one patient (PatientID without its view suffix, e.g. CBIS-DDSM's
    # "Mass-Test_P_00173" of "Mass-Test_P_00173_LEFT_CC") and one StudyDate that arrive as
    # separate studies (one StudyInstanceUID per image) are analysed as one exam, under the
    # first study's UID; the result names every study it was assembled from.
    group_studies_by_patient_and_date: bool = False
    acse_timeout: float = Field(30.0, gt=0)
    dimse_timeout: float = Field(60.0, gt=0)
    network_timeout: float = Field(60.0, gt=0)
    maximum_pdu_size: int = Field(4 * 2**20, ge=4096, le=2**30)  # announced, and enforced
    maximum_associations: int = Field(10, ge=1)
    maximum_associations_per_host: int = Field(8, ge=1)
    max_connections: int = Field(200, ge=1)  # open TCP connections, requested or not
    association_request_seconds: float = Field(5.0, gt=0)  # for the A-ASSOCIATE-RQ to arrive
    # Bounded reads (checked before anything is inflated or decoded). The defaults take the
    # largest real mammograms: 5k x 4k 16-bit projections, digitised film at 50 um, and
    # tomosynthesis of about 100 slices of 3328 x 2560.
    max_dataset_bytes: int = Field(1_610_612_736, ge=1024)  # encoded, and inflated if Deflated
    max_pixel_bytes: int = Field(1_610_612_736, ge=1024)  # Rows x Columns x frames x bits / 8
    max_rows_columns: int = Field(8192, ge=64)
    max_frames: int = Field(512, ge=1)
    max_elements: int = Field(100_000, ge=100)
    max_sequence_depth: int = Field(16, ge=2)
    # A half-received file (".incoming-*.tmp") a crash left in the spool is removed at start
    # once it is this old: older than any C-STORE still in flight on a node sharing the spool.
    stale_incoming_seconds: float = Field(3600.0, ge=0)
    # The ingest journal (docs/architecture.md, "Ingest"): a small instance is made durable by
    # one fdatasync into a preallocated journal segment before Success; its spool file and row
    # follow for many instances at once, when the sender pauses for store_batch_idle_seconds,
    # sends anything but data, or store_batch_max instances or store_batch_max_seconds have
    # passed (ten times that many waiting: whatever it takes). Off: every instance is fsynced
    # into the spool and committed before Success.
    store_journal: bool = True
    journal_segment_bytes: int = Field(32 * 2**20, ge=4 * 2**20)
    store_batch_max: int = Field(100, ge=1)
    store_batch_idle_seconds: float = Field(0.005, ge=0)
    store_batch_max_seconds: float = Field(0.5, gt=0)
    # how long such a flush waits for the database's write lock before it leaves the batch for
    # the next pause (the sender is never held up by the portal's writes); a release waits
    store_batch_lock_wait_seconds: float = Field(0.05, ge=0)
    # DICOM over TLS on this port (PS3.15 B.1, BCP 195: TLS 1.2 and 1.3 only). PEM files: this
    # node's certificate (with its chain) and unencrypted key; tls_ca_file the CA bundle that
    # client certificates are verified against (a client without one is still taken unless
    # tls_require_client_certificate, which needs tls_ca_file: mutual TLS).
    tls: bool = False
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_require_client_certificate: bool = False

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae_title(v, "dicom.ae_title")

    @model_validator(mode="after")
    def _tls(self) -> DicomSettings:
        files = {"tls_cert_file": self.tls_cert_file, "tls_key_file": self.tls_key_file,
                 "tls_ca_file": self.tls_ca_file}
        if not self.tls:
            given = [f"dicom.{key}" for key, value in files.items() if value]
            if self.tls_require_client_certificate:
                given.append("dicom.tls_require_client_certificate")
            if given:
                raise ValueError(f"{', '.join(given)} given but dicom.tls is false: set "
                                 "dicom.tls = true to listen with TLS, or remove them")
            return self
        for key in ("tls_cert_file", "tls_key_file"):
            if not files[key]:
                raise ValueError(f"dicom.{key} is required when dicom.tls is true "
                                 "(a PEM file)")
        if self.tls_require_client_certificate and not self.tls_ca_file:
            raise ValueError("dicom.tls_ca_file is required when "
                             "dicom.tls_require_client_certificate is true (the CA bundle that "
                             "client certificates are verified against)")
        for key, value in files.items():
            if value and not Path(value).is_file():
                raise ValueError(f"dicom.{key}: {value!r} is not a file")
        return self

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _allowed(cls, v: list[str]) -> list[str]:
        return [_check_ae_title(t, "dicom.allowed_calling_ae_titles") for t in v]

    @field_validator("additional_ae_titles")
    @classmethod
    def _additional(cls, v: list[str]) -> list[str]:
        return [_check_ae_title(t, "dicom.additional_ae_titles") for t in v]

    @field_validator("expected_views")
    @classmethod
    def _views(cls, v: list[str]) -> list[str]:
        views = [view.strip().upper() for view in v]
        for view in views:
            if not _VIEW_NAME.match(view):
                raise ValueError(
                    f"dicom.expected_views: {view!r} is not laterality (R or L) and a view "
                    "(CC, MLO, ML, LM, LMO, XCCL, XCCM, FB, SIO, AT, CV), e.g. \"RMLO\""
                )
        return list(dict.fromkeys(views))

    @property
    def listening_ae_titles(self) -> list[str]:
        """Every called AE title the SCP accepts, ae_title first."""
        return list(dict.fromkeys([self.ae_title, *self.additional_ae_titles]))

    @property
    def all_peers(self) -> list[Peer]:
        """dicom.peers and dicom.allowed_calling_ae_titles (any host) as one list."""
        return [*self.peers, *(Peer(ae_title=t) for t in self.allowed_calling_ae_titles)]

    @model_validator(mode="after")
    def _peers_unique(self) -> DicomSettings:
        titles = [p.ae_title for p in self.all_peers]
        twice = sorted({t for t in titles if titles.count(t) > 1})
        if twice:
            raise ValueError(
                f"dicom.peers / dicom.allowed_calling_ae_titles: {', '.join(twice)} listed more "
                "than once (one entry per calling AE title; list all its hosts there)"
            )
        return self

    @property
    def binds_loopback(self) -> bool:
        return _is_loopback(self.bind)

    @model_validator(mode="after")
    def _safe_bind(self) -> DicomSettings:
        if (
            not self.binds_loopback
            and not self.all_peers
            and not self.accept_any_calling_ae
        ):
            raise ValueError(
                f"dicom.bind = {self.bind!r} exposes the DICOM port beyond this machine while "
                "dicom.peers and dicom.allowed_calling_ae_titles are empty: list the calling AE titles to accept, "
                "or set dicom.accept_any_calling_ae = true to accept any caller on purpose"
            )
        return self


class WebSettings(_Section):
    bind: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    session_key_env: str = "MAMMOGATE_SESSION_KEY"  # name of the variable holding the key
    session_max_age_seconds: int = Field(8 * 3600, gt=0)
    secure_cookies: bool = False  # set true behind TLS
    # Sign-in throttling (mammogate.web.auth.throttle): free failures per account and per client
    # address, then a lock doubling from sign_in_delay_seconds up to the maximum.
    sign_in_free_failures: int = Field(5, ge=1)
    sign_in_address_free_failures: int = Field(20, ge=1)
    sign_in_delay_seconds: float = Field(2.0, gt=0)
    sign_in_max_delay_seconds: float = Field(900.0, gt=0)
    sign_in_failure_window_seconds: float = Field(3600.0, gt=0)

    @property
    def exposure_warning(self) -> str | None:
        """What is unsafe about serving the portal like this, if anything."""
        if _is_loopback(self.bind) or self.secure_cookies:
            return None
        return (
            f"web.bind = {self.bind!r} serves the portal beyond this machine while "
            "web.secure_cookies is false: sign-in cookies and patient data travel in clear "
            "unless a TLS proxy is in front; put one there and set web.secure_cookies = true"
        )


class StatusSettings(_Section):
    """The HTTP status server of a role run alone (``mammogate scp|worker|sender``): /healthz,
    /ready and /metrics. ``serve`` and ``web`` answer these on the portal's port instead."""

    bind: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)  # 0: a free port, said in the log


class DatabaseSettings(_Section):
    url: str = ""  # empty: SQLite in data_dir
    busy_timeout_seconds: float = Field(30.0, gt=0)
    # PostgreSQL: the work-notification listener reconnects after this (polling meanwhile)
    reconnect_seconds: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError(
                f"database.url: {v.split('://')[0]!r} is not supported; use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB (or leave it empty for SQLite in node.data_dir)"
            )
        return v


class ModelSettings(_Section):
    bundle: str = ""  # empty: the shipped bundle
    # which of the bundle's operating points flags an exam (sensitivity_90, balanced,
    # specificity_90, ...); empty: the bundle's default
    operating_point: str = ""


class WorkerSettings(_Section):
    poll_seconds: float = Field(1.0, gt=0)  # the fallback: stored images wake the worker
    # after a wake-up, gather the announcements of this long (the images of one association
    # arrive in a burst) before looking: one look per burst, not one per image
    wake_coalesce_seconds: float = Field(0.05, ge=0, le=5)
    lease_seconds: float = Field(600.0, gt=0)
    # a worker with a deep queue (more than this many studies waiting besides its own) takes
    # up to this many at once and runs their views through the model together; 1: one at a time
    batch_studies: int = Field(4, ge=1, le=64)
    max_attempts: int = Field(3, ge=1)
    retry_seconds: float = Field(30.0, ge=0)
    # the analysis process (one per worker) is stopped when it exceeds either; the attempt
    # fails with the reason, the study fails after max_attempts
    max_memory_bytes: int = Field(4 * 2**30, ge=256 * 2**20)
    analysis_timeout_seconds: float = Field(300.0, gt=0)
    # starting the analysis process: TensorFlow's import and the weights
    model_start_timeout_seconds: float = Field(120.0, gt=0)


class SenderSettings(_Section):
    poll_seconds: float = Field(1.0, gt=0)
    retry_initial_seconds: float = Field(10.0, ge=0)
    retry_max_seconds: float = Field(600.0, ge=0)
    # each delay is drawn from [(1 - jitter) x, x] of the exponential one, so deliveries that
    # failed together do not retry together
    retry_jitter: float = Field(0.25, ge=0, le=0.9)
    max_attempts: int = Field(20, ge=1)
    lease_seconds: float = Field(300.0, gt=0)
    calling_ae_title: str = ""  # empty: dicom.ae_title

    @model_validator(mode="after")
    def _backoff(self) -> SenderSettings:
        given = {"retry_initial_seconds", "retry_max_seconds"} & self.model_fields_set
        # One given alone: the default of the other follows it (retry_max_seconds = 5 alone
        # means every 5 s). Both given and contradictory: say so.
        if given == {"retry_max_seconds"}:
            self.retry_initial_seconds = min(self.retry_initial_seconds, self.retry_max_seconds)
        elif given == {"retry_initial_seconds"}:
            self.retry_max_seconds = max(self.retry_max_seconds, self.retry_initial_seconds)
        elif self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError(
                f"sender.retry_max_seconds ({self.retry_max_seconds}) is less than "
                f"sender.retry_initial_seconds ({self.retry_initial_seconds})"
            )
        return self

    @field_validator("calling_ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae_title(v, "sender.calling_ae_title") if v else v


class StorageSettings(_Section):
    """Disk space and retention (``mammogate.storage``, ``mammogate.analysis.retention``)."""

    # The SCP answers C-STORE 0xA700 (Out of Resources) while the spool's filesystem has less
    # free than either of these (0: no limit of that kind)
    min_free_bytes: int = Field(2 * 2**30, ge=0)
    min_free_percent: float = Field(0.0, ge=0, lt=100)
    # The worker claims no analysis, and writes no result or overlay, while the data_dir's
    # filesystem has less free than this: less than min_free_bytes, so images stop coming in
    # before results can no longer be written
    results_min_free_bytes: int = Field(256 * 2**20, ge=0)
    # statvfs is read at most this often (0: before every instance)
    free_space_check_seconds: float = Field(1.0, ge=0)
    # at most one log line (and audit entry) per this while stores are refused for space
    refusal_log_seconds: float = Field(60.0, gt=0)
    # the spool files of a study every delivery of which is delivered (at least one) are
    # removed this many days after its last delivery (0: kept forever); results and overlays
    # are kept. A float: 0.5 is twelve hours.
    retention_days: float = Field(0.0, ge=0)
    retention_check_seconds: float = Field(3600.0, gt=0)  # how often the sweep looks

    @model_validator(mode="after")
    def _results_below_images(self) -> StorageSettings:
        given = {"min_free_bytes", "results_min_free_bytes"} & self.model_fields_set
        if self.min_free_bytes and self.results_min_free_bytes > self.min_free_bytes:
            if given == {"min_free_bytes"}:
                # min_free_bytes lowered alone: the results' reserve follows it down
                self.results_min_free_bytes = self.min_free_bytes // 2
            else:
                raise ValueError(
                    f"storage.results_min_free_bytes ({self.results_min_free_bytes}) is more "
                    f"than storage.min_free_bytes ({self.min_free_bytes}): the worker would run "
                    "out of space for results before the SCP stopped taking images"
                )
        return self


class DicomDestinationSettings(_Section):
    """A DICOM peer that takes the objects by C-STORE."""

    name: str = Field(min_length=1, max_length=64)
    kind: Literal["dimse"] = "dimse"
    ae_title: str
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # DICOM over TLS (PS3.15 B.1): the peer's certificate is verified against tls_ca_file (the
    # system's CAs when empty) and must name `host`; tls_cert_file and tls_key_file are this
    # node's client certificate, for peers that require one. Paths to PEM files.
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae_title(v, "destinations.ae_title")

    @model_validator(mode="after")
    def _tls(self) -> DicomDestinationSettings:
        files = {"tls_ca_file": self.tls_ca_file, "tls_cert_file": self.tls_cert_file,
                 "tls_key_file": self.tls_key_file}
        given = [key for key, value in files.items() if value]
        if given and not self.tls:
            raise ValueError(f"destination {self.name!r}: {', '.join(given)} given but tls is false")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError(f"destination {self.name!r}: a client certificate needs both "
                             "tls_cert_file and tls_key_file")
        for key in given:
            if not Path(files[key]).is_file():
                raise ValueError(f"destination {self.name!r}: {key} {files[key]!r} is not a file")
        return self


class HttpDestinationSettings(_Section):
    name: str = Field(min_length=1, max_length=64)
    url: str
    # basic authentication: the user name here, the password in the variable named here;
    # or a bearer token in the variable named by token_env. Never a secret in this file.
    username: str = ""
    password_env: str = ""
    token_env: str = ""
    timeout_seconds: float = Field(30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in v):
            raise ValueError(f"destinations.url: {v!r} is not an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "destinations.url: holds a user name or password; give username and "
                "password_env (the name of the variable holding the password) instead"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"destinations.url: {v!r}: no query or fragment, the base URL only")
        return v.rstrip("/")

    @field_validator("password_env", "token_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if v and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError(
                f"{v!r} is not an environment variable name (password_env and token_env name "
                "the variable that holds the secret, never the secret itself)"
            )
        return v

    @model_validator(mode="after")
    def _auth(self) -> HttpDestinationSettings:
        if self.token_env and (self.username or self.password_env):
            raise ValueError(
                f"destination {self.name!r}: give either token_env (bearer) or username and "
                "password_env (basic), not both"
            )
        if bool(self.username) != bool(self.password_env):
            raise ValueError(
                f"destination {self.name!r}: basic authentication needs both username and "
                "password_env"
            )
        return self


class OrthancDestination(HttpDestinationSettings):
    """Orthanc's REST API: ``POST {url}/instances`` with the object's bytes."""

    kind: Literal["orthanc"]


class StowDestination(HttpDestinationSettings):
    """A DICOMweb server: STOW-RS ``POST {url}/studies``, multipart/related (PS3.18)."""

    kind: Literal["stow"]


DESTINATION_KINDS = ("dimse", "orthanc", "stow")


def _destination_kind(value: Any) -> str:
    kind = value.get("kind", "dimse") if isinstance(value, dict) else getattr(value, "kind", "")
    return kind if kind in DESTINATION_KINDS else "unknown"


class _UnknownDestination(BaseModel):
    model_config = ConfigDict(extra="ignore")
    kind: str
    name: str = ""  # never reached: the kind is refused

    @field_validator("kind")
    @classmethod
    def _refuse(cls, v: str) -> str:
        raise ValueError(
            f"destinations.kind: {v!r} is not a destination kind (one of "
            f"{', '.join(DESTINATION_KINDS)})"
        )


Destination = Annotated[
    Annotated[DicomDestinationSettings, Tag("dimse")]
    | Annotated[OrthancDestination, Tag("orthanc")]
    | Annotated[StowDestination, Tag("stow")]
    | Annotated[_UnknownDestination, Tag("unknown")],
    Discriminator(_destination_kind),
]

EXAM_CATEGORIES = ("flagged", "not_flagged", "failed", "skipped")
# match keys that compare text: the key, the DICOM keyword it reads (None: from the association)
TEXT_CLAUSES: dict[str, str | None] = {
    "calling_ae_title": None,
    "called_ae_title": None,
    "modality": "Modality",
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "institution": "InstitutionName",
    "station_name": "StationName",
    "body_part": "BodyPartExamined",
    "study_description": "StudyDescription",
}


def _patterns(value: Any) -> Any:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise ValueError("give a pattern or a non-empty list of patterns")
    for pattern in values:
        if not isinstance(pattern, str):
            raise ValueError(f"{pattern!r} is not a text pattern")
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from exc
    return values


class Match(_Section):
    """When a route fires: every clause given must hold (AND); a list inside a clause is any
    of (OR). Text clauses are glob patterns (``GE*``, case-insensitive) or, prefixed ``re:``,
    regular expressions (Python syntax, searched in full). An instance attribute that a study's
    images carry with several values matches when any of them does."""

    calling_ae_title: list[str] | None = None
    called_ae_title: list[str] | None = None
    modality: list[str] | None = None
    manufacturer: list[str] | None = None
    model: list[str] | None = None
    institution: list[str] | None = None
    station_name: list[str] | None = None
    body_part: list[str] | None = None
    study_description: list[str] | None = None
    # on the result: these clauses make a route fire only once the study is analysed
    exam_category: list[Literal["flagged", "not_flagged", "failed", "skipped"]] | None = None
    exam_score_min: float | None = Field(None, ge=0, le=1)  # exam score >= this
    exam_score_max: float | None = Field(None, ge=0, le=1)  # exam score <= this

    @field_validator(*TEXT_CLAUSES, mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return _patterns(v)

    @field_validator("exam_category", mode="before")
    @classmethod
    def _categories(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _range(self) -> Match:
        if (self.exam_score_min is not None and self.exam_score_max is not None
                and self.exam_score_min > self.exam_score_max):
            raise ValueError(
                f"exam_score_min ({self.exam_score_min}) is greater than exam_score_max "
                f"({self.exam_score_max}): no study could match"
            )
        return self

    def clauses(self) -> dict[str, Any]:
        """The clauses given, in a stable order (what the database stores)."""
        return self.model_dump(exclude_none=True)


class Route(_Section):
    name: str = Field("", max_length=64)  # empty: route-N by position
    match: Match = Field(default_factory=Match)  # no clause: every study
    destinations: list[str] = Field(min_length=1)
    objects: list[str] = Field(default_factory=lambda: ["cad_sr"], min_length=1)
    stop: bool = False  # when this route fires, the routes after it are not evaluated
    # a study received but with no analysed view (failed, or nothing analysable):
    # "report" sends a CAD SR saying which images came and why none was analysed, "silent"
    # sends nothing
    on_not_analysed: Literal["report", "silent"] = "report"

    @field_validator("objects")
    @classmethod
    def _objects(cls, v: list[str]) -> list[str]:
        for kind in v:
            if kind not in OBJECT_KINDS:
                raise ValueError(
                    f"routes.objects: {kind!r} is not a result object this node writes "
                    f"(one of {', '.join(OBJECT_KINDS)})"
                )
        return v


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


OIDC_ROLE_RANK = {"viewer": 1, "radiologist": 2, "admin": 3}


class OidcSettings(_Section):
    """Sign-in with an OpenID Connect provider (authorization code flow with PKCE S256). The
    client secret is read from the environment variable named by ``client_secret_env``, never
    from the file."""

    enabled: bool = False
    issuer: str = ""  # e.g. https://login.example.org/realms/radiology (discovery at /.well-known)
    client_id: str = ""
    client_secret_env: str = "MAMMOGATE_OIDC_CLIENT_SECRET"  # empty variable: a public client
    # where the provider sends the browser back; empty: this portal's own /login/oidc/callback
    # as the request reached it (set it behind a proxy)
    redirect_uri: str = ""
    scopes: str = "openid profile email"
    # where the roles are in the ID token: a claim name, dots for nested (realm_access.roles)
    roles_claim: str = "roles"
    # a role value at the provider -> a mammogate role; the highest one a user has wins
    role_map: dict[str, str] = Field(default_factory=lambda: {
        "admin": "admin", "radiologist": "radiologist", "viewer": "viewer"})
    username_claim: str = "preferred_username"
    display_name: str = "single sign-on"  # the button says "Sign in with <display_name>"
    http_timeout_seconds: float = Field(10.0, gt=0)  # discovery, JWKS and token requests
    metadata_cache_seconds: float = Field(3600.0, ge=0)  # discovery document and JWKS
    clock_skew_seconds: int = Field(60, ge=0, le=600)  # leeway for exp / iat / nbf
    sign_in_timeout_seconds: int = Field(600, gt=0)  # from the redirect to the provider's answer

    @model_validator(mode="after")
    def _complete(self) -> OidcSettings:
        if not self.enabled:
            return self
        if not self.issuer or not self.client_id:
            raise ValueError("oidc.enabled needs oidc.issuer and oidc.client_id")
        parts = urlsplit(self.issuer)
        if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname or "")):
            raise ValueError(f"oidc.issuer must be an https URL (http only on loopback), not {self.issuer!r}")
        if "openid" not in self.scopes.split():
            raise ValueError("oidc.scopes must include openid")
        unknown = sorted(set(self.role_map.values()) - set(OIDC_ROLE_RANK))
        if unknown:
            raise ValueError(f"oidc.role_map maps to {unknown}: roles are admin, radiologist, viewer")
        return self


class Settings(BaseSettings):
    """All of the node's settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    node: NodeSettings = Field(default_factory=NodeSettings)
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    sender: SenderSettings = Field(default_factory=SenderSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    destinations: list[Destination] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _routes_name_destinations(self) -> Settings:
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError("destinations: names must be unique")
        for position, route in enumerate(self.routes):
            route.name = route.name or f"route-{position + 1}"
        route_names = [r.name for r in self.routes]
        if len(set(route_names)) != len(route_names):
            raise ValueError("routes: names must be unique")
        for dest in self.destinations:
            # a delivery must end within its lease, or a second sender takes it over meanwhile
            bound, keys = (
                (self.dicom.acse_timeout + self.dicom.dimse_timeout,
                 "dicom.acse_timeout + dicom.dimse_timeout")
                if isinstance(dest, DicomDestinationSettings)
                else (getattr(dest, "timeout_seconds", 0.0), f"destination {dest.name!r}'s timeout_seconds")
            )
            if bound >= self.sender.lease_seconds:
                raise ValueError(
                    f"sender.lease_seconds ({self.sender.lease_seconds:g}) must be longer than "
                    f"{keys} ({bound:g}): a delivery could outlive its lease and be sent twice"
                )
        for route in self.routes:
            for name in route.destinations:
                if name not in names:
                    raise ValueError(
                        f"routes.destinations: {name!r} is not the name of a [[destinations]] entry"
                    )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file, which is passed in as init data.
        return (env_settings, init_settings)

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.node.data_dir / 'mammogate.sqlite3').resolve()}"

    @property
    def spool_dir(self) -> Path:
        return self.node.data_dir / "spool"

    @property
    def reports_dir(self) -> Path:
        return self.node.data_dir / "reports"

    @property
    def sender_ae_title(self) -> str:
        return self.sender.calling_ae_title or self.dicom.ae_title


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) > 2 and loc[0] == "destinations" and loc[2] in (*DESTINATION_KINDS, "unknown"):
            del loc[2]  # the union's tag: not a key the user wrote
        key = ".".join(str(p) for p in loc) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "not a setting this node knows (misspelt, or from another version?)"
        lines.append(f"  {key}: {msg}")
    return f"invalid configuration ({source}):\n" + "\n".join(lines)


def _check_environment() -> None:
    """A ``MAMMOGATE_<SECTION>__<KEY>`` variable whose section does not exist would be ignored
    silently: refuse it, as a misspelt key in the file is refused."""
    sections = set(Settings.model_fields)
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue
        section = name[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                f"invalid configuration (environment):\n  {name}: {section!r} is not a section "
                f"of the configuration (one of {', '.join(sorted(sections))})"
            )


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (``path``, else ``$MAMMOGATE_CONFIG``, else none) and the environment.

    ``node.data_dir`` is resolved relative to the file's directory when given relatively.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    data: dict[str, Any] = {}
    source = "defaults and environment"
    base = Path.cwd()
    if path is not None:
        file = Path(path)
        source = str(file)
        try:
            with file.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from exc
        base = file.resolve().parent
    for key, value in overrides.items():
        data[key] = value
    _check_environment()
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from exc
    if not settings.node.data_dir.is_absolute():
        settings.node.data_dir = (base / settings.node.data_dir).resolve()
    return settings
