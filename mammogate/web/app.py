"""The app factory: middleware (sessions, CSRF, auth), dependencies, templates, static files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.security.session_auth import SessionAuth
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import Message, Scope
from sqlalchemy.orm import Session

from mammogate import __version__
from mammogate.config.settings import Settings, WebSettings
from mammogate.db import Database
from mammogate.storage import FreeSpaceGuard
from mammogate.web.admin.operations import OperationsController
from mammogate.web.admin.pages import AdminController
from mammogate.web.auth.keys import derive_key, load_session_key
from mammogate.web.auth.oidc import OidcClient
from mammogate.web.auth.pages import AuthController
from mammogate.web.auth.tokens import TokenAwareCSRFMiddleware, token_auth_middleware
from mammogate.web.auth.users import PortalUser, make_user_loader
from mammogate.web.errors import EXCEPTION_HANDLERS, MAX_NEXT_LENGTH
from mammogate.web.formatting import register_filters
from mammogate.web.i18n import LanguageMiddleware, catalogs, install_gettext, language_of
from mammogate.web.stats.pages import StatisticsController
from mammogate.web.studies.pages import (
    ApiController,
    FeedbackController,
    HistoryController,
    StudyController,
    UploadController,
)
from mammogate.web.system import healthz, metrics, ready, report_queues_of, switch_language

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

SESSION_COOKIE = "mammogate_session"
CSRF_COOKIE = "mammogate_csrf"
# Open to anonymous visitors; every other path needs a signed-in user.
PUBLIC_PATHS = [r"^/login$", r"^/login/oidc$", r"^/login/oidc/callback$", r"^/static/", r"^/healthz$",
                r"^/ready$", r"^/language$", r"^/metrics$"]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # patient data stays out of shared and browser caches
}


async def _add_security_headers(message: Message, _scope: Scope) -> None:
    """On every response: pages, redirects, error pages, static files alike."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message=message)
        for name, value in SECURITY_HEADERS.items():
            headers[name] = value


async def _add_language_headers(message: Message, scope: Scope) -> None:
    """Pages say their language, and caches that it follows the header and the cookie."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message=message)
        if (headers.get("content-type") or "").startswith("text/html"):
            headers["Content-Language"] = language_of(scope)
            vary = [v.strip() for v in (headers.get("vary") or "").split(",") if v.strip()]
            vary += [v for v in ("Accept-Language", "Cookie") if v.lower() not in {x.lower() for x in vary}]
            headers["Vary"] = ", ".join(vary)


def _template_engine() -> JinjaTemplateEngine:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    install_gettext(env)
    register_filters(env)
    env.globals["max_next_length"] = MAX_NEXT_LENGTH  # the language switch's return path
    return JinjaTemplateEngine.from_environment(env)


def create_app(
    settings: Settings, db: Database, *, readiness: Callable[[], dict[str, str]] | None = None
) -> Litestar:
    """The portal. ``db`` is the caller's: the app neither migrates nor disposes it.
    ``readiness`` answers ``/ready`` (each check "ok" or why not); without it only the
    database is checked."""
    master_key = load_session_key(settings)
    web = settings.web
    catalogs()  # a broken message catalog stops the start, not a page

    session_backend = CookieBackendConfig(
        secret=derive_key(master_key, "session-cookie"),
        key=SESSION_COOKIE,
        max_age=web.session_max_age_seconds,
        httponly=True,
        samesite="lax",
        secure=web.secure_cookies,
    )
    session_auth = SessionAuth[PortalUser, ClientSideSessionBackend](
        retrieve_user_handler=make_user_loader(db, web.session_max_age_seconds),
        session_backend_config=session_backend,
        exclude=PUBLIC_PATHS,
        exclude_http_methods=["OPTIONS"],  # HEAD is a read like GET: the same sign-in applies
        authentication_middleware_class=token_auth_middleware(db),  # and API tokens (web/auth/tokens.py)
    )
    csrf = CSRFConfig(
        secret=derive_key(master_key, "csrf").hex(),
        cookie_name=CSRF_COOKIE,
        cookie_httponly=True,
        cookie_samesite="lax",
        cookie_secure=web.secure_cookies,
    )

    def provide_db_session() -> Iterator[Session]:
        # pages read in a read-only transaction: on SQLite no write lock, so the SCP's commits
        # never wait behind the portal; writes (audit, sign-in) take short ones of their own
        with db.read_session() as session:
            yield session

    def provide_db() -> Database:
        return db

    def provide_data_dir() -> Path:
        return settings.data_dir

    def provide_web_settings() -> WebSettings:
        return settings.web

    oidc = OidcClient(settings.oidc) if settings.oidc.enabled else None

    def provide_oidc() -> OidcClient | None:
        return oidc

    def provide_expected_views() -> list[str]:
        return list(settings.dicom.expected_views)

    def database_only() -> dict[str, str]:
        return {"database": db.reachable()}

    def provide_readiness() -> Callable[[], dict[str, str]]:
        return readiness or database_only

    storage = settings.storage
    spool_space = FreeSpaceGuard(
        settings.spool_dir, "spool", min_free_bytes=storage.min_free_bytes,
        min_free_percent=storage.min_free_percent,
        check_seconds=storage.free_space_check_seconds,
    )

    def provide_spool_space() -> FreeSpaceGuard:
        return spool_space

    report_queues_of(db)

    return Litestar(
        route_handlers=[
            AuthController,
            HistoryController,
            StudyController,
            ApiController,
            AdminController,
            FeedbackController,
            StatisticsController,
            UploadController,
            OperationsController,
            healthz,
            ready,
            metrics,
            switch_language,
            create_static_files_router(
                path="/static", directories=[STATIC_DIR], opt={"exclude_from_auth": True}
            ),
        ],
        dependencies={
            "db_session": Provide(provide_db_session),
            "db": Provide(provide_db, use_cache=True, sync_to_thread=False),
            "data_dir": Provide(provide_data_dir, use_cache=True, sync_to_thread=False),
            "web_settings": Provide(provide_web_settings, use_cache=True, sync_to_thread=False),
            "expected_views": Provide(provide_expected_views, use_cache=True, sync_to_thread=False),
            "oidc": Provide(provide_oidc, use_cache=True, sync_to_thread=False),
            "readiness": Provide(provide_readiness, use_cache=True, sync_to_thread=False),
            "spool_space": Provide(provide_spool_space, use_cache=True, sync_to_thread=False),
        },
        # CSRF as app middleware (not csrf_config): a machine's Bearer request carries no cookie
        # and needs no CSRF token (web/auth/tokens.py)
        # the language first: the sign-in and CSRF errors are pages in the request's language too
        middleware=[LanguageMiddleware, session_auth.middleware,
                    DefineMiddleware(TokenAwareCSRFMiddleware, config=csrf)],
        template_config=TemplateConfig(instance=_template_engine()),
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[_add_security_headers, _add_language_headers],
        # the JSON API described at /schema/openapi.json (signed-in users: it maps the portal)
        openapi_config=OpenAPIConfig(
            title="mammogate portal", version=__version__, path="/schema",
            description="Research and decision-support tool, not a diagnostic device. Every route "
            "needs a signed-in user (session cookie); POSTs need the CSRF cookie's value in x-csrftoken.",
            render_plugins=[JsonRenderPlugin()],
        ),
        logging_config=None,
        debug=False,
    )
