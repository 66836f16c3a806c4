"""The portal's languages: which one a request gets, the message catalogs, and gettext.

A page is in the language of the ``mammogate_lang`` cookie (set by the switch in the top bar,
``/language``), else the best match of the browser's ``Accept-Language``, else English. The
catalogs are the ``.po`` files under ``locale/``, compiled in memory at startup (no ``.mo`` is
kept). The request's language lives in a context variable that a small ASGI middleware sets:
handlers that run in worker threads see it too (anyio copies the context into the thread).

The JSON API (``/api/``, ``/schema``) always speaks English: machines read it. So do messages
made outside the portal (DICOM rejection reasons, analysis errors, model descriptions).
"""

from __future__ import annotations

import functools
import gettext as gettext_module
import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from babel.core import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, get_decimal_symbol
from babel.support import Translations
from jinja2 import Environment
from litestar.connection import ASGIConnection
from litestar.types import ASGIApp, Receive, Scope, Send

# the languages of the portal: code -> the language's name in itself (as the switch shows it)
LANGUAGES = {"en": "English", "fr": "Français"}
DEFAULT_LANGUAGE = "en"  # the templates' and the code's own language: it has no catalog
LANGUAGE_COOKIE = "mammogate_lang"
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"

MAX_ACCEPT_LANGUAGE = 1024  # characters of the header read; a browser sends a few dozen
MAX_PREFERENCES = 32
_SCOPE_KEY = "language"  # in scope["state"]: the request's language, chosen once

_language: ContextVar[str] = ContextVar("mammogate_language", default=DEFAULT_LANGUAGE)


# Catalogs -------------------------------------------------------------------------------------


def _compile(po_path: Path, language: str) -> Translations:
    """A ``.po`` file as gettext translations, compiled in memory (fuzzy entries left out)."""
    with po_path.open("rb") as fh:
        catalog = read_po(fh, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(fp=compiled, domain=DOMAIN)


@functools.cache
def catalogs() -> dict[str, gettext_module.NullTranslations]:
    """Every language's translations, read once (the app factory calls this at startup, so a
    broken catalog stops the portal from starting rather than a page from rendering)."""
    loaded: dict[str, gettext_module.NullTranslations] = {}
    for language in LANGUAGES:
        if language == DEFAULT_LANGUAGE:
            loaded[language] = gettext_module.NullTranslations()  # the msgids are English
        else:
            loaded[language] = _compile(LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po", language)
    return loaded


_ENGLISH = gettext_module.NullTranslations()


def _translations() -> gettext_module.NullTranslations:
    code = _language.get()
    return _ENGLISH if code == DEFAULT_LANGUAGE else catalogs()[code]  # the CLI reads no catalog


# gettext for the templates and the web layer ----------------------------------------------------


def gettext(message: str) -> str:
    """``message`` in the current request's language."""
    return _translations().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translations().ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return _translations().pgettext(context, message)


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return _translations().npgettext(context, singular, plural, n)


def N_(message: str) -> str:
    """Marks a string for the catalog without translating it (module-level tables: they are
    translated where they are shown, with ``gettext``)."""
    return message


def current_language() -> str:
    return _language.get()


@contextmanager
def language(code: str) -> Iterator[None]:
    """Run a block in ``code``'s language (tests, and code outside a request)."""
    token = _language.set(code if code in LANGUAGES else DEFAULT_LANGUAGE)
    try:
        yield
    finally:
        _language.reset(token)


def activate(code: str) -> None:
    """The current context's language from now on (the error handlers' way in: they may run
    outside the middleware)."""
    _language.set(code if code in LANGUAGES else DEFAULT_LANGUAGE)


def install_gettext(env: Environment) -> None:
    """The templates' ``_()``, ``{% trans %}`` (newstyle: ``%(name)s`` placeholders, values
    escaped) and ``current_language()`` (for ``<html lang>``). The environment needs the
    ``jinja2.ext.i18n`` extension."""
    env.policies["ext.i18n.trimmed"] = True  # a {% trans %} block's line breaks are not the message's
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext, ngettext, newstyle=True, pgettext=pgettext, npgettext=npgettext)
    env.globals.update(current_language=current_language, languages=LANGUAGES)


@functools.cache
def _decimal_symbol(code: str) -> str:
    return get_decimal_symbol(code)


def decimal(value: float, places: int = 1) -> str:
    """A number with ``places`` decimals and the current language's decimal mark (87.3, 87,3)."""
    return f"{value:.{places}f}".replace(".", _decimal_symbol(current_language()))


def grouped(value: int) -> str:
    """A whole number with the current language's digit grouping (100,000 / 100 000)."""
    return format_decimal(value, locale=current_language())


# Which language a request gets ---------------------------------------------------------------


def accepted_languages(header: str) -> list[str]:
    """The language tags of an ``Accept-Language`` header, most wanted first (``q=0`` and ``*``
    left out; equal weights keep their order)."""
    weighted: list[tuple[float, int, str]] = []
    for position, item in enumerate(header[:MAX_ACCEPT_LANGUAGE].split(",")[:MAX_PREFERENCES]):
        tag, _, parameters = item.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*" or len(tag) > 35 or not all(
                c.isascii() and (c.isalnum() or c in "-_") for c in tag):
            continue
        weight = 1.0
        name, _, value = parameters.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                continue
        if 0 < weight <= 1:  # q=0: not acceptable; above 1 (or nan): not a weight
            weighted.append((-weight, position, tag.replace("_", "-")))
    return [tag for _, _, tag in sorted(weighted)]


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The cookie's language if it names one of ours, else the best of the header's, else
    English."""
    if cookie in LANGUAGES:
        return str(cookie)
    preferred = accepted_languages(accept_language or "")
    found = negotiate_locale(preferred, list(LANGUAGES), sep="-") if preferred else None
    return found.lower() if found and found.lower() in LANGUAGES else DEFAULT_LANGUAGE


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith(("/api/", "/schema"))


def language_of(scope: Scope) -> str:
    """The request's language, chosen once and kept in the scope (the page, its error handler
    and its headers agree). The JSON API's is always English."""
    state: dict[str, Any] = scope.setdefault("state", {})  # type: ignore[typeddict-item]
    chosen = state.get(_SCOPE_KEY)
    if chosen not in LANGUAGES:
        if is_api_path(str(scope.get("path", ""))):
            chosen = DEFAULT_LANGUAGE
        else:
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
            chosen = choose_language(connection.cookies.get(LANGUAGE_COOKIE),
                                     connection.headers.get("accept-language"))
        state[_SCOPE_KEY] = chosen
    return str(chosen)


class LanguageMiddleware:
    """Sets the request's language for the handler, its templates and its errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _language.set(language_of(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            _language.reset(token)
