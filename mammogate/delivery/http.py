"""HTTP destinations: Orthanc's REST API and DICOMweb STOW-RS (PS3.18), with ``requests``.

Secrets come from the environment: a destination names the variable (``password_env``,
``token_env``), never the secret. HTTP answers are mapped to retryable or final failures:
connection errors, timeouts, 408, 429 and 5xx are retried; 401 and 403 (wrong or missing
credentials) and other 4xx are final, with the server's words in the reason.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import requests

from mammogate.db import DestinationRow
from mammogate.delivery.base import SendError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def _secret(name: str, destination: DestinationRow) -> str:
    value = os.environ.get(name)
    if not value:
        raise SendError(
            f"destination {destination.name}: the environment variable {name} (its "
            f"{'token_env' if name == destination.token_env else 'password_env'}) is not set "
            "in this process",
            retryable=False,
        )
    return value


def auth_headers(destination: DestinationRow) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Headers and basic-auth pair for a destination, from the environment."""
    if destination.token_env:
        return {"Authorization": f"Bearer {_secret(destination.token_env, destination)}"}, None
    if destination.username:
        return {}, (destination.username, _secret(destination.password_env, destination))
    return {}, None


def _excerpt(response: requests.Response) -> str:
    text = " ".join(response.text.split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else "no body"


def _request(method: str, url: str, destination: DestinationRow, **kwargs: Any) -> requests.Response:
    headers, auth = auth_headers(destination)
    headers.update(kwargs.pop("headers", {}))
    try:
        return requests.request(method, url, headers=headers, auth=auth,
                                timeout=destination.timeout_seconds, allow_redirects=False,
                                **kwargs)
    except requests.Timeout as exc:
        raise SendError(f"{destination.name}: no answer from {url} within "
                        f"{destination.timeout_seconds:g} s", retryable=True) from exc
    except requests.ConnectionError as exc:
        raise SendError(f"{destination.name}: cannot connect to {url}: "
                        f"{type(exc).__name__}", retryable=True) from exc
    except requests.RequestException as exc:
        raise SendError(f"{destination.name}: {method} {url} failed: {exc}",
                        retryable=True) from exc


def _refused(destination: DestinationRow, what: str, response: requests.Response) -> SendError:
    code = response.status_code
    hint = ""
    if code in (401, 403):
        hint = " (check the destination's credentials: username/password_env or token_env)"
    return SendError(
        f"{destination.name}: {what} answered HTTP {code}{hint}: {_excerpt(response)}",
        retryable=code in RETRYABLE_STATUS,
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SendError(f"cannot read {path.name}: {exc}", retryable=False) from exc


class OrthancRestDestination:
    """``POST {url}/instances`` with the Part 10 bytes (Orthanc's REST API)."""

    def send(self, path: Path, destination: DestinationRow) -> None:
        url = f"{destination.url}/instances"
        response = _request("POST", url, destination, data=_read(path),
                            headers={"Content-Type": "application/dicom", "Expect": ""})
        if response.status_code != 200:
            raise _refused(destination, f"POST {url}", response)
        try:
            status = response.json().get("Status", "")
        except ValueError as exc:
            raise SendError(f"{destination.name}: POST {url} answered 200 without JSON: "
                            f"{_excerpt(response)}", retryable=True) from exc
        if status not in ("Success", "AlreadyStored"):
            raise SendError(f"{destination.name}: Orthanc answered status {status!r}",
                            retryable=True)

    def test(self, destination: DestinationRow) -> str:
        url = f"{destination.url}/system"
        response = _request("GET", url, destination)
        if response.status_code != 200:
            raise _refused(destination, f"GET {url}", response)
        try:
            info = response.json()
        except ValueError as exc:
            raise SendError(f"{destination.name}: {url} is not Orthanc's REST API (no JSON)",
                            retryable=False) from exc
        return (f"Orthanc {info.get('Version', '?')} ({info.get('Name', 'unnamed')}, "
                f"AE title {info.get('DicomAet', '?')}) answers at {destination.url}")


# PS3.18 STOW-RS response attributes, DICOM JSON keys
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"


def stow_body(part10: bytes) -> tuple[bytes, str]:
    """A multipart/related body with one application/dicom part, CRLF throughout."""
    boundary = f"mammogate-{uuid.uuid4().hex}"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part10
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body, content_type


def _failures(payload: Any) -> list[str]:
    """Failure reasons listed in a STOW-RS response (DICOM JSON)."""
    if not isinstance(payload, dict):
        return []
    failed = payload.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    reasons = []
    for item in failed:
        reason = item.get(FAILURE_REASON, {}).get("Value", ["?"])[0]
        reasons.append(f"failure reason {reason:#06x}" if isinstance(reason, int) else str(reason))
    return reasons


class StowRsDestination:
    """DICOMweb STOW-RS: ``POST {url}/studies`` with a multipart/related body."""

    def send(self, path: Path, destination: DestinationRow) -> None:
        url = f"{destination.url}/studies"
        body, content_type = stow_body(_read(path))
        response = _request("POST", url, destination, data=body,
                            headers={"Content-Type": content_type,
                                     "Accept": "application/dicom+json"})
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        failures = _failures(payload)
        if response.status_code == 200 and not failures:
            return
        if response.status_code in (200, 202, 409) and failures:
            # the server understood and refused this object: sending it again will not help
            raise SendError(f"{destination.name}: STOW-RS refused the object: "
                            f"{'; '.join(failures)} (HTTP {response.status_code})",
                            retryable=False)
        raise _refused(destination, f"STOW-RS POST {url}", response)

    def test(self, destination: DestinationRow) -> str:
        url = f"{destination.url}/studies"
        response = _request("GET", url, destination, params={"limit": "1"},
                            headers={"Accept": "application/dicom+json"})
        if response.status_code in (200, 204):
            return f"DICOMweb server answers QIDO-RS at {url} (HTTP {response.status_code})"
        if response.status_code in (404, 405):
            return (f"a web server answers at {destination.url} (HTTP {response.status_code} to "
                    "QIDO-RS: STOW-RS is not probed without sending an object)")
        raise _refused(destination, f"GET {url}", response)
