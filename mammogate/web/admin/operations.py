"""The admin's JSON API for routing and delivery: the dry run for a study, re-analysis and
resubmission. Re-analysis and resubmission are rows for the worker and the sender (the portal
touches neither the model nor the network); each is audited with the admin's name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from mammogate.db import Job
from mammogate.db.admin import (
    association_history,
    request_destination_test,
    request_reanalysis,
    request_resubmission,
)
from mammogate.routing import ClauseVerdict
from mammogate.web.audit import actor_of, record_access
from mammogate.web.auth.users import admin_only
from mammogate.web.errors import NotFoundError
from mammogate.web.http import Db, DbSession, read
from mammogate.web.studies.detail import study_verdicts

AnyRequest = Request[Any, Any, Any]


@dataclass(frozen=True)
class RouteOut:
    route: str
    fires: bool | None
    reason: str
    destinations: list[str]
    objects: list[str]
    stop: bool
    clauses: list[ClauseVerdict]  # holds: null when undecided until the study is analysed


@dataclass(frozen=True)
class ExplainOut:
    study_instance_uid: str
    state: str
    routes: list[RouteOut]


@dataclass(frozen=True)
class ResubmitIn:
    ids: list[int] | None = None
    study_instance_uid: str | None = None
    dead: bool = False


@dataclass(frozen=True)
class JobOut:
    id: int
    kind: str
    target: str
    state: str  # pending, running, done, failed, superseded
    result: str  # what a done job found
    error: str  # why a failed one failed


@dataclass(frozen=True)
class AssociationOut:
    id: int
    requested_at: datetime
    ended_at: datetime | None
    calling_ae_title: str
    called_ae_title: str
    address: str
    port: int
    accepted: bool
    outcome: str  # open, released, aborted, closed, rejected
    reason: str  # why it was rejected
    instances_stored: int
    instances_refused: int
    security: str  # "" in plain TCP; else TLS version, cipher, client certificate


class OperationsController(Controller):
    path = "/api/admin"
    guards = [admin_only]

    @read("/associations", sync_to_thread=True)
    def associations(
        self, db_session: DbSession,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        calling: Annotated[str | None, QueryParameter(max_length=16)] = None,
        rejected: Annotated[bool, QueryParameter()] = False,
    ) -> list[AssociationOut]:
        """The latest DICOM associations, newest first: who called which AE title from where,
        accepted or rejected and why, and how many instances each stored."""
        rows = association_history(db_session, limit=limit, calling_ae_title=calling,
                                   rejected_only=rejected)
        return [AssociationOut(r.id, r.requested_at, r.ended_at, r.calling_ae_title,
                               r.called_ae_title, r.address, r.port, r.accepted, r.outcome,
                               r.reason, r.instances_stored, r.instances_refused, r.security)
                for r in rows]

    @read("/studies/{study_instance_uid:str}/routes", sync_to_thread=True)
    def explain_routes(self, request: AnyRequest, db_session: DbSession, db: Db,
                       study_instance_uid: FromPath[str]) -> ExplainOut:
        """Which routes fire for the study, and why, clause by clause (read from its images'
        headers: audited as a look at the study)."""
        found = study_verdicts(db_session, study_instance_uid)
        if found is None:
            raise NotFoundError(f"no study {study_instance_uid} on this node")
        state, verdicts = found
        record_access(db, request, "study routes viewed", study_instance_uid)
        return ExplainOut(study_instance_uid, state, [
            RouteOut(v.route.name, v.fires, v.reason, list(v.route.destinations),
                     list(v.route.objects), v.route.stop,
                     list(v.clauses))
            for v in verdicts
        ])

    @post("/studies/{study_instance_uid:str}/reanalyse", sync_to_thread=True,
          status_code=HTTP_202_ACCEPTED)
    def reanalyse(self, request: AnyRequest, db: Db, study_instance_uid: FromPath[str]) -> dict[str, Any]:
        """Queue a new analysis of the study (a job for the worker)."""
        with db.session() as session:
            job = request_reanalysis(session, study_instance_uid, actor=actor_of(request))
            return {"job": job.id, "study_instance_uid": study_instance_uid}

    @post("/deliveries/resubmit", sync_to_thread=True, status_code=HTTP_202_ACCEPTED)
    def resubmit(self, request: AnyRequest, db: Db, data: JSONBody[ResubmitIn]) -> dict[str, Any]:
        """Send deliveries again: by id, all of a study's current analysis, or all dead."""
        with db.session() as session:
            rows = request_resubmission(
                session, actor=actor_of(request), delivery_ids=data.ids or [],
                study_instance_uid=data.study_instance_uid, dead=data.dead,
            )
            return {"resubmitted": [row.id for row in rows]}

    @post("/destinations/{name:str}/test", sync_to_thread=True, status_code=HTTP_202_ACCEPTED)
    def test_destination(self, request: AnyRequest, db: Db, name: FromPath[str]) -> dict[str, Any]:
        """Queue a connection test (C-ECHO, HTTP probe) for the sender; poll /jobs/{id}."""
        with db.session() as session:
            job = request_destination_test(session, name, actor=actor_of(request))
            return {"job": job.id}

    @read("/jobs/{job_id:int}", sync_to_thread=True)
    def job(self, db_session: DbSession, job_id: FromPath[int]) -> JobOut:
        job = db_session.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        return JobOut(job.id, job.kind, job.target, job.state, job.result, job.last_error)
