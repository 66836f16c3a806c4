"""Route decorators of the portal: every page and read-only endpoint answers GET and HEAD."""

from __future__ import annotations

from typing import Any

from litestar import HttpMethod, route


def read(path: str, **kwargs: Any) -> Any:
    """``@get`` that also answers HEAD (monitoring probes and link checkers use it)."""
    return route(path, http_method=[HttpMethod.GET, HttpMethod.HEAD], **kwargs)
