"""Route evaluation: every clause kind, lists, globs and regexes, result clauses, stop."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from mammogate.config import ConfigError, load_settings
from mammogate.config.settings import OBJECT_KINDS
from mammogate.reporting import OBJECT_BUILDERS
from mammogate.routing import RouteRule, StudyFacts, describe, explain, plan_deliveries


def _header(**attributes: str) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _facts(category: str | None = None, score: float | None = None) -> StudyFacts:
    return StudyFacts.from_headers(
        [_header(Modality="MG", Manufacturer="GE MEDICAL SYSTEMS", ManufacturerModelName="Senographe Pristina",
                 InstitutionName="Clinique du Parc", StationName="MAMMO1", BodyPartExamined="BREAST",
                 StudyDescription="Mammographie de dépistage"),
         _header(Modality="MG", Manufacturer="HOLOGIC, Inc.", StudyDescription="Mammographie de dépistage")],
        calling_ae_titles=["MODALITY1"], called_ae_titles=["MAMMOGATE"],
        exam_category=category, exam_score=score,
    )


def _rules(*routes: dict[str, object]) -> list[RouteRule]:
    settings = load_settings(
        None, destinations=[{"name": n, "ae_title": "X", "host": "h", "port": 1}
                            for n in ("a", "b", "c")],
        routes=list(routes),
    )
    return [RouteRule.from_record(r) for r in settings.routes]


@pytest.mark.parametrize(("match", "fires"), [
    ({"manufacturer": "GE*"}, True),
    ({"manufacturer": "ge medical*"}, True),  # globs ignore case
    ({"manufacturer": "Siemens*"}, False),
    ({"manufacturer": ["Siemens*", "HOLOGIC*"]}, True),  # a list: any of them
    ({"manufacturer": "re:GE"}, False),  # a regex matches the whole value
    ({"manufacturer": "re:GE .*"}, True),
    ({"model": "*Pristina"}, True),
    ({"institution": "Clinique*", "station_name": "MAMMO?"}, True),
    ({"institution": "Clinique*", "station_name": "CT1"}, False),  # every clause must hold
    ({"body_part": "BREAST"}, True),
    ({"study_description": "re:Mammographie (de )?dépistage"}, True),
    ({"calling_ae_title": "MODALITY1", "called_ae_title": "MAMMOGATE"}, True),
    ({"calling_ae_title": "MODALITY2"}, False),
    ({"modality": "CT"}, False),
])
def test_text_clauses(match: dict[str, object], fires: bool) -> None:
    (verdict,) = explain(_rules({"destinations": ["a"], "match": match}), _facts())
    assert verdict.fires is fires
    assert len(verdict.clauses) == len(match)


def test_result_clauses_are_undecided_before_the_analysis_and_decided_after() -> None:
    rules = _rules(
        {"name": "flagged", "destinations": ["a"], "match": {"exam_category": "flagged"}},
        {"name": "high", "destinations": ["b"], "match": {"exam_score_min": 0.5, "exam_score_max": 0.9}},
    )
    before = explain(rules, _facts())
    assert [v.fires for v in before] == [None, None]
    assert plan_deliveries(rules, _facts()) == []
    after = explain(rules, _facts("flagged", 0.95))
    assert [v.fires for v in after] == [True, False]
    assert "exam_score_max" in after[1].reason
    assert [p.destination for p in plan_deliveries(rules, _facts("not_flagged", 0.6))] == ["b"]
    # nothing analysed: no exam score, a score clause fails rather than guesses
    (_, high) = explain(rules, _facts("failed", None))
    assert high.fires is False and "no exam score" in high.clauses[0].found


def test_stop_ends_the_evaluation_and_each_pair_is_delivered_once() -> None:
    rules = _rules(
        {"name": "one", "destinations": ["a", "b"]},
        {"name": "two", "destinations": ["a"], "stop": True},
        {"name": "three", "destinations": ["c"]},
    )
    plan = plan_deliveries(rules, _facts("flagged", 0.9))
    assert [(p.destination, p.route) for p in plan] == [("a", "one"), ("b", "one")]
    text = describe(explain(rules, _facts("flagged", 0.9)))
    assert "route 'three': does not fire (not evaluated: route 'two' fired" in text
    # a stop route that does not fire does not stop anything
    rules = _rules({"destinations": ["a"], "match": {"modality": "CT"}, "stop": True},
                   {"destinations": ["c"]})
    assert [p.destination for p in plan_deliveries(rules, _facts("flagged", 0.9))] == ["c"]


def test_a_study_not_analysed_gets_the_report_unless_the_route_is_silent() -> None:
    rules = _rules(
        {"name": "reporting", "destinations": ["a"], "objects": ["cad_sr", "comprehensive_sr"]},
        {"name": "quiet", "destinations": ["b"], "on_not_analysed": "silent"},
        {"name": "failures", "destinations": ["c"], "match": {"exam_category": ["failed", "skipped"]}},
    )
    for category in ("failed", "skipped"):
        plan = plan_deliveries(rules, _facts(category, None))
        assert [(p.route, p.destination, p.object_kind) for p in plan] == [
            ("reporting", "a", "cad_sr"), ("reporting", "a", "comprehensive_sr"),
            ("failures", "c", "cad_sr")]
    analysed = plan_deliveries(rules, _facts("flagged", 0.9))
    assert [p.route for p in analysed] == ["reporting", "reporting", "quiet"]


def test_a_stored_clause_this_version_does_not_know_never_fires() -> None:
    rule = RouteRule("old", ("a",), ("cad_sr",), {"colour": "blue"})
    (verdict,) = explain([rule], _facts("flagged", 0.9))
    assert verdict.fires is False and "does not know" in verdict.clauses[0].found


def test_disabled_routes_do_not_fire() -> None:
    rule = RouteRule("off", ("a",), ("cad_sr",), {}, enabled=False)
    assert plan_deliveries([rule], _facts("flagged", 0.9)) == []


@pytest.mark.parametrize(("route", "message"), [
    ({"destinations": ["a"], "match": {"manufacturor": "GE"}},
     "routes.0.match.manufacturor: not a setting this node knows"),
    ({"destinations": ["a"], "match": {"manufacturer": "re:(unclosed"}},
     "is not a valid regular expression"),
    ({"destinations": ["a"], "match": {"exam_category": ["positive"]}}, "routes.0.match.exam_category"),
    ({"destinations": ["a"], "match": {"exam_score_min": 0.8, "exam_score_max": 0.2}},
     "no study could match"),
    ({"destinations": ["a"], "objects": ["pdf"]}, "'pdf' is not a result object"),
    ({"destinations": ["a"], "objects": []}, "routes.0.objects"),
    ({"destinations": ["a"], "on_not_analysed": "quiet"}, "routes.0.on_not_analysed"),
    ({"destinations": ["nowhere"]}, "'nowhere' is not the name of a [[destinations]] entry"),
])
def test_bad_routes_are_refused_with_the_key_named(route: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        _rules(route)
    assert message in str(caught.value)


def test_two_routes_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="routes: names must be unique"):
        _rules({"name": "x", "destinations": ["a"]}, {"name": "x", "destinations": ["b"]})


def test_every_object_kind_a_route_may_name_has_a_builder() -> None:
    assert set(OBJECT_KINDS) == set(OBJECT_BUILDERS)
