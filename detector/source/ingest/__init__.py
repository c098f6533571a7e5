"""Push receivers that feed the embedded `SampleStore`.

* `detector.source.ingest.remote_write` — Prometheus remote_write 1.0 (``POST /api/v1/write``);
* `detector.source.ingest.otlp` — OTLP/HTTP metrics (``POST /v1/metrics``).

Each module exposes a router factory returning a FastAPI ``APIRouter`` bound to one
store; the service mounts them with ``app.include_router(...)``. Nothing is built at
import time. This package holds what both receivers share: the per-request
`IngestReport` passed to an optional ``on_ingest`` callback, the bounded body
reader and the typed `IngestError` (HTTP status + message).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from detector.errors import DataError

MiB = 1024 * 1024
MAX_FUTURE_SECONDS = 600.0
"""Samples stamped further ahead of the receiver's clock are refused (a sender's clock is wrong)."""


@dataclass(frozen=True)
class IngestReport:
    """What one request did to the store (also produced for refused requests)."""

    protocol: str
    """``remote_write`` or ``otlp``."""
    status: int
    """The HTTP status returned."""
    series: int = 0
    """Series (label sets) present in the request."""
    accepted: int = 0
    """Samples stored."""
    out_of_order: int = 0
    """Samples dropped because their series already had a newer or same-time different sample."""
    duplicates: int = 0
    """Samples dropped because the store already held the identical sample (retries)."""
    invalid: int = 0
    """Data points refused as invalid or unsupported (OTLP partial success)."""
    error: str = ""
    """Why the request (or part of it) was refused; empty on full success."""


OnIngest = Callable[[IngestReport], None]


class IngestError(DataError):
    """A request refused with `status` (4xx for the client's data, 5xx for our own faults)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (never buffered past it)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise IngestError(400, f"invalid Content-Length {declared!r}") from None
        if n > limit:
            raise IngestError(413, f"body of {n} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IngestError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """('application/x-protobuf', {'proto': ...}) from a Content-Type header (lower-cased type)."""
    if not content_type:
        return "", {}
    head, *params = content_type.split(";")
    out: dict[str, str] = {}
    for p in params:
        key, _, value = p.strip().partition("=")
        if key:
            out[key.strip().lower()] = value.strip().strip('"')
    return head.strip().lower(), out


def safe_reporter(on_ingest: OnIngest | None, protocol: str) -> Callable[[IngestReport], None]:
    """Call `on_ingest` with a report; a broken observer is logged and never fails ingestion."""

    def report(rep: IngestReport) -> None:
        if on_ingest is not None:
            try:
                on_ingest(rep)
            except Exception:
                logging.getLogger(__name__).exception("%s on_ingest callback failed", protocol)

    return report
