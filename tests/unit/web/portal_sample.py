"""Sample data and helpers shared by the portal tests."""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.testing import TestClient

PASSWORDS = {"ada": "admin-pass-1", "rita": "radiologist-pass-2", "vic": "viewer-pass-3"}
STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
FAILED_UID = "1.2.826.0.1.3680043.8.498.1002"
LEFT_CC = "1.2.826.0.1.3680043.8.498.1001.1"
RIGHT_MLO = "1.2.826.0.1.3680043.8.498.1001.2"
SKIPPED = "1.2.826.0.1.3680043.8.498.1001.3"
SR_UID = "1.2.826.0.1.3680043.8.498.1001.99"
PATIENT_NAME = "DUPONT^Hélène"
EXAM_SCORE = 0.873456
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


def csrf_token(client: TestClient[Litestar], path: str = "/login") -> str:
    page = client.get(path)
    match = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: TestClient[Litestar], username: str, next_path: str = "/") -> None:
    response = client.post(
        "/login",
        data={
            "username": username,
            "password": PASSWORDS[username],
            "next": next_path,
            "_csrf_token": csrf_token(client),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
