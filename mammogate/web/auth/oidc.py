"""Sign-in with an OpenID Connect provider: authorization code flow with PKCE (S256).

- Discovery (``<issuer>/.well-known/openid-configuration``) and the provider's JWKS are fetched
  with ``requests`` and cached (``oidc.metadata_cache_seconds``); an ID token signed with a key
  the cache does not know makes one refetch (key rotation).
- The authorization request carries ``state``, ``nonce`` and a PKCE S256 challenge (Authlib's
  ``OAuth2Session``); the three secrets wait in the signed, encrypted session cookie.
- The code is exchanged at the token endpoint with the verifier (client_secret_basic when a
  secret is set, else a public client); the ID token is validated in full with joserfc: the
  signature against the JWKS with an asymmetric algorithm the provider announces (never
  ``none`` or an HMAC keyed by public material), ``iss``, ``aud`` (and ``azp`` when there are
  several audiences), ``exp``, ``iat`` and ``nbf`` with ``oidc.clock_skew_seconds`` of leeway,
  and ``nonce``.
- The role comes from the claim ``oidc.roles_claim`` through ``oidc.role_map``, the highest one
  wins; no mapped role, no sign-in.

Errors are ``OidcError`` with a message for the person signing in (never a token or a secret).
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError, MissingKeyError
from joserfc.jwk import KeySet

from mammogate.config.settings import OIDC_ROLE_RANK, OidcSettings

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
PENDING_KEY = "oidc_pending"  # the session key holding a sign-in in progress


class OidcError(Exception):
    """A sign-in through the provider that cannot complete; ``status_code`` for the page."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]


@dataclass(frozen=True)
class OidcIdentity:
    """Who the provider says signed in."""

    subject: str  # "<issuer>|<sub>": unique across providers
    username: str
    role: str
    provider_roles: tuple[str, ...]


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def role_from_claims(claims: dict[str, Any], settings: OidcSettings) -> tuple[str | None, tuple[str, ...]]:
    """The highest mammogate role the claim ``roles_claim`` maps to (None: none), and the
    provider's role values as found."""
    raw = _claim(claims, settings.roles_claim)
    values = (raw,) if isinstance(raw, str) else tuple(str(v) for v in raw) if isinstance(raw, list) else ()
    roles = [settings.role_map[v] for v in values if v in settings.role_map]
    if not roles:
        return None, values
    return max(roles, key=lambda r: OIDC_ROLE_RANK[r]), values


class OidcClient:
    """The relying party for one provider; thread-safe (the portal calls it from threads)."""

    def __init__(self, settings: OidcSettings, client_secret: str | None = None) -> None:
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        if client_secret is None:
            client_secret = os.environ.get(settings.client_secret_env, "") if settings.client_secret_env else ""
        self._secret = client_secret or None
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._jwks: KeySet | None = None
        self._fetched_at = 0.0

    # Provider metadata ------------------------------------------------------------------------

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = requests.get(url, timeout=self.settings.http_timeout_seconds,
                                    headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            log.warning("OpenID provider %s: %s not readable: %s", self.issuer, what, type(exc).__name__)
            raise OidcError(
                f"The sign-in provider ({self.issuer}) cannot be reached or did not answer "
                f"properly ({what}): {type(exc).__name__}. Try again later, or sign in with a "
                "local account.", 503) from None
        if not isinstance(body, dict):
            raise OidcError(f"The sign-in provider's {what} is not a JSON object.", 502)
        return body

    def metadata(self, *, refresh: bool = False) -> tuple[ProviderMetadata, KeySet]:
        with self._lock:
            fresh = time.monotonic() - self._fetched_at < self.settings.metadata_cache_seconds
            if self._metadata is not None and self._jwks is not None and fresh and not refresh:
                return self._metadata, self._jwks
            document = self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery document")
            if str(document.get("issuer", "")).rstrip("/") != self.issuer:
                raise OidcError(
                    f"The sign-in provider's discovery document names the issuer "
                    f"{document.get('issuer')!r}, not the configured {self.issuer!r} (oidc.issuer).", 502)
            try:
                announced = document.get("id_token_signing_alg_values_supported") or ["RS256"]
                metadata = ProviderMetadata(
                    issuer=str(document["issuer"]),
                    authorization_endpoint=str(document["authorization_endpoint"]),
                    token_endpoint=str(document["token_endpoint"]),
                    jwks_uri=str(document["jwks_uri"]),
                    algorithms=tuple(a for a in announced if a in ASYMMETRIC_ALGORITHMS),
                )
            except KeyError as exc:
                raise OidcError(f"The sign-in provider's discovery document lacks {exc}.", 502) from None
            if not metadata.algorithms:
                raise OidcError("The sign-in provider signs ID tokens with no asymmetric algorithm "
                                f"this portal accepts ({', '.join(ASYMMETRIC_ALGORITHMS)}).", 502)
            try:
                keys = KeySet.import_key_set(self._get_json(metadata.jwks_uri, "key set (JWKS)"))  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise OidcError(f"The sign-in provider's key set (JWKS) is not valid: {exc}.", 502) from None
            self._metadata, self._jwks, self._fetched_at = metadata, keys, time.monotonic()
            return metadata, keys

    # The flow ---------------------------------------------------------------------------------

    def _session(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(
            self.settings.client_id, self._secret, scope=self.settings.scopes,
            redirect_uri=redirect_uri, code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self._secret else "none",
        )

    def start(self, redirect_uri: str, next_path: str) -> tuple[str, dict[str, Any]]:
        """The provider's authorization URL, and what the session must keep until the answer."""
        metadata, _ = self.metadata()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url, _ = self._session(redirect_uri).create_authorization_url(
            metadata.authorization_endpoint, state=state, nonce=nonce, code_verifier=verifier)
        pending = {"state": state, "nonce": nonce, "verifier": verifier, "next": next_path,
                   "redirect_uri": redirect_uri, "started": int(time.time())}
        return url, pending

    def finish(self, query: dict[str, str], pending: Any) -> OidcIdentity:
        """Check the provider's answer against the pending sign-in, exchange the code, validate
        the ID token and map the role."""
        if not isinstance(pending, dict) or not all(
                isinstance(pending.get(k), str) for k in ("state", "nonce", "verifier", "redirect_uri")):
            raise OidcError("No sign-in through the provider is in progress in this browser "
                            "(or its cookie was lost): start again from the sign-in page.")
        if time.time() - float(pending.get("started", 0)) > self.settings.sign_in_timeout_seconds:
            raise OidcError("The sign-in through the provider took too long: start again.")
        if not hmac.compare_digest(str(query.get("state", "")), pending["state"]):
            raise OidcError("The provider's answer does not belong to the sign-in this browser "
                            "started (state mismatch): start again from the sign-in page.")
        answered_by = query.get("iss")
        if answered_by is not None and str(answered_by).rstrip("/") != self.issuer:
            # RFC 9207: an answer that names another issuer (a mix-up attack) is not ours
            raise OidcError(f"The answer names the issuer {str(answered_by)[:100]!r}, not "
                            f"{self.issuer!r}: start again from the sign-in page.")
        if query.get("error"):
            description = str(query.get("error_description") or "")[:200]
            raise OidcError(f"The sign-in provider refused the sign-in: {query['error'][:64]}"
                            f"{': ' + description if description else ''}.", 403)
        code = query.get("code")
        if not code:
            raise OidcError("The provider's answer carries no authorization code.")
        metadata, _ = self.metadata()
        try:
            token = self._session(pending["redirect_uri"]).fetch_token(
                metadata.token_endpoint, code=code, code_verifier=pending["verifier"],
                timeout=self.settings.http_timeout_seconds)
        except requests.RequestException as exc:
            raise OidcError(f"The sign-in provider's token endpoint cannot be reached: "
                            f"{type(exc).__name__}. Try again later.", 503) from None
        except AuthlibBaseError as exc:  # the provider said no (invalid_grant, invalid_client...)
            description = exc.description or exc.error or type(exc).__name__
            log.warning("OpenID token exchange refused: %s", type(exc).__name__)
            raise OidcError(f"The sign-in provider refused the code exchange: {str(description)[:200]}.", 403) from None
        id_token = token.get("id_token") if isinstance(token, dict) else None
        if not isinstance(id_token, str):
            raise OidcError("The sign-in provider returned no ID token (is 'openid' among oidc.scopes?).", 502)
        claims = self.validate_id_token(id_token, pending["nonce"])
        role, provider_roles = role_from_claims(claims, self.settings)
        if role is None:
            raise OidcError(
                f"Your account at the sign-in provider has no mammogate role (claim "
                f"{self.settings.roles_claim!r}: {', '.join(provider_roles) or 'none'}). Ask an "
                "administrator to give you one.", 403)
        username = _claim(claims, self.settings.username_claim)
        name = username if isinstance(username, str) and username.strip() else str(claims["sub"])
        return OidcIdentity(subject=f"{self.issuer}|{claims['sub']}"[:255],
                            username=name.strip()[:100], role=role, provider_roles=provider_roles)

    def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims, after every check; OidcError naming the one that failed."""
        metadata, keys = self.metadata()
        try:
            token = jwt.decode(id_token, keys, algorithms=list(metadata.algorithms))
        except (BadSignatureError, InvalidKeyIdError, MissingKeyError, ValueError):
            # perhaps a key the provider rotated in since the JWKS was cached: fetch it again
            metadata, keys = self.metadata(refresh=True)
            try:
                token = jwt.decode(id_token, keys, algorithms=list(metadata.algorithms))
            except (JoseError, ValueError) as again:
                raise OidcError(f"The ID token's signature does not verify against the provider's "
                                f"keys ({getattr(again, 'error', None) or again}).", 401) from None
        except JoseError as exc:
            raise OidcError(f"The ID token is not valid: {exc.error}.", 401) from None
        registry = jwt.JWTClaimsRegistry(
            leeway=self.settings.clock_skew_seconds,
            iss={"essential": True, "value": metadata.issuer},
            aud={"essential": True, "value": self.settings.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(token.claims)
        except JoseError as exc:
            raise OidcError(f"The ID token is not valid: {exc.error} ({exc.description or 'claim check'}).",
                            401) from None
        audience = token.claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and token.claims.get("azp") != self.settings.client_id:
            raise OidcError("The ID token is for several audiences and not authorised for this portal (azp).", 401)
        return dict(token.claims)


def callback_uri(settings: OidcSettings, base_url: str) -> str:
    """Where the provider sends the browser back: ``oidc.redirect_uri``, else this portal's
    callback as the request reached it."""
    if settings.redirect_uri:
        return settings.redirect_uri
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/login/oidc/callback"
