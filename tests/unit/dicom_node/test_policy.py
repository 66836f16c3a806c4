"""Who may associate: called AE titles, peers, and the hosts a peer may call from."""

from __future__ import annotations

import pytest

from mammogate.config import load_settings
from mammogate.dicom_node.policy import (
    CALLED_AE_NOT_RECOGNISED,
    CALLING_AE_NOT_RECOGNISED,
    AssociationPolicy,
    peer_rule,
)


def test_verdicts_name_the_reason_and_the_setting() -> None:
    policy = AssociationPolicy.build(
        ["MAMMOGATE", "RESEARCH"],
        [peer_rule("MG1", ""), peer_rule("MG2", "10.0.0.0/24, 192.0.2.5"),
         peer_rule("LOCAL", "localhost")])
    assert policy.verdict("MG1", "MAMMOGATE", "203.0.113.9") is None
    assert policy.verdict("MG2", "RESEARCH", "10.0.0.77") is None
    assert policy.verdict("MG2", "MAMMOGATE", "::ffff:192.0.2.5") is None  # IPv4-mapped
    assert policy.verdict("LOCAL", "MAMMOGATE", "127.0.0.1") is None  # a host name, resolved
    called = policy.verdict("MG1", "PACS", "10.0.0.1")
    assert called is not None and called.diagnostic == CALLED_AE_NOT_RECOGNISED
    assert "dicom.additional_ae_titles" in called.reason
    host = policy.verdict("MG2", "MAMMOGATE", "10.0.1.1")
    assert host is not None and host.diagnostic == CALLING_AE_NOT_RECOGNISED
    assert host.reason == ("calling AE title 'MG2' is allowed from 10.0.0.0/24, 192.0.2.5 only, "
                           "not from 10.0.1.1")
    unknown = policy.verdict("MG3", "MAMMOGATE", "10.0.0.1")
    assert unknown is not None and "not an allowed peer" in unknown.reason


def test_no_peers_accepts_any_caller_but_only_at_its_own_titles() -> None:
    policy = AssociationPolicy.build(["MAMMOGATE"], [])
    assert policy.accepts_any_caller
    assert policy.verdict("ANYONE", "MAMMOGATE", "127.0.0.1") is None
    assert policy.verdict("ANYONE", "OTHER", "127.0.0.1") is not None


def test_a_host_name_that_does_not_resolve_admits_nothing() -> None:
    rule = peer_rule("MG1", "no-such-host.invalid")
    assert rule.hosts == ("no-such-host.invalid",) and rule.networks == ()
    policy = AssociationPolicy.build(["MAMMOGATE"], [rule])
    assert policy.verdict("MG1", "MAMMOGATE", "127.0.0.1") is not None


@pytest.mark.parametrize(("peers", "message"), [
    ([{"ae_title": "MG1", "hosts": ["300.1.1.1"]}], "is neither an IP address"),
    ([{"ae_title": "MG1"}, {"ae_title": "MG1", "hosts": ["10.0.0.1"]}], "MG1 listed more than once"),
    ([{"ae_title": "MG\\1"}], "not a valid AE title"),
])
def test_bad_peers_are_refused_with_the_key(peers: list[dict[str, object]], message: str) -> None:
    from mammogate.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_settings(None, dicom={"peers": peers})


def test_peers_and_allowed_titles_make_one_list() -> None:
    settings = load_settings(None, dicom={
        "peers": [{"ae_title": "MG1", "hosts": ["10.0.0.1", "mg1.example.org"]}],
        "allowed_calling_ae_titles": ["MG2"], "additional_ae_titles": ["RESEARCH"],
        "expected_views": ["rcc", "LCC"]})
    dicom = settings.dicom
    assert [(p.ae_title, p.hosts) for p in dicom.all_peers] == [
        ("MG1", ["10.0.0.1", "mg1.example.org"]), ("MG2", [])]
    assert dicom.listening_ae_titles == ["MAMMOGATE", "RESEARCH"]
    assert dicom.expected_views == ["RCC", "LCC"]
