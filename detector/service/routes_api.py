"""The read endpoints: probes, the JSON API (``/api/v1/...``) and the HTML status page.

Each reads the runner (``app.state.runner``) and the running configuration
(``app.state.config``); an unknown ``?pipeline=`` answers 404, a bad query parameter 400.
`add_routes` mounts them on the app's router (the routes stay the app's own, as
``@app.get`` would make them).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from detector.service.responses import error, error_responses
from detector.service.runner import Runner
from detector.service.state import StateError
from detector.timefmt import format_time, parse_time
from exporters.status_page import render_status_page

HISTORY_MAX_LIMIT = 10000
HISTORY_DEFAULT_LIMIT = 1000
STATUS_PAGE_HISTORY = 96


def _runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runner
    return runner


def _pipeline(runner: Runner, name: str | None) -> str | JSONResponse:
    """The pipeline `name` (default: the first configured), or the 404 answer."""
    if name is None:
        return runner.names[0]
    if name not in runner.names:
        return error(404, f"unknown pipeline {name!r}", pipelines=list(runner.names))
    return name


def healthz() -> dict[str, str]:
    return {"status": "ok"}


def readyz(request: Request) -> JSONResponse:
    runner = _runner(request)
    pipelines = {name: runner.is_ready(name) for name in runner.names}
    ready = all(pipelines.values())
    return JSONResponse({"ready": ready, "pipelines": pipelines}, status_code=200 if ready else 503)


def status(
    request: Request,
    pipeline: str | None = Query(None, description="pipeline name (default: the first configured)"),
) -> JSONResponse:
    runner = _runner(request)
    name = _pipeline(runner, pipeline)
    if isinstance(name, JSONResponse):
        return name
    latest = runner.latest(name)
    if latest is None:
        reason = "no successful evaluation yet"
        err = runner.last_error(name)
        return error(503, reason, pipeline=name, **({"last_error": err} if err else {}))
    return JSONResponse(latest.to_dict())


def history(
    request: Request,
    since: str | None = Query(None, description="RFC3339 time or unix seconds (default: no lower bound)"),
    pipeline: str | None = Query(None, description="pipeline name (default: the first configured)"),
    limit: int = Query(HISTORY_DEFAULT_LIMIT, ge=1, le=HISTORY_MAX_LIMIT, description="newest N rows"),
) -> JSONResponse:
    runner = _runner(request)
    name = _pipeline(runner, pipeline)
    if isinstance(name, JSONResponse):
        return name
    start: float | None = None
    if since is not None:
        try:
            start = parse_time(since)
            format_time(start)  # NaN, +-inf, 1e20: outside what a datetime holds
        except (ValueError, OverflowError, OSError) as exc:
            return error(400, f"since: {exc}")
    if runner.state is None:
        return error(503, "no state database configured")
    try:
        rows = runner.state.history(name, start, limit)
        changes = runner.state.binding_changes(name, start, limit)
    except StateError as exc:
        return error(503, f"state database unavailable: {exc}")
    return JSONResponse(
        {
            "pipeline": name,
            "since": format_time(start) if start is not None else None,
            "limit": limit,
            "count": len(rows),
            "evaluations": rows,
            "binding_changes": changes,
        }
    )


def status_page(
    request: Request,
    pipeline: str | None = Query(None, description="pipeline name (default: the first configured)"),
) -> Response:
    runner = _runner(request)
    name = _pipeline(runner, pipeline)
    if isinstance(name, JSONResponse):
        return name
    latest = runner.latest(name)
    rows: list[dict[str, Any]] = []
    if runner.state is not None:
        try:
            rows = runner.state.history(name, None, STATUS_PAGE_HISTORY)
        except StateError:
            rows = []
    refresh = max(5, min(300, int(request.app.state.config.evaluation_interval)))
    html = render_status_page(
        latest.to_dict() if latest is not None else None,
        rows,
        refresh_seconds=refresh,
        pipelines=runner.names,
    )
    return HTMLResponse(html)


def pipelines(request: Request) -> JSONResponse:
    runner = _runner(request)
    return JSONResponse({"pipelines": [_describe(runner, name) for name in runner.names]})


def _describe(runner: Runner, name: str) -> dict[str, Any]:
    """One entry of ``/api/v1/pipelines``: pack, source (and push store), readiness, counts."""
    h = runner.handle(name)
    latest = runner.latest(name)
    successes, errors = runner.counts(name)
    return {
        "name": name,
        "pack": {
            "name": h.pack.name,
            "version": h.pack.version,
            "constraints": list(h.pack.names),
        },
        "source": dict(h.source) | ({"store": h.receiver.stats()} if h.receiver is not None else {}),
        "ready": latest is not None,
        "last_evaluation": format_time(latest.time) if latest is not None else None,
        "binding": latest.binding if latest is not None else None,
        "decision": latest.decision if latest is not None else None,
        "evaluations": {"success": successes, "error": errors},
    }


def add_routes(router: APIRouter) -> None:
    """Mount the probes, the read API and the status page on `router`, in this order."""
    router.get("/healthz", summary="Liveness: 200 while the process runs")(healthz)
    router.get(
        "/readyz",
        summary="Readiness: 200 once every pipeline has evaluated successfully",
        responses={503: {"description": "Some pipeline has not evaluated successfully yet"}},
    )(readyz)
    router.get(
        "/api/v1/status", summary="Latest evaluation of a pipeline", responses=error_responses(400, 404, 503)
    )(status)
    router.get(
        "/api/v1/history",
        summary="Stored evaluations and binding changes of a pipeline",
        responses=error_responses(400, 404, 503),
    )(history)
    router.get(
        "/", summary="Status page (HTML)", response_class=HTMLResponse, responses=error_responses(400, 404)
    )(status_page)
    router.get("/api/v1/pipelines", summary="Configured pipelines")(pipelines)


__all__ = [
    "HISTORY_DEFAULT_LIMIT",
    "HISTORY_MAX_LIMIT",
    "STATUS_PAGE_HISTORY",
    "add_routes",
    "healthz",
    "history",
    "pipelines",
    "readyz",
    "status",
    "status_page",
]
