"""The portal in English and French: the catalog is complete and current, the language follows
the switch's cookie, then Accept-Language, then English; numbers follow the language; the JSON
API stays English."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from litestar import Litestar
from litestar.testing import TestClient

from mammogate.imaging.views import views_summary as imaging_views_summary
from mammogate.web.formatting import percent, views_summary
from mammogate.web.i18n import (
    DEFAULT_LANGUAGE,
    LANGUAGE_COOKIE,
    LANGUAGES,
    LOCALE_DIR,
    accepted_languages,
    catalogs,
    choose_language,
    language,
)
from tests.unit.web.portal_sample import STUDY_UID, sign_in

REPO = Path(__file__).resolve().parents[3]
FRENCH = "fr-FR,fr;q=0.9"
PLACEHOLDER = re.compile(r"%(?:\([A-Za-z_]+\))?[-#0 +]*\d*(?:\.\d+)?[sdrfgx%]")
Key = tuple[str | None, str]


def _extracted() -> dict[Key, tuple[str, ...]]:
    """Every message of the templates and the web layer, extracted as ``pybabel extract``
    does with babel.cfg: (context, msgid) -> the msgid and its plural, if any."""
    with (REPO / "babel.cfg").open(encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh, "babel.cfg")
    found: dict[Key, tuple[str, ...]] = {}
    for _filename, _line, message, _comments, context in extract_from_dir(
            REPO, method_map, options_map):
        ids = (message,) if isinstance(message, str) else tuple(message)
        found[(context, ids[0])] = ids
    return found


def _catalog(path: Path, code: str | None = None) -> dict[Key, object]:
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=code)
    return {(m.context, m.id[0] if isinstance(m.id, tuple) else m.id): m for m in catalog if m.id}


def _placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


@pytest.mark.parametrize("code", [c for c in LANGUAGES if c != DEFAULT_LANGUAGE])
def test_every_message_of_the_portal_is_translated_and_nothing_is_stale(code: str) -> None:
    extracted = _extracted()
    assert len(extracted) > 300  # the extraction found the templates and the Python
    assert ("date range", "to") in extracted and (None, "Exam score") in extracted
    translated = _catalog(LOCALE_DIR / code / "LC_MESSAGES" / "messages.po", code)
    hint = "run the commands of docs/portal.md, 'Languages', and translate what they add"
    missing = sorted(str(k) for k in set(extracted) - set(translated))
    assert not missing, f"not in {code}/messages.po ({hint}): {missing[:20]}"
    stale = sorted(str(k) for k in set(translated) - set(extracted))
    assert not stale, f"in {code}/messages.po but no longer in the code ({hint}): {stale[:20]}"
    template = _catalog(LOCALE_DIR / "messages.pot")
    assert set(template) == set(extracted), f"messages.pot is not current ({hint})"

    problems = []
    for key, message in translated.items():
        ids = extracted[key]
        strings = message.string if isinstance(message.string, tuple) else (message.string,)  # type: ignore[attr-defined]
        if "fuzzy" in message.flags:  # type: ignore[attr-defined]
            problems.append(f"{key}: fuzzy")
        if len(ids) != len(message.id if isinstance(message.id, tuple) else (message.id,)):  # type: ignore[attr-defined]
            problems.append(f"{key}: plural in one, not the other")
        if not all(s.strip() for s in strings):
            problems.append(f"{key}: not translated")
        for text in strings:  # each form has the msgid's placeholders, no more, no fewer
            if _placeholders(text) != _placeholders(ids[-1]):
                problems.append(f"{key}: placeholders {_placeholders(text)} != {_placeholders(ids[-1])}")
        # a translation is trusted markup (Jinja's newstyle gettext): the same tags as the
        # msgid, and no double quote that could end an attribute it is put in
        for text in strings:
            if sorted(re.findall(r"</?\w+", ids[0])) != sorted(re.findall(r"</?\w+", text)):
                problems.append(f"{key}: the markup differs")
            if text.count('"') != ids[0].count('"'):
                problems.append(f"{key}: a double quote the msgid has not")
    assert problems == []


def test_the_catalogs_compile_and_translate() -> None:
    assert set(catalogs()) == set(LANGUAGES) == {"en", "fr"}
    assert catalogs()["fr"].gettext("Worklist") == "Liste de travail"
    assert catalogs()["fr"].ngettext("%(count)s study.", "%(count)s studies.", 2) == "%(count)s examens."
    assert catalogs()["fr"].pgettext("date range", "to") == "au"


@pytest.mark.parametrize(("header", "expected"), [
    ("fr-FR,fr;q=0.9", "fr"),
    ("fr-CA", "fr"),
    ("en-US,en;q=0.9,fr;q=0.8", "en"),
    ("de-DE,fr;q=0.5", "fr"),  # German is not offered: the next best
    ("de", "en"),
    ("en;q=0.1, fr;q=0.9", "fr"),  # the weights, not the order
    ("fr;q=0, en", "en"),  # q=0: not acceptable
    ("*", "en"),
    ("", "en"),
    ("fr;q=abc", "en"),
    ("x" * 5000 + ",fr", "en"),  # an oversized header is cut, not parsed whole
    ("fr;q=2, en;q=0.5", "en"),  # a weight above 1 is no weight
    ("fr;q=nan", "en"),
])
def test_accept_language_picks_the_best_offered_language(header: str, expected: str) -> None:
    assert choose_language(None, header) == expected


def test_the_cookie_beats_the_header_and_a_bogus_cookie_is_ignored() -> None:
    assert choose_language("en", FRENCH) == "en"
    assert choose_language("fr", "en") == "fr"
    assert choose_language("klingon", FRENCH) == "fr"
    assert accepted_languages("en;q=0.5, fr-FR, de;q=0.7") == ["fr-FR", "de", "en"]


def test_percent_writes_the_decimal_mark_of_the_language() -> None:
    assert (percent(0.873456), percent(0.0004), percent(0.9996), percent(None)) == (
        "87.3 %", "< 0.1 %", "> 99.9 %", "—")
    with language("fr"):
        assert (percent(0.873456), percent(0.0004), percent(0.9996), percent(1.0)) == (
            "87,3 %", "< 0,1 %", "> 99,9 %", "100,0 %")
    assert percent(0.873456) == "87.3 %"  # the block's language ends with it


@pytest.fixture
def french(client: TestClient[Litestar]) -> Iterator[TestClient[Litestar]]:
    client.headers["Accept-Language"] = FRENCH
    yield client


def test_a_french_browser_gets_french_pages(french: TestClient[Litestar], study: str) -> None:
    login = french.get("/login")
    assert '<html lang="fr">' in login.text and "Se connecter" in login.text
    assert "Outil de recherche et d'aide à la décision" in login.text
    assert login.headers["content-language"] == "fr"
    assert {"Accept-Language", "Cookie"} <= {v.strip() for v in login.headers["vary"].split(",")}
    sign_in(french, "rita")
    worklist = french.get("/")
    assert '<html lang="fr">' in worklist.text and "<h1>Liste de travail</h1>" in worklist.text
    assert "87,3 %" in worklist.text and "87.3 %" not in worklist.text
    assert ">Signalé<" in worklist.text and ">Score de l'examen<" in worklist.text
    assert 'data-score="0.873456"' in worklist.text  # machine values stay as they were
    detail = french.get(f"/studies/{study}")
    assert "Sein droit" in detail.text and "Vérité terrain" in detail.text
    assert "Biopsie : maligne" in detail.text and "Incidence" in detail.text
    statistics = french.get("/statistics")
    assert "Examens reçus par jour" in statistics.text and "Sensibilité" in statistics.text


def test_english_without_a_header_with_english_or_with_an_unoffered_language(
    client: TestClient[Litestar],
) -> None:
    for header in (None, "en", "en-GB,en;q=0.8", "de-DE,de;q=0.9"):
        page = client.get("/login", headers={"Accept-Language": header} if header else {})
        assert '<html lang="en">' in page.text and "<h1>Sign in</h1>" in page.text, header
        assert page.headers["content-language"] == "en"


def test_the_switch_sets_the_cookie_which_beats_the_header(french: TestClient[Litestar]) -> None:
    switched = french.get("/language?lang=en&next=/login%3Fnext%3D%252Fstatistics",
                          follow_redirects=False)
    assert switched.status_code == 303
    assert switched.headers["location"] == "/login?next=%2Fstatistics"
    cookie = switched.headers["set-cookie"]
    assert cookie.startswith(f"{LANGUAGE_COOKIE}=en;") and "Path=/" in cookie
    assert "SameSite=lax" in cookie and "HttpOnly" in cookie
    page = french.get("/login")  # the header still says French; the cookie wins
    assert '<html lang="en">' in page.text and "Sign in" in page.text
    french.get("/language?lang=fr&next=/login")
    assert "Se connecter" in french.get("/login").text


@pytest.mark.parametrize("target", [
    "https://evil.example", "//evil.example/login", "/\\evil.example", "http:/login", "",
    "javascript:alert(1)",
])
def test_the_switch_goes_back_only_to_a_path_of_this_site(
    client: TestClient[Litestar], target: str,
) -> None:
    response = client.get("/language", params={"lang": "fr", "next": target}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_the_switch_refuses_a_language_it_does_not_have(client: TestClient[Litestar]) -> None:
    response = client.get("/language?lang=de&next=/", follow_redirects=False)
    assert response.status_code == 422
    assert LANGUAGE_COOKIE not in response.headers.get("set-cookie", "")
    assert "no language &#39;de&#39;" in response.text


def test_the_switch_is_on_every_page_and_open_to_anonymous_visitors(
    client: TestClient[Litestar],
) -> None:
    login = client.get("/login?next=/statistics")
    links = re.findall(r'href="(/language\?[^"]+)"', login.text)
    assert links == ["/language?lang=fr&amp;next=/login%3Fnext%3D/statistics"]
    assert 'aria-current="true">English<' in login.text
    # anonymous: the switch answers (no sign-in asked), and comes back to the page
    response = client.get(links[0].replace("&amp;", "&"), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/statistics"


def test_errors_in_french_before_during_and_after_the_handler(
    french: TestClient[Litestar],
) -> None:
    # no such route: the router's 404, outside every middleware
    nowhere = french.get("/nowhere")
    assert nowhere.status_code == 404 and "Introuvable" in nowhere.text
    assert "Il n&#39;y a pas de page à l&#39;adresse /nowhere." in nowhere.text
    assert nowhere.headers["content-language"] == "fr"
    # the CSRF middleware refuses a form without its token
    forged = french.post("/login", data={"username": "rita", "password": "x"})
    assert forged.status_code == 403 and "Le jeton de sécurité du formulaire" in forged.text
    # a wrong password: the handler's message (run in a worker thread)
    sign_in_page = french.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', sign_in_page.text)
    assert token
    failed = french.post("/login", data={"username": "rita", "password": "wrong",
                                         "_csrf_token": token.group(1)})
    assert failed.status_code == 401 and "Nom d&#39;utilisateur ou mot de passe incorrect." in failed.text
    sign_in(french, "vic")
    # a bad filter, refused in the handler's thread; a page for another role, by the guard
    bad = french.get("/?category=bogus")
    assert bad.status_code == 422 and "category doit valoir l&#39;un de" in bad.text
    refused = french.get("/admin")
    assert refused.status_code == 403 and "Cette page est réservée au rôle administrateur" in refused.text


def test_the_json_api_speaks_english_whatever_the_browser_says(
    french: TestClient[Litestar], study: str,
) -> None:
    sign_in(french, "rita")
    missing = french.get("/api/studies/9.9.9")
    assert missing.status_code == 404
    assert missing.json()["error"] == "There is no study with Study Instance UID 9.9.9."
    assert "content-language" not in missing.headers
    assert french.get("/api/studies?category=bogus").json()["error"].startswith("category must be one of")
    assert french.get(f"/api/studies/{STUDY_UID}").status_code == 200


def test_concurrent_requests_each_get_their_own_language(client: TestClient[Litestar]) -> None:
    def fetch(k: int) -> tuple[str, str]:
        wanted = "fr" if k % 2 else "en"
        page = client.get("/login", headers={"Accept-Language": wanted})
        return wanted, page.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        for wanted, text in pool.map(fetch, range(40)):
            assert f'<html lang="{wanted}">' in text
            assert ("Se connecter" in text) == (wanted == "fr")


@pytest.mark.parametrize(("present", "expected"), [
    (["RCC", "LCC", "RMLO", "LMLO"], ["RCC", "LCC", "RMLO", "LMLO"]),
    (["RCC", "LCC"], ["RCC", "LCC", "RMLO", "LMLO"]),
    (["RCC"], []),
    ([], []),
])
def test_the_pages_views_summary_says_in_english_what_the_api_says(
    present: list[str], expected: list[str],
) -> None:
    missing, summary = imaging_views_summary(present, expected)
    assert views_summary(present, missing, expected) == summary
    with language("fr"):
        if expected:
            assert "incidences attendues" in views_summary(present, missing, expected)
