"""HTTP destinations: Orthanc's REST API and DICOMweb STOW-RS (PS3.18), with ``requests``.

Secrets come from the environment: a destination names the variable (``password_env``,
``token_env``), never the secret. HTTP answers are mapped to retryable or final failures:
connection errors, timeouts, 408, 429 and 5xx are retried; 401 and 403 (wrong or missing
credentials) and other 4xx are final, with the server's words in the reason.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom.errors import InvalidDicomError

from mammogate.db import DestinationRow
from mammogate.delivery.base import SendError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def _secret(name: str, destination: DestinationRow) -> str:
    """The secret in the environment variable ``name``. Its value never appears in an error."""
    value = os.environ.get(name)
    role = "token_env" if name == destination.token_env else "password_env"
    if not value:
        raise SendError(
            f"destination {destination.name}: the environment variable {name} (its {role}) is "
            "not set in this process",
            retryable=False,
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # a trailing newline from `echo` or a file: an HTTP library would put the secret
        # itself in its error message
        raise SendError(
            f"destination {destination.name}: the environment variable {name} (its {role}) "
            "contains a line break or another control character; remove it",
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
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
        # the message of these may quote a header value (a secret): only the type is said
        raise SendError(f"{destination.name}: {method} {url} cannot be made: "
                        f"{type(exc).__name__}", retryable=False) from exc
    except requests.RequestException as exc:
        raise SendError(f"{destination.name}: {method} {url} failed: {type(exc).__name__}",
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
            answer = response.json()
            status = answer.get("Status", "") if isinstance(answer, dict) else ""
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
        if not isinstance(info, dict):
            raise SendError(f"{destination.name}: {url} is not Orthanc's REST API (no JSON "
                            "object)", retryable=False)
        return (f"Orthanc {info.get('Version', '?')} ({info.get('Name', 'unnamed')}, "
                f"AE title {info.get('DicomAet', '?')}) answers at {destination.url}")


# PS3.18 STOW-RS response attributes, DICOM JSON keys
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.4 Annex GG: the server already has this instance


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


def _items(payload: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        return []
    value = payload.get(key)
    items = value.get("Value", []) if isinstance(value, dict) else []
    return [i for i in items if isinstance(i, dict)]


def _first(item: dict[str, Any], key: str) -> Any:
    value = item.get(key)
    values = value.get("Value", []) if isinstance(value, dict) else []
    return values[0] if values else None


def _sop_instance_uid(data: bytes) -> str:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                             specific_tags=["SOPInstanceUID"])
        return str(ds.SOPInstanceUID)
    except (InvalidDicomError, AttributeError, OSError, ValueError):
        return ""  # not readable DICOM: the server will say so


class StowRsDestination:
    """DICOMweb STOW-RS: ``POST {url}/studies`` with a multipart/related body.

    The object is delivered when the response lists its SOP Instance UID among the stored ones
    (HTTP 200, or 202 with warnings), or refuses it as a duplicate (failure reason 0x0111: an
    earlier attempt stored it). A failure reason 0xA7xx (out of resources) and HTTP 5xx/429 are
    retried; any other failure reason and other 4xx are final, with the reason.
    """

    def send(self, path: Path, destination: DestinationRow) -> None:
        url = f"{destination.url}/studies"
        data = _read(path)
        uid = _sop_instance_uid(data)
        body, content_type = stow_body(data)
        response = _request("POST", url, destination, data=body,
                            headers={"Content-Type": content_type,
                                     "Accept": "application/dicom+json"})
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        stored = {_first(i, REFERENCED_SOP_INSTANCE_UID)
                  for i in _items(payload, REFERENCED_SOP_SEQUENCE)}
        failures = {_first(i, REFERENCED_SOP_INSTANCE_UID): _first(i, FAILURE_REASON)
                    for i in _items(payload, FAILED_SOP_SEQUENCE)}
        if response.status_code in (200, 202) and (uid in stored or (not failures and not uid)):
            return
        if response.status_code in (200, 202, 409) and failures:
            reason = failures.get(uid, next(iter(failures.values())))
            if reason == DUPLICATE_SOP_INSTANCE:
                return
            code = f"{reason:#06x}" if isinstance(reason, int) else str(reason)
            raise SendError(
                f"{destination.name}: STOW-RS refused the object, failure reason {code} "
                f"(HTTP {response.status_code})",
                retryable=isinstance(reason, int) and (reason & 0xFF00) == 0xA700,
            )
        if response.status_code == 200:
            raise SendError(f"{destination.name}: STOW-RS answered 200 without listing the "
                            f"object as stored: {_excerpt(response)}", retryable=True)
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
