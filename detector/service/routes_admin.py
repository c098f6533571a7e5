"""Operations endpoints: ``GET /metrics`` (the app's registry) and ``POST /-/reload``.

Both read what they serve from the app's state: ``registry`` and ``reload`` (a
`detector.service.reloader.ConfigReloader`), set by `detector.service.app.create_app`.
`add_routes` mounts them on the app's router (the routes stay the app's own, as
``@app.get`` would make them).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import choose_encoder

from detector.service.responses import error_responses


def metrics_endpoint(request: Request) -> Response:
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(
        content=encoder(request.app.state.registry), media_type=None, headers={"Content-Type": content_type}
    )


def reload_endpoint(request: Request) -> JSONResponse:
    status_code, body = request.app.state.reload()
    return JSONResponse(body, status_code=status_code)


def add_routes(router: APIRouter) -> None:
    """Mount ``GET /metrics`` and ``POST /-/reload`` on `router`, in this order."""
    router.get("/metrics", summary="Prometheus metrics", response_class=Response)(metrics_endpoint)
    router.post(
        "/-/reload",
        summary="Reload the configuration and packs (needs the token when one is set)",
        responses=error_responses(400, 401, 409, 500),
    )(reload_endpoint)


__all__ = ["add_routes", "metrics_endpoint", "reload_endpoint"]
