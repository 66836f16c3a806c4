"""The portal: a Litestar app with sign-in, study history, study detail, a JSON API and admin pages.

The portal only reads and writes the database; anything that needs the network or the model it
will ask for as a job. Start it with :func:`create_app`, serve it with uvicorn (in a thread:
:class:`PortalServer`); the CLI makes local accounts with :func:`create_local_user`.

Errors:
    PortalError -- the application error family, each mapped to one HTTP status in
        ``mammogate.web.errors`` (and nowhere else):
        NotFoundError (404), ForbiddenError (403), ConflictError (409), InvalidInputError (422).
    SessionKeyError -- the session key can be neither read nor created.
    ValueError -- ``create_local_user`` refuses a bad role, a duplicate user or an empty password.
"""

from mammogate.web.app import create_app
from mammogate.web.auth.keys import SessionKeyError, load_session_key
from mammogate.web.auth.users import ROLES, PortalUser, create_local_user, verify_local_user
from mammogate.web.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PortalError,
)
from mammogate.web.server import PortalServer

__all__ = [
    "ROLES",
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "PortalError",
    "PortalServer",
    "PortalUser",
    "SessionKeyError",
    "create_app",
    "create_local_user",
    "load_session_key",
    "verify_local_user",
]
