"""The service's ``{"error": ...}`` answers: the JSON response, its OpenAPI entries, the 400 handler."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """``{"error": message, **extra}`` with HTTP `status`."""
    return JSONResponse({"error": message, **extra}, status_code=status)


ERROR_DESCRIPTIONS = {
    400: "Bad request: an invalid query parameter",
    401: "Missing or invalid bearer token (when a token is configured)",
    404: "Unknown pipeline",
    409: "Reload is not available",
    500: "The reload failed unexpectedly; the running configuration stays",
    503: "Not available yet (no successful evaluation) or the state database is unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the ``{"error": ...}`` answers an endpoint can give."""
    schema = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    return {
        code: {"description": ERROR_DESCRIPTIONS[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """Bad query parameters (`RequestValidationError`): 400 naming each problem."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "query")
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return error(400, "; ".join(problems) or "invalid request")


__all__ = ["ERROR_DESCRIPTIONS", "bad_request", "error", "error_responses"]
