"""The push endpoints of the service: ``POST /api/v1/write`` and ``POST /v1/metrics``.

Both paths always exist; each request goes to the `PushReceiver` of the pipeline it
targets (`select_push_pipeline`, rules in the `detector.service.app` docstring).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import Route

from detector.service.responses import error
from detector.service.runner import Runner

PIPELINE_HEADER = "X-CSF-Pipeline"
"""Header naming the target pipeline of a pushed request (alternative to ``?pipeline=``)."""
PUSH_PATHS: tuple[str, ...] = ("/api/v1/write", "/v1/metrics")


def select_push_pipeline(
    pipelines: tuple[str, ...], push: tuple[str, ...], query: str | None, header: str | None
) -> str | tuple[int, str]:
    """The push pipeline a request targets, or (HTTP status, reason) (rules in the module doc)."""
    if query is not None and header is not None and query != header:
        return (
            400,
            f"the pipeline query parameter {query!r} and the {PIPELINE_HEADER} header {header!r} differ",
        )
    wanted = query if query is not None else header
    if not push:
        return 404, "no pipeline accepts pushed samples: configure a pipeline with source type 'push'"
    if wanted is None:
        if len(push) == 1:
            return push[0]
        return 400, (
            f"several push pipelines ({', '.join(push)}): name one with ?pipeline=NAME "
            f"or the {PIPELINE_HEADER} header"
        )
    if wanted in push:
        return wanted
    if wanted in pipelines:
        return 404, f"pipeline {wanted!r} does not accept pushed samples (push pipelines: {', '.join(push)})"
    return 404, f"unknown pipeline {wanted!r} (push pipelines: {', '.join(push)})"


class _PushDispatch:
    """ASGI endpoint of the push paths: forwards each request to its pipeline's receiver."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope)
        runner = self.runner
        target = select_push_pipeline(
            runner.names,
            runner.push_pipelines,
            request.query_params.get("pipeline"),
            request.headers.get(PIPELINE_HEADER),
        )
        receiver = None
        if isinstance(target, str):
            try:
                receiver = runner.handle(target).receiver
            except KeyError:  # removed by a reload since it was selected
                receiver = None
        if receiver is None:
            status, reason = target if isinstance(target, tuple) else (404, "pipeline was removed")
            await error(status, reason)(scope, receive, send)
            return
        await receiver.app(scope, receive, send)


def add_push_routes(app: FastAPI, runner: Runner) -> None:
    """Mount the push paths on `app` (plain routes: not part of the OpenAPI document)."""
    dispatch = _PushDispatch(runner)
    for push_path in PUSH_PATHS:
        # Authentication and the body limit apply as to every POST (SecurityMiddleware).
        app.router.routes.append(Route(push_path, endpoint=dispatch, methods=["POST"]))


__all__ = ["PIPELINE_HEADER", "PUSH_PATHS", "add_push_routes", "select_push_pipeline"]
