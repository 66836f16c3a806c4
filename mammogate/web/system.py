"""Routes open to anyone: liveness, readiness and metrics for monitoring, and the language
switch."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Annotated, Any

from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect, Response

from mammogate.config.settings import WebSettings
from mammogate.db import Database
from mammogate.db.queue import queue_depths
from mammogate.metrics import exposition, register_queue_depths
from mammogate.storage import FreeSpaceGuard
from mammogate.web.auth.tokens import bearer_token
from mammogate.web.auth.users import safe_next
from mammogate.web.errors import InvalidInputError
from mammogate.web.http import AnyRequest, read
from mammogate.web.i18n import LANGUAGE_COOKIE, LANGUAGE_COOKIE_MAX_AGE, LANGUAGES
from mammogate.web.i18n import gettext as _


@read("/healthz", sync_to_thread=False, exclude_from_auth=True)
def healthz(spool_space: NamedDependency[FreeSpaceGuard]) -> dict[str, Any]:
    """Liveness: the process answers HTTP (200 however full the disk). ``storage`` says
    whether the SCP takes images now, or why not (the spool's disk below a minimum)."""
    reason = spool_space.shortage()
    space = spool_space.last_space
    return {"status": "ok", "storage": {
        "accepting_images": reason is None, "reason": reason or "",
        "spool_free_bytes": space.free_bytes if space is not None else None,
    }}


@read("/language", sync_to_thread=False, exclude_from_auth=True)
def switch_language(
    web_settings: NamedDependency[WebSettings],
    lang: Annotated[str, QueryParameter(name="lang", max_length=16)] = "",
    next_: Annotated[str, QueryParameter(name="next")] = "/",
) -> Redirect:
    """The language switch (a link, open to anyone: the sign-in page has it too): remembers the
    language in a cookie and goes back to the page, a path on this site only."""
    if lang not in LANGUAGES:
        raise InvalidInputError(_("The portal has no language %(code)r: choose one of %(languages)s.")
                                % {"code": lang, "languages": ", ".join(LANGUAGES)})
    cookie = Cookie(key=LANGUAGE_COOKIE, value=lang, max_age=LANGUAGE_COOKIE_MAX_AGE, path="/",
                    httponly=True, samesite="lax", secure=web_settings.secure_cookies)
    return Redirect(safe_next(next_), status_code=303, cookies=[cookie])


Readiness = NamedDependency[Callable[[], dict[str, str]]]


@read("/ready", sync_to_thread=True, exclude_from_auth=True)
def ready(readiness: Readiness) -> Response[dict[str, Any]]:
    """Readiness: 200 when the database and the spool are reachable, the DICOM port listens
    and the model has loaded; else 503 with what is not ready."""
    checks = readiness()
    ok = all(v == "ok" for v in checks.values())
    return Response({"status": "ready" if ok else "not ready", "checks": checks},
                    status_code=200 if ok else 503)


# The bearer token /metrics asks for, when set: from the environment only, never the
# configuration file (as the session key and the destinations' passwords and tokens).
METRICS_TOKEN_ENV = "MAMMOGATE_METRICS_TOKEN"


@read("/metrics", sync_to_thread=True, exclude_from_auth=True)
def metrics(request: AnyRequest) -> Response[bytes]:
    """Prometheus metrics (text format): instances received and refused, associations,
    analyses, deliveries, queue depths, the model in use. Counts, AE titles, destination names
    and the model's version only: no patient data, no UIDs. Open like /healthz, unless
    ``$MAMMOGATE_METRICS_TOKEN`` is set: then only ``Authorization: Bearer <that token>``
    reads it (a Prometheus scrape job's ``authorization`` credentials), else 401."""
    expected = os.environ.get(METRICS_TOKEN_ENV, "")
    if expected:
        given = bearer_token(request.headers) or ""
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
            reason = ("the metrics token is wrong" if given else
                      "the metrics need a token: send Authorization: Bearer <token>, the value "
                      f"of {METRICS_TOKEN_ENV} on the node")
            return Response(reason.encode() + b"\n", status_code=401, media_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="mammogate metrics"'})
    body, content_type = exposition()
    return Response(body, media_type=content_type)


def report_queues_of(db: Database) -> None:
    """/metrics reports this database's queue depths, read at each scrape (one collector a
    process: the latest one registered)."""

    def read_queue_depths() -> dict[tuple[str, str], int]:
        with db.read_session() as session:
            return queue_depths(session)

    register_queue_depths(read_queue_depths)
