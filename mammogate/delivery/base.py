"""The seam between the outbox and the ways of reaching a destination."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from mammogate.db import DestinationRow


class SendError(Exception):
    """One attempt failed; ``reason`` is what the admin reads on the delivery."""

    def __init__(self, reason: str, *, retryable: bool):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Destination(Protocol):
    """How objects reach destinations of one kind (``dimse``, ``orthanc``, ``stow``)."""

    def send(self, path: Path, destination: DestinationRow) -> None:
        """Deliver the DICOM file at ``path``; return when the peer has it, else raise
        :class:`SendError`."""

    def test(self, destination: DestinationRow) -> str:
        """Check that the destination answers (C-ECHO, an HTTP probe): what it said, or
        :class:`SendError` with the reason."""


def backend_for(backends: Mapping[str, Destination], destination: DestinationRow) -> Destination:
    backend = backends.get(destination.kind)
    if backend is None:
        raise SendError(
            f"no backend for destination kind {destination.kind!r} in this process "
            f"(it has {', '.join(sorted(backends)) or 'none'})",
            retryable=False,
        )
    return backend
