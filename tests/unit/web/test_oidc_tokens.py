"""ID token validation and role mapping of the OpenID relying party, on tokens made here with
joserfc (no network: the provider's metadata and keys are set on the client)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from mammogate.config.settings import OidcSettings
from mammogate.web.auth.oidc import OidcClient, OidcError, ProviderMetadata, role_from_claims

ISSUER = "https://idp.example.org/realms/radiology"
CLIENT = "mammogate"
NONCE = "n-0S6_WzA2Mj"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same kid, another key


def _settings(**changes: Any) -> OidcSettings:
    return OidcSettings(enabled=True, issuer=ISSUER, client_id=CLIENT, **changes)


class _Client(OidcClient):
    """The relying party with the provider's metadata in hand; counts refetches."""

    def __init__(self, settings: OidcSettings | None = None) -> None:
        super().__init__(settings or _settings(), client_secret="s")
        self.refreshes = 0
        self.meta = ProviderMetadata(ISSUER, f"{ISSUER}/auth", f"{ISSUER}/token", f"{ISSUER}/jwks",
                                     ("RS256", "ES256"))
        self.keys = KeySet.import_key_set({"keys": [KEY.as_dict(private=False)]})

    def metadata(self, *, refresh: bool = False) -> tuple[ProviderMetadata, KeySet]:
        self.refreshes += refresh
        return self.meta, self.keys


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "u-1", "iat": now, "exp": now + 300,
              "nonce": NONCE, "preferred_username": "alice", "roles": ["mammogate-admin"]}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _token(claims: dict[str, Any], key: Any = KEY, alg: str = "RS256") -> str:
    return jwt.encode({"alg": alg, "kid": "k1"}, claims, key)


def test_a_valid_id_token_gives_its_claims() -> None:
    claims = _Client().validate_id_token(_token(_claims()), NONCE)
    assert claims["sub"] == "u-1" and claims["preferred_username"] == "alice"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"iss": "https://evil.example.org"}, "iss"),
    ({"aud": "another-client"}, "aud"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"nonce": "replayed"}, "nonce"),
    ({"nonce": None}, "nonce"),
    ({"sub": None}, "sub"),
    ({"exp": None}, "exp"),
])
def test_each_claim_check_refuses_a_bad_token(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(OidcError, match="not valid") as caught:
        _Client().validate_id_token(_token(_claims(**changes)), NONCE)
    assert reason in str(caught.value).lower() or reason in repr(caught.value).lower()


def test_a_token_within_the_clock_skew_passes_and_beyond_it_fails() -> None:
    late = _claims(exp=int(time.time()) - 30)
    assert _Client().validate_id_token(_token(late), NONCE)["sub"] == "u-1"
    with pytest.raises(OidcError):
        _Client(_settings(clock_skew_seconds=0)).validate_id_token(_token(late), NONCE)


def test_unsigned_hmac_and_foreign_signatures_are_refused() -> None:
    client = _Client()
    header = {"alg": "none", "kid": "k1"}
    import base64
    import json

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    with pytest.raises(OidcError):
        client.validate_id_token(f"{b64(header)}.{b64(_claims())}.", NONCE)
    with pytest.raises(OidcError):
        client.validate_id_token(_token(_claims(), OctKey.import_key("s" * 32), "HS256"), NONCE)
    with pytest.raises(OidcError, match="does not verify"):
        client.validate_id_token(_token(_claims(), OTHER_KEY), NONCE)
    assert client.refreshes == 1  # one refetch of the keys, in case the provider rotated them
    with pytest.raises(OidcError):
        client.validate_id_token("not.a.jwt", NONCE)


def test_several_audiences_need_this_portal_as_the_authorised_party() -> None:
    with pytest.raises(OidcError, match="azp"):
        _Client().validate_id_token(_token(_claims(aud=[CLIENT, "other"])), NONCE)
    ok = _Client().validate_id_token(_token(_claims(aud=[CLIENT, "other"], azp=CLIENT)), NONCE)
    assert ok["azp"] == CLIENT


def test_roles_come_from_the_configured_claim_and_the_highest_mapped_one_wins() -> None:
    settings = _settings(roles_claim="realm_access.roles",
                         role_map={"rad": "radiologist", "boss": "admin", "look": "viewer"})
    assert role_from_claims({"realm_access": {"roles": ["look", "rad"]}}, settings) == (
        "radiologist", ("look", "rad"))
    assert role_from_claims({"realm_access": {"roles": ["boss", "look"]}}, settings)[0] == "admin"
    assert role_from_claims({"realm_access": {"roles": "rad"}}, settings)[0] == "radiologist"
    assert role_from_claims({"realm_access": {"roles": ["staff"]}}, settings) == (None, ("staff",))
    assert role_from_claims({}, settings) == (None, ())


def test_an_answer_naming_another_issuer_is_refused_before_any_exchange() -> None:
    client = _Client()
    pending = {"state": "s1", "nonce": NONCE, "verifier": "v" * 64, "redirect_uri": "http://x/cb",
               "started": int(time.time())}
    with pytest.raises(OidcError, match="names the issuer"):
        client.finish({"state": "s1", "code": "c", "iss": "https://evil.example.org"}, pending)
    with pytest.raises(OidcError, match="took too long"):
        client.finish({"state": "s1", "code": "c"}, {**pending, "started": 0})


def test_settings_refuse_an_incomplete_or_insecure_provider() -> None:
    with pytest.raises(ValueError, match="issuer and oidc.client_id"):
        OidcSettings(enabled=True, issuer=ISSUER)
    with pytest.raises(ValueError, match="https"):
        OidcSettings(enabled=True, issuer="http://idp.example.org", client_id=CLIENT)
    with pytest.raises(ValueError, match="role_map"):
        OidcSettings(enabled=True, issuer=ISSUER, client_id=CLIENT, role_map={"x": "superuser"})
    assert OidcSettings(enabled=True, issuer="http://127.0.0.1:9000", client_id=CLIENT).enabled
