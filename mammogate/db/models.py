"""The tables. Times are naive UTC (``utcnow()``) on both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
    or_,
    update,
)
from sqlalchemy import (
    false as sa_false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Study(Base):
    """A study as received. state: a :class:`~mammogate.db.states.StudyState`."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="receiving", index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    called_ae_title: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # of the study's first image: the statistics break results down by them
    manufacturer: Mapped[str] = mapped_column(String(64), default="", server_default="")
    manufacturer_model: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # the latest analysis (None before the first): pages join it by key
    current_analysis_id: Mapped[int | None] = mapped_column(
        ForeignKey("analyses.id", use_alter=True, name="fk_studies_current_analysis"))
    # "dicom": received by the SCP; "upload": the portal's ad-hoc analysis (never routed)
    source: Mapped[str] = mapped_column(String(16), default="dicom", server_default="dicom")
    # dicom.group_studies_by_patient_and_date: PatientID stem + StudyDate; "" when not grouped
    exam_key: Mapped[str] = mapped_column(String(128), default="", server_default="", index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime]
    last_received_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    last_error: Mapped[str] = mapped_column(Text, default="")
    # when the retention sweep removed the study's spool files (results and overlays stay)
    images_removed_at: Mapped[datetime | None]

    instances: Mapped[list[Instance]] = relationship(back_populates="study")
    analyses: Mapped[list[Analysis]] = relationship(
        back_populates="study", order_by="Analysis.id", foreign_keys="Analysis.study_id"
    )


class Instance(Base):
    """One stored SOP instance; the file lives in the spool."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    # the instance's own Study Instance UID: its study's, unless it joined an exam assembled
    # from several studies (dicom.group_studies_by_patient_and_date)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", server_default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    laterality: Mapped[str] = mapped_column(String(2), default="")
    view: Mapped[str] = mapped_column(String(16), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]

    study: Mapped[Study] = relationship(back_populates="instances")


class Job(Base):
    """A unit of work claimed by exactly one worker. state: a :class:`~mammogate.db.states.JobState`."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "state", "run_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True)
    target: Mapped[str] = mapped_column(String(255), default="", server_default="")  # e.g. a destination
    result: Mapped[str] = mapped_column(Text, default="", server_default="")  # what a done job found
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime]
    locked_by: Mapped[str] = mapped_column(String(128), default="")
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class Analysis(Base):
    """One run of the model on a study, with its provenance."""

    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    model_sha256: Mapped[str] = mapped_column(String(64))
    # training data and cross-validated performance of the bundle, as the SR states them
    model_description: Mapped[str] = mapped_column(Text, default="", server_default="")
    operating_point: Mapped[float] = mapped_column(Float)
    exam_score: Mapped[float | None] = mapped_column(Float)
    score_left: Mapped[float | None] = mapped_column(Float)
    score_right: Mapped[float | None] = mapped_column(Float)
    category: Mapped[str] = mapped_column(String(16))
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    worker: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime]
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("analyses.id"))

    study: Mapped[Study] = relationship(back_populates="analyses", foreign_keys="Analysis.study_id")
    images: Mapped[list[AnalysisImage]] = relationship(
        back_populates="analysis", order_by="AnalysisImage.id"
    )
    findings: Mapped[list[Finding]] = relationship(
        back_populates="analysis", order_by="Finding.id"
    )
    reports: Mapped[list[Report]] = relationship(back_populates="analysis")


def heatmap_file(overlay: Path) -> Path:
    """Where an image's heatmap PNG lies: beside its overlay PNG (``AnalysisImage.overlay_path``),
    ``<sop>.png`` → ``<sop>.heatmap.png``: written by the worker, read by the portal's viewer,
    removed with the overlay by purge."""
    return overlay.with_name(f"{overlay.stem}.heatmap.png")


class AnalysisImage(Base):
    """Each image of an analysis: analysed (with its score), skipped or failed (with the reason)."""

    __tablename__ = "analysis_images"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # analysed | skipped | failed
    laterality: Mapped[str] = mapped_column(String(2), default="")
    view: Mapped[str] = mapped_column(String(16), default="")
    score: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    overlay_path: Mapped[str] = mapped_column(String(1024), default="")

    analysis: Mapped[Analysis] = relationship(back_populates="images")


class Finding(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    laterality: Mapped[str] = mapped_column(String(2))
    view: Mapped[str] = mapped_column(String(16))
    probability: Mapped[float] = mapped_column(Float)
    center_column: Mapped[float] = mapped_column(Float)
    center_row: Mapped[float] = mapped_column(Float)
    outline: Mapped[list[Any]] = mapped_column(JSON)
    certainty: Mapped[float | None] = mapped_column(Float)  # how likely a lesion at all, 0..1
    nipple_distance_mm: Mapped[float | None] = mapped_column(Float)
    # findings of one analysis with the same number are one lesion seen on two views
    # (inference.correspondence); None: seen on one view only
    lesion: Mapped[int | None] = mapped_column(Integer)
    # where on the breast (inference.position): the clock hour, 1-12 (None: one view only,
    # retroareolar or central), and the region ("upper outer quadrant", "outer half",
    # "retroareolar", ...; "" unknown); orientation_assumed: an image had no usable Patient
    # Orientation and the conventional positioning was assumed
    clock_hour: Mapped[int | None] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(32), default="", server_default="")
    orientation_assumed: Mapped[bool] = mapped_column(default=False, server_default=sa_false())

    analysis: Mapped[Analysis] = relationship(back_populates="findings")


class Report(Base):
    """A DICOM result object written for an analysis."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # cad_sr
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime]

    analysis: Mapped[Analysis] = relationship(back_populates="reports")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="report")


class DestinationRow(Base):
    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # dimse | orthanc | stow
    ae_title: Mapped[str] = mapped_column(String(16), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    url: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    username: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # names of environment variables holding the secrets, never the secrets
    password_env: Mapped[str] = mapped_column(String(255), default="", server_default="")
    token_env: Mapped[str] = mapped_column(String(255), default="", server_default="")
    timeout_seconds: Mapped[float] = mapped_column(Float, default=30.0, server_default="30")
    # dimse over TLS: paths of PEM files (the CA to verify the peer; our client certificate)
    tls: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    tls_ca_file: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    tls_cert_file: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    tls_key_file: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    enabled: Mapped[bool] = mapped_column(default=True)


class RouteRow(Base):
    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64), default="")
    destinations: Mapped[list[Any]] = mapped_column(JSON)
    objects: Mapped[list[Any]] = mapped_column(JSON)
    # the route's match clauses as configured (``mammogate.routing.Match``); {}: every study
    match: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    stop: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    # a study with no analysed view: "report" sends the CAD SR saying why, "silent" nothing
    on_not_analysed: Mapped[str] = mapped_column(String(16), default="report",
                                                 server_default="report")
    enabled: Mapped[bool] = mapped_column(default=True)


class AllowedPeer(Base):
    """A calling AE title allowed to associate, from the listed hosts only when ``hosts`` is
    not empty (IP addresses, networks in CIDR notation or host names, comma-separated)."""

    __tablename__ = "allowed_peers"

    id: Mapped[int] = mapped_column(primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    hosts: Mapped[str] = mapped_column(String(1024), default="", server_default="")


class AssociationRecord(Base):
    """One DICOM association requested of the SCP: who, from where, to which of our AE titles,
    accepted or rejected and why, and what it stored. outcome: "open" while it lasts, then
    "released", "aborted" or "rejected"."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="", index=True)
    called_ae_title: Mapped[str] = mapped_column(String(16), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[bool] = mapped_column(default=False)
    outcome: Mapped[str] = mapped_column(String(16), default="open")
    reason: Mapped[str] = mapped_column(Text, default="")
    instances_stored: Mapped[int] = mapped_column(Integer, default=0)
    instances_refused: Mapped[int] = mapped_column(Integer, default=0)
    # "" in plain TCP; with dicom.tls the protocol, cipher and client certificate subject
    security: Mapped[str] = mapped_column(String(255), default="", server_default="")


class Delivery(Base):
    """One report to one destination. state: a :class:`~mammogate.db.states.DeliveryState`."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_claim", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    route: Mapped[str] = mapped_column(String(64), default="", server_default="")  # that asked for it
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    locked_by: Mapped[str] = mapped_column(String(128), default="")
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    report: Mapped[Report] = relationship(back_populates="deliveries")
    destination: Mapped[DestinationRow] = relationship()


class Feedback(Base):
    """A radiologist's word on a study's result: agree / disagree with the result shown, and the
    ground truth when known (biopsy malignant, biopsy benign, normal follow-up). The latest row
    of a study counts; earlier ones stay as its history."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    analysis_id: Mapped[int | None] = mapped_column(ForeignKey("analyses.id"))  # the result judged
    username: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(16), default="", server_default="")  # agree | disagree | ""
    ground_truth: Mapped[str] = mapped_column(String(32), default="", server_default="")
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | radiologist | viewer
    password_hash: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class WebSession(Base):
    """A portal sign-in. The session cookie names it; signing out revokes it, so a copied
    cookie stops working at once rather than when it expires."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiToken(Base):
    """A token a machine presents as ``Authorization: Bearer <token>`` to use the JSON API with
    the rights of ``user_id``. Only its SHA-256 is kept: the token is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class SignInThrottle(Base):
    """Recent failed sign-ins of one account (``user:NAME``) or client address
    (``addr:ADDRESS``), and until when it is locked (see ``mammogate.web.auth.throttle``)."""

    __tablename__ = "sign_in_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class Meta(Base):
    """Key/value facts about this database (e.g. when the configuration seeded it)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@event.listens_for(Analysis, "after_insert")
def _point_study_at_newest_analysis(_mapper: Any, connection: Any, target: Analysis) -> None:
    """Every new analysis becomes its study's current one (``studies.current_analysis_id``),
    whichever code path wrote it, in the same transaction."""
    connection.execute(
        update(Study)
        .where(Study.id == target.study_id)
        .where(or_(Study.current_analysis_id.is_(None), Study.current_analysis_id < target.id))
        .values(current_analysis_id=target.id)
        .execution_options(synchronize_session=False)
    )
