"""The admin pages: users and roles, sign-ins (listed and revocable), the audit log (filtered,
exported), association history, deliveries (resubmitted as jobs for the sender), and a health
panel that says when deliveries are dead or work is piling up.

Every change is a short write transaction with an audit row naming the admin; a sign-in is
named by a digest of its id, never the id itself (the id is what the session cookie carries).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter, URLEncodedBody
from litestar.response import Redirect, Stream, Template
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import Session

from mammogate.config.settings import WebSettings
from mammogate.db import (
    Analysis,
    ApiToken,
    AuditEntry,
    Database,
    Delivery,
    DestinationRow,
    Job,
    Report,
    Study,
    User,
    WebSession,
    audit,
    utcnow,
)
from mammogate.db.admin import (
    RequestRefused,
    association_history,
    purge_study,
    remove_purged_files,
    request_destination_test,
    request_reanalysis,
    request_resubmission,
)
from mammogate.db.states import DeliveryState, JobKind, JobState
from mammogate.web.admin.configuration import apply_document, current_document, document_routes
from mammogate.web.audit import actor_of, record_access, record_action
from mammogate.web.auth.accounts import list_accounts, reset_password, set_disabled, set_role
from mammogate.web.auth.tokens import create_token, revoke_token
from mammogate.web.auth.users import ROLES, admin_only
from mammogate.web.errors import InvalidInputError, NotFoundError
from mammogate.web.http import Db, DbSession, read
from mammogate.web.i18n import gettext as _
from mammogate.web.i18n import ngettext
from mammogate.web.studies.detail import find_study_uid, study_verdicts
from mammogate.web.studies.worklist import csv_cell

AnyRequest = Request[Any, Any, Any]
AUDIT_PER_PAGE = 100
BACKLOG_WARNING = 50  # pending jobs
BACKLOG_AGE_WARNING = timedelta(minutes=30)  # the oldest pending job


def session_handle(session_id: str) -> str:
    """How a sign-in is named on the page: a digest, so the page never shows a cookie's key."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Health:
    dead_deliveries: int
    pending_deliveries: int
    pending_jobs: int
    oldest_pending_job: timedelta | None
    receiving_studies: int

    @property
    def warnings(self) -> list[str]:
        found = []
        if self.dead_deliveries:
            found.append(ngettext(
                "%(count)d delivery failed for good (dead): see Deliveries, fix the destination, resubmit.",
                "%(count)d deliveries failed for good (dead): see Deliveries, fix the destination, resubmit.",
                self.dead_deliveries) % {"count": self.dead_deliveries})
        if self.pending_jobs >= BACKLOG_WARNING or (
                self.oldest_pending_job is not None and self.oldest_pending_job >= BACKLOG_AGE_WARNING):
            age = int(self.oldest_pending_job.total_seconds() // 60) if self.oldest_pending_job else 0
            found.append(ngettext("%(count)d job waits for a worker, the oldest for %(age)d min: "
                                  "is a worker running?",
                                  "%(count)d jobs wait for a worker, the oldest for %(age)d min: "
                                  "is a worker running?", self.pending_jobs)
                         % {"count": self.pending_jobs, "age": age})
        return found


def health(session: Session) -> Health:
    now = utcnow()
    oldest = session.scalar(select(func.min(Job.created_at)).where(Job.state == JobState.PENDING))
    return Health(
        dead_deliveries=session.scalar(select(func.count()).where(Delivery.state == DeliveryState.DEAD)) or 0,
        pending_deliveries=session.scalar(select(func.count()).where(
            Delivery.state.in_((DeliveryState.PENDING, DeliveryState.SENDING)))) or 0,
        pending_jobs=session.scalar(select(func.count()).where(Job.state == JobState.PENDING)) or 0,
        oldest_pending_job=(now - oldest) if oldest is not None else None,
        receiving_studies=session.scalar(select(func.count()).where(Study.state == "receiving")) or 0,
    )


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    q: str = ""  # in the target or the detail
    since: date | None = None
    until: date | None = None

    def query(self, **extra: Any) -> str:
        values = {"actor": self.actor, "action": self.action, "q": self.q,
                  "from": self.since.isoformat() if self.since else "",
                  "to": self.until.isoformat() if self.until else "", **extra}
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.actor:
            query = query.where(AuditEntry.actor == self.actor)
        if self.action:
            query = query.where(AuditEntry.action == self.action)
        if self.q:
            pattern = "%" + self.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(or_(func.lower(AuditEntry.target).like(pattern, escape="\\"),
                                    func.lower(AuditEntry.detail).like(pattern, escape="\\")))
        if self.since:
            query = query.where(AuditEntry.at >= datetime.combine(self.since, time()))
        if self.until:
            query = query.where(AuditEntry.at < datetime.combine(self.until + timedelta(days=1), time()))
        return query

    def describe(self) -> str:
        return self.query() or "everything"


def audit_filter(request: AnyRequest) -> AuditFilter:
    query = request.query_params

    def day(name: str) -> date | None:
        value = str(query.get(name) or "").strip()
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(_("%(name)s must be a date as YYYY-MM-DD, not %(value)r")
                                    % {"name": name, "value": value[:32]}) from None

    texts = {name: str(query.get(name) or "").strip() for name in ("actor", "action", "q")}
    for name, value in texts.items():
        if len(value) > 128:
            raise InvalidInputError(_("%(name)s is longer than %(limit)d characters") % {"name": name, "limit": 128})
    return AuditFilter(texts["actor"], texts["action"], texts["q"], day("from"), day("to"))


@dataclass
class RoleForm:
    role: str = ""


@dataclass
class PasswordForm:
    password: str = ""


@dataclass
class TokenForm:
    name: str = ""
    username: str = ""


@dataclass
class ConfigForm:
    document: str = ""
    action: str = "save"  # or "dry-run": evaluate the document's routes for a study, save nothing
    study: str = ""  # the dry run's study: Study Instance UID or accession number


@dataclass
class PurgeForm:
    confirm: str = ""  # the study's accession number or Study Instance UID, typed again
    reason: str = ""


@dataclass
class ResubmitForm:
    delivery_id: str = ""  # empty: every dead delivery


def _token_rows(session: Session) -> list[Any]:
    return list(session.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.created_at, ApiToken.last_used_at, ApiToken.revoked_at,
               User.username, User.role)
        .join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())))


def _tokens_page(session: Session, *, new_token: str = "", error: str = "", status_code: int = 200) -> Template:
    users = session.scalars(select(User.username).where(User.disabled.is_(False)).order_by(User.username)).all()
    return _page("tokens", session, tokens=_token_rows(session), new_token=new_token, error=error,
                 users=users, status_code=status_code)


def _config_page(session: Session, document: str, *, error: str = "", changes: list[str] | None = None,
                 status_code: int = 200, **dry_run: Any) -> Template:
    destinations = session.scalars(select(DestinationRow.name).where(DestinationRow.enabled.is_(True))
                                   .order_by(DestinationRow.name)).all()
    return _page("config", session, document=document, error=error, changes=changes,
                 destinations=destinations, status_code=status_code,
                 **{"study": "", "dry_run": None, "dry_run_study": "", **dry_run})


def _page(name: str, db_session: Session, *, status_code: int = 200, **context: Any) -> Template:
    return Template(f"admin/{name}.html", context={"health": health(db_session), **context},
                    status_code=status_code)


class AdminController(Controller):
    path = "/admin"
    guards = [admin_only]

    @read("/", sync_to_thread=True)
    def users(self, db_session: DbSession) -> Template:
        return _page("users", db_session, users=list_accounts(db_session), roles=ROLES)

    @post("/users/{username:str}/role", sync_to_thread=True)
    def change_role(self, request: AnyRequest, db: Db, username: FromPath[str],
                    data: URLEncodedBody[RoleForm]) -> Redirect:
        if username == actor_of(request):
            raise InvalidInputError(_("You cannot change your own role (another admin can)."))
        try:
            set_role(db, username, data.role, actor=actor_of(request))
        except LookupError as exc:
            raise NotFoundError(str(exc)) from None
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        return Redirect("/admin", status_code=303)

    @post("/users/{username:str}/disable", sync_to_thread=True)
    def disable(self, request: AnyRequest, db: Db, username: FromPath[str]) -> Redirect:
        if username == actor_of(request):
            raise InvalidInputError(_("You cannot disable your own account."))
        return self._set_disabled(request, db, username, True)

    @post("/users/{username:str}/enable", sync_to_thread=True)
    def enable(self, request: AnyRequest, db: Db, username: FromPath[str]) -> Redirect:
        return self._set_disabled(request, db, username, False)

    @staticmethod
    def _set_disabled(request: AnyRequest, db: Database, username: str, disabled: bool) -> Redirect:
        try:
            set_disabled(db, username, disabled, actor=actor_of(request))
        except LookupError as exc:
            raise NotFoundError(str(exc)) from None
        return Redirect("/admin", status_code=303)

    @post("/users/{username:str}/password", sync_to_thread=True)
    def password(self, request: AnyRequest, db: Db, db_session: DbSession,
                 username: FromPath[str], data: URLEncodedBody[PasswordForm]) -> Redirect:
        user = db_session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFoundError(_("There is no user %(name)r.") % {"name": username})
        if user.oidc_subject and not user.password_hash:
            raise InvalidInputError(_("This account signs in through the OpenID provider: its password is set there."))
        try:
            reset_password(db, username, data.password, actor=actor_of(request))
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        return Redirect("/admin", status_code=303)

    @read("/sessions", sync_to_thread=True)
    def sessions(self, db_session: DbSession, web_settings: NamedDependency[WebSettings]) -> Template:
        oldest = utcnow() - timedelta(seconds=web_settings.session_max_age_seconds)
        rows = db_session.execute(
            select(WebSession.id, WebSession.created_at, User.username, User.role)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.revoked_at.is_(None), WebSession.created_at >= oldest)
            .order_by(WebSession.created_at.desc())
        ).all()
        sign_ins = [{"handle": session_handle(r.id), "created_at": r.created_at, "username": r.username,
                     "role": r.role} for r in rows]
        return _page("sessions", db_session, sign_ins=sign_ins)

    @post("/sessions/{handle:str}/revoke", sync_to_thread=True)
    def revoke(self, request: AnyRequest, db: Db, handle: FromPath[str]) -> Redirect:
        with db.session() as writing:
            open_ids = writing.scalars(select(WebSession.id).where(WebSession.revoked_at.is_(None))).all()
            matching = [i for i in open_ids if session_handle(i) == handle]
            if not matching:
                raise NotFoundError(_("That sign-in has ended already (or never was)."))
            owner = writing.scalar(select(User.username).join(WebSession, WebSession.user_id == User.id)
                                   .where(WebSession.id == matching[0]))
            writing.execute(update(WebSession).where(WebSession.id == matching[0]).values(revoked_at=utcnow()))
            audit(writing, actor=actor_of(request), action="sign-in revoked", target=owner or "", detail=f"sign-in {handle}")
        return Redirect("/admin/sessions", status_code=303)

    @read("/audit", sync_to_thread=True)
    def audit(self, request: AnyRequest, db_session: DbSession,
              page: Annotated[int, QueryParameter(ge=1, le=1_000_000)] = 1) -> Template:
        wanted = audit_filter(request)
        total = db_session.scalar(wanted.apply(select(func.count()).select_from(AuditEntry))) or 0
        rows = db_session.scalars(wanted.apply(select(AuditEntry)).order_by(AuditEntry.id.desc())
                                  .limit(AUDIT_PER_PAGE).offset((page - 1) * AUDIT_PER_PAGE)).all()
        actions = db_session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)).all()
        return _page("audit", db_session, rows=rows, total=total, page=page, filter=wanted,
                     pages=max(1, -(-total // AUDIT_PER_PAGE)), actions=actions)

    @read("/audit.csv", sync_to_thread=True)
    def audit_export(self, request: AnyRequest, db: Db) -> Stream:
        wanted = audit_filter(request)
        record_action(db, request, "audit log exported", "", wanted.describe())

        def chunks() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")
            writer.writerow(["at_utc", "actor", "action", "target", "detail"])
            yield buffer.getvalue()
            with db.read_session() as session:
                last = None
                while True:
                    query = wanted.apply(select(AuditEntry)).order_by(AuditEntry.id.desc()).limit(1000)
                    if last is not None:
                        query = query.where(AuditEntry.id < last)
                    rows = session.scalars(query).all()
                    if not rows:
                        return
                    buffer.seek(0)
                    buffer.truncate()
                    for r in rows:
                        writer.writerow([csv_cell(v) for v in (
                            r.at.strftime("%Y-%m-%d %H:%M:%S"), r.actor, r.action, r.target, r.detail)])
                    yield buffer.getvalue()
                    last = rows[-1].id

        stamp = utcnow().strftime("%Y%m%d-%H%M%S")
        return Stream(chunks(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="mammogate-audit-{stamp}.csv"'})

    @post("/studies/{study_instance_uid:str}/purge", sync_to_thread=True)
    def purge(self, request: AnyRequest, db: Db, data_dir: NamedDependency[Path],
              study_instance_uid: FromPath[str], data: URLEncodedBody[PurgeForm]) -> Template | Redirect:
        """Remove a study and everything made from it (wrong patient, an erasure request); the
        audit rows stay. The admin types the accession number (or the UID) again to confirm."""
        with db.session() as writing:
            study = writing.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
            if study is None:
                raise NotFoundError(_("There is no study with Study Instance UID %(uid)s.") % {"uid": study_instance_uid})
            typed = data.confirm.strip()
            if not typed or typed not in (study.accession_number, study.study_instance_uid):
                raise InvalidInputError(_("To purge, type the study's accession number (or its Study "
                                          "Instance UID) in the confirmation box."))
            try:
                purged = purge_study(writing, study_instance_uid, actor=actor_of(request), reason=data.reason)
            except RequestRefused as exc:
                raise InvalidInputError(str(exc)) from None
        problems = remove_purged_files(purged, [data_dir])
        if problems:
            record_action(db, request, "study purge incomplete", study_instance_uid, "; ".join(problems)[:2000])
        return Redirect("/?purged=1" if not problems else "/admin/audit?action=study+purge+incomplete",
                        status_code=303)

    @read("/tokens", sync_to_thread=True)
    def tokens(self, db_session: DbSession) -> Template:
        return _tokens_page(db_session)

    @post("/tokens", sync_to_thread=True)
    def create_token(self, request: AnyRequest, db: Db, db_session: DbSession,
                     data: URLEncodedBody[TokenForm]) -> Template:
        """A token for a machine, with the rights of the user named; shown on this page once."""
        try:
            token = create_token(db, data.username, data.name, actor=actor_of(request))
        except ValueError as exc:
            return _tokens_page(db_session, error=str(exc), status_code=422)
        with db.read_session() as fresh:
            return _tokens_page(fresh, new_token=token)

    @post("/tokens/{token_id:int}/revoke", sync_to_thread=True)
    def revoke_token(self, request: AnyRequest, db: Db, token_id: FromPath[int]) -> Redirect:
        if not revoke_token(db, token_id, actor=actor_of(request)):
            raise NotFoundError(_("No such token, or it is revoked already."))
        return Redirect("/admin/tokens", status_code=303)

    @read("/config", sync_to_thread=True)
    def config(self, db_session: DbSession) -> Template:
        return _config_page(db_session, current_document(db_session))

    @post("/config", sync_to_thread=True)
    def save_config(self, request: AnyRequest, db: Db, db_session: DbSession,
                    data: URLEncodedBody[ConfigForm]) -> Template:
        """Peers, destinations and routes from the edited document, validated as the file is;
        or, with the dry-run action, its routes evaluated for one study and nothing saved."""
        if data.action == "dry-run":
            return self._dry_run(request, db, db_session, data)
        try:
            changes = apply_document(db, data.document, actor=actor_of(request))
        except ValueError as exc:
            return _config_page(db_session, data.document, error=str(exc), status_code=422)
        with db.read_session() as fresh:
            return _config_page(fresh, current_document(fresh), changes=changes)

    @staticmethod
    def _dry_run(request: AnyRequest, db: Database, db_session: Session, data: ConfigForm) -> Template:
        study = data.study.strip()
        try:
            rules = document_routes(data.document)
        except ValueError as exc:
            return _config_page(db_session, data.document, error=str(exc), study=study, status_code=422)
        uid = find_study_uid(db_session, study)
        if uid is None:
            return _config_page(db_session, data.document, study=study, status_code=422, error=(
                _("no study with Study Instance UID or accession number %(study)s on this node")
                % {"study": repr(study[:64])} if study
                else _("give the Study Instance UID or accession number of the study to try the routes on")))
        found = study_verdicts(db_session, uid, rules)
        assert found is not None  # find_study_uid found it
        record_access(db, request, "study routes viewed", uid)  # the study's header values
        return _config_page(db_session, data.document, study=study, dry_run=found[1], dry_run_study=uid)

    @post("/destinations/{name:str}/test", sync_to_thread=True)
    def test_destination(self, request: AnyRequest, db: Db, name: FromPath[str]) -> Redirect:
        """A connection test (C-ECHO, HTTP probe) for the sender to run: the portal does not
        touch the network."""
        with db.session() as writing:
            try:
                job = request_destination_test(writing, name, actor=actor_of(request))
            except RequestRefused as exc:
                raise NotFoundError(str(exc)) from None
            writing.flush()
            job_id = job.id
        return Redirect(f"/admin/jobs/{job_id}", status_code=303)

    @post("/studies/{study_instance_uid:str}/reanalyse", sync_to_thread=True)
    def reanalyse(self, request: AnyRequest, db: Db, study_instance_uid: FromPath[str]) -> Redirect:
        """A new analysis of the study, as a job for the worker; back to the study's page,
        which follows the job (queued, processing, done)."""
        with db.session() as writing:  # a refusal is answered by errors.handle_refused
            request_reanalysis(writing, study_instance_uid, actor=actor_of(request))
        return Redirect(f"/studies/{study_instance_uid}", status_code=303)

    @post("/studies/{study_instance_uid:str}/resubmit", sync_to_thread=True)
    def resubmit_study(self, request: AnyRequest, db: Db, study_instance_uid: FromPath[str]) -> Redirect:
        """Send every result object of the study's current analysis again (jobs for the sender)."""
        with db.session() as writing:  # a refusal is answered by errors.handle_refused
            count = len(request_resubmission(writing, actor=actor_of(request),
                                             study_instance_uid=study_instance_uid))
        return Redirect(f"/studies/{study_instance_uid}?resubmitted={count}#reports", status_code=303)

    @read("/jobs/{job_id:int}", sync_to_thread=True)
    def job(self, db_session: DbSession, job_id: FromPath[int]) -> Template:
        row = db_session.get(Job, job_id) if 0 < job_id < 2**63 else None
        if row is None:
            raise NotFoundError(_("There is no job %(id)d.") % {"id": job_id})
        return _page("job", db_session, job=row)

    @read("/associations", sync_to_thread=True)
    def associations(self, db_session: DbSession,
                     rejected: Annotated[bool, QueryParameter()] = False) -> Template:
        rows = association_history(db_session, limit=200, rejected_only=rejected)
        return _page("associations", db_session, rows=rows, rejected=rejected)

    @read("/jobs", sync_to_thread=True)
    def jobs(self, db_session: DbSession,
             state_: Annotated[str, QueryParameter(name="state", max_length=16)] = "",
             kind_: Annotated[str, QueryParameter(name="kind", max_length=32)] = "") -> Template:
        """The work queue: analyses for the worker, connection tests for the sender (the latest
        200), what each is doing or why it failed; a failed analysis can be asked for again."""
        for name, value, allowed in (("state", state_, tuple(JobState)), ("kind", kind_, tuple(JobKind))):
            if value and value not in allowed:
                raise InvalidInputError(_("%(name)s must be one of %(allowed)s, not %(value)r")
                                        % {"name": name, "allowed": ", ".join(allowed), "value": value})
        query = (select(Job.id, Job.kind, Job.state, Job.target, Job.attempts, Job.locked_by,
                        Job.lease_until, Job.last_error, Job.result, Job.created_at, Job.finished_at,
                        Study.study_instance_uid, Study.accession_number, Study.state.label("study_state"))
                 .outerjoin(Study, Study.id == Job.study_id)
                 .order_by(Job.id.desc()).limit(200))
        if state_:
            query = query.where(Job.state == state_)
        if kind_:
            query = query.where(Job.kind == kind_)
        counts: dict[str, int] = {state: n for state, n in db_session.execute(
        select(Job.state, func.count()).group_by(Job.state))}
        return _page("jobs", db_session, rows=db_session.execute(query).all(), state=state_, kind=kind_,
                     counts=counts, states=tuple(JobState), kinds=tuple(JobKind))

    @read("/deliveries", sync_to_thread=True)
    def deliveries(self, db_session: DbSession,
                   state_: Annotated[str, QueryParameter(name="state", max_length=16)] = "") -> Template:
        state = state_
        if state and state not in tuple(DeliveryState):
            raise InvalidInputError(_("%(name)s must be one of %(allowed)s, not %(value)r")
                                    % {"name": "state", "allowed": ", ".join(DeliveryState), "value": state})
        query = (select(Delivery.id, Delivery.state, Delivery.attempts, Delivery.last_error,
                        Delivery.created_at, Delivery.delivered_at, Delivery.route,
                        DestinationRow.name.label("destination"), Report.kind,
                        Study.study_instance_uid, Study.accession_number)
                 .join(DestinationRow, DestinationRow.id == Delivery.destination_id)
                 .join(Report, Report.id == Delivery.report_id)
                 .join(Analysis, Analysis.id == Report.analysis_id)
                 .join(Study, Study.id == Analysis.study_id)
                 .order_by(Delivery.id.desc()).limit(200))
        if state:
            query = query.where(Delivery.state == state)
        return _page("deliveries", db_session, rows=db_session.execute(query).all(), state=state)

    @post("/deliveries/resubmit", sync_to_thread=True)
    def resubmit(self, request: AnyRequest, db: Db, data: URLEncodedBody[ResubmitForm]) -> Redirect:
        ids: list[int] = []
        if data.delivery_id.strip():
            if not data.delivery_id.strip().isdigit():
                raise InvalidInputError(_("delivery_id must be a number, not %(value)r") % {"value": data.delivery_id[:32]})
            ids = [int(data.delivery_id)]
        with db.session() as writing:
            try:
                rows = request_resubmission(writing, actor=actor_of(request), delivery_ids=ids, dead=not ids)
            except RequestRefused as exc:
                raise InvalidInputError(str(exc)) from None
            if not rows:
                raise InvalidInputError(_("No dead delivery to resubmit."))
        return Redirect("/admin/deliveries", status_code=303)
