"""The portal's pages and JSON API: thin handlers over ``studies`` and the session user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import File, Template
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammogate.db import User
from mammogate.web.auth import admin_only, any_role
from mammogate.web.studies import StudyDetail, StudyPage, list_studies, overlay_for, study_detail

PER_PAGE = 50
PageNumber = Annotated[int, QueryParameter(name="page", ge=1, le=1_000_000)]
DbSession = NamedDependency[Session]
DataDir = NamedDependency[Path]


class HistoryController(Controller):
    guards = [any_role]

    @get("/", sync_to_thread=True)
    def history(self, db_session: DbSession, page: PageNumber = 1) -> Template:
        return Template(
            "studies/history.html", context={"result": list_studies(db_session, page, PER_PAGE)}
        )


class StudyController(Controller):
    path = "/studies/{study_instance_uid:str}"
    guards = [any_role]

    @get("/", sync_to_thread=True)
    def detail(
        self, db_session: DbSession, data_dir: DataDir, study_instance_uid: FromPath[str]
    ) -> Template:
        study = study_detail(db_session, study_instance_uid, data_dir)
        return Template("studies/detail.html", context={"study": study})

    @get("/images/{sop_instance_uid:str}/overlay.png", sync_to_thread=True)
    def overlay(
        self,
        db_session: DbSession,
        data_dir: DataDir,
        study_instance_uid: FromPath[str],
        sop_instance_uid: FromPath[str],
    ) -> File:
        path = overlay_for(db_session, study_instance_uid, sop_instance_uid, data_dir)
        return File(path, media_type="image/png", content_disposition_type="inline")


class ApiController(Controller):
    path = "/api"
    guards = [any_role]

    @get("/studies", sync_to_thread=True)
    def studies(self, db_session: DbSession, page: PageNumber = 1) -> StudyPage:
        return list_studies(db_session, page, PER_PAGE)

    @get("/studies/{study_instance_uid:str}", sync_to_thread=True)
    def study(
        self, db_session: DbSession, data_dir: DataDir, study_instance_uid: FromPath[str]
    ) -> StudyDetail:
        return study_detail(db_session, study_instance_uid, data_dir)


@dataclass(frozen=True)
class UserRow:
    username: str
    role: str
    kind: str  # local | oidc
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


class AdminController(Controller):
    path = "/admin"
    guards = [admin_only]

    @get("/", sync_to_thread=True)
    def users(self, db_session: DbSession) -> Template:
        users = [
            UserRow(
                username=u.username,
                role=u.role,
                kind="oidc" if u.oidc_subject else "local",
                disabled=u.disabled,
                created_at=u.created_at,
                last_login_at=u.last_login_at,
            )
            for u in db_session.scalars(select(User).order_by(User.username))
        ]
        return Template("admin/users.html", context={"users": users})


@get("/healthz", sync_to_thread=False, exclude_from_auth=True)
def healthz() -> dict[str, Any]:
    """Liveness: the process answers HTTP."""
    return {"status": "ok"}
