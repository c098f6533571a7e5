"""HTTP face of the service: FastAPI app factory, key=value logging, and `csf serve`.

Endpoints
---------
``GET /metrics``          Prometheus exposition of the injected registry (text 0.0.4;
                          OpenMetrics when the Accept header asks for it).
``GET /healthz``          200 while the process runs.
``GET /readyz``           503 until every pipeline has one successful evaluation, then 200.
``GET /api/v1/status``    Latest evaluation of ``?pipeline=`` (default: the first pipeline).
``GET /api/v1/history``   Stored evaluations (``?since=RFC3339&pipeline=&limit=``) and binding changes.
``GET /api/v1/pipelines`` Configured pipelines, their packs, sources and readiness.
``GET /openapi.json``     The OpenAPI document (FastAPI default).

Bad query parameters answer 400 with ``{"error": ...}``. Nothing is built at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from detector import __version__
from detector.service.config import ENV_VARS, Config, ConfigError, load_config
from detector.service.runner import Runner
from detector.service.state import StateError, StateStore
from detector.timefmt import format_time, parse_time
from exporters.prometheus import EvaluationCollector, ServiceMetrics
from exporters.status_page import render_status_page

HISTORY_MAX_LIMIT = 10000
HISTORY_DEFAULT_LIMIT = 1000
STATUS_PAGE_HISTORY = 96

log = logging.getLogger("csf.service")


# --------------------------------------------------------------------------- logging

_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}
)


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(ch in text for ch in ' ="\\\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """One line per event: ``time=... level=... logger=... msg="..." key=value ...``.

    Extra fields passed with ``extra={...}`` follow the message; a traceback becomes an
    ``exc`` field (newlines escaped) so that one event stays one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = (
            datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        fields: list[tuple[str, Any]] = [
            ("time", ts),
            ("level", record.levelname.lower()),
            ("logger", record.name),
            ("msg", record.getMessage()),
        ]
        fields += [
            (k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")
        ]
        if record.exc_info:
            fields.append(("exc", self.formatException(record.exc_info)))
        elif record.exc_text:
            fields.append(("exc", record.exc_text))
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields)


def configure_logging(level: str, stream: Any = None) -> logging.Handler:
    """Send every log record to stderr in key=value form at `level` (returns the handler)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler warns on every skipped run of a still-running evaluation; that is expected here.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if level == "debug" else logging.ERROR)
    return handler


# --------------------------------------------------------------------------- app


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(
    config: Config,
    runner: Runner | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the service app. Without `runner`, one is built from `config` with its own state store.

    With a `runner`, `registry` defaults to (and must be) the registry of the runner's metrics.
    The app's lifespan starts the runner and stops it (closing the state database).
    """
    if runner is None:
        registry = registry if registry is not None else CollectorRegistry()
        runner = Runner.from_config(
            config, metrics=ServiceMetrics(registry), state=StateStore(config.data_dir)
        )
    elif registry is None:
        registry = runner.metrics.registry
    elif registry is not runner.metrics.registry:
        raise ValueError("registry must be the registry of the runner's metrics")
    registry.register(EvaluationCollector(runner.snapshots, version=__version__))
    the_runner = runner
    the_registry = registry

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if the_runner.state is not None and the_runner.state.open_error is not None:
            log.error(
                "state database unavailable; evaluations continue unrecorded",
                extra={"error": str(the_runner.state.open_error)},
            )
        the_runner.start()
        try:
            yield
        finally:
            await asyncio.to_thread(the_runner.stop)

    app = FastAPI(
        title="csf",
        version=__version__,
        description="Constraint-sequence detector: the one binding constraint of a platform, live.",
        lifespan=lifespan,
    )
    app.state.runner = the_runner
    app.state.registry = the_registry
    app.state.config = config

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "query")
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(400, "; ".join(problems) or "invalid request")

    def _pipeline(name: str | None) -> str | JSONResponse:
        if name is None:
            return the_runner.names[0]
        if name not in the_runner.names:
            return _error(404, f"unknown pipeline {name!r}", pipelines=list(the_runner.names))
        return name

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics_endpoint(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(
            content=encoder(the_registry), media_type=None, headers={"Content-Type": content_type}
        )

    @app.get("/healthz", summary="Liveness: 200 while the process runs")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once every pipeline has evaluated successfully")
    def readyz() -> JSONResponse:
        pipelines = {name: the_runner.is_ready(name) for name in the_runner.names}
        ready = all(pipelines.values())
        return JSONResponse({"ready": ready, "pipelines": pipelines}, status_code=200 if ready else 503)

    @app.get("/api/v1/status", summary="Latest evaluation of a pipeline")
    def status(
        pipeline: str | None = Query(None, description="pipeline name (default: the first configured)"),
    ) -> JSONResponse:
        name = _pipeline(pipeline)
        if isinstance(name, JSONResponse):
            return name
        latest = the_runner.latest(name)
        if latest is None:
            reason = "no successful evaluation yet"
            err = the_runner.last_error(name)
            return _error(503, reason, pipeline=name, **({"last_error": err} if err else {}))
        return JSONResponse(latest.to_dict())

    @app.get("/api/v1/history", summary="Stored evaluations and binding changes of a pipeline")
    def history(
        since: str | None = Query(None, description="RFC3339 time or unix seconds (default: no lower bound)"),
        pipeline: str | None = Query(None, description="pipeline name (default: the first configured)"),
        limit: int = Query(HISTORY_DEFAULT_LIMIT, ge=1, le=HISTORY_MAX_LIMIT, description="newest N rows"),
    ) -> JSONResponse:
        name = _pipeline(pipeline)
        if isinstance(name, JSONResponse):
            return name
        start: float | None = None
        if since is not None:
            try:
                start = parse_time(since)
            except ValueError as exc:
                return _error(400, f"since: {exc}")
        if the_runner.state is None:
            return _error(503, "no state database configured")
        try:
            rows = the_runner.state.history(name, start, limit)
            changes = the_runner.state.binding_changes(name, start, limit)
        except StateError as exc:
            return _error(503, f"state database unavailable: {exc}")
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

    @app.get("/", summary="Status page (HTML)", response_class=HTMLResponse)
    def status_page(
        pipeline: str | None = Query(None, description="pipeline name (default: the first configured)"),
    ) -> Response:
        name = _pipeline(pipeline)
        if isinstance(name, JSONResponse):
            return name
        latest = the_runner.latest(name)
        rows: list[dict[str, Any]] = []
        if the_runner.state is not None:
            try:
                rows = the_runner.state.history(name, None, STATUS_PAGE_HISTORY)
            except StateError:
                rows = []
        refresh = max(5, min(300, int(config.evaluation_interval)))
        html = render_status_page(
            latest.to_dict() if latest is not None else None,
            rows,
            refresh_seconds=refresh,
            pipelines=the_runner.names,
        )
        return HTMLResponse(html)

    @app.get("/api/v1/pipelines", summary="Configured pipelines")
    def pipelines() -> JSONResponse:
        out = []
        for name in the_runner.names:
            h = the_runner.handle(name)
            latest = the_runner.latest(name)
            successes, errors = the_runner.counts(name)
            out.append(
                {
                    "name": name,
                    "pack": {
                        "name": h.pack.name,
                        "version": h.pack.version,
                        "constraints": list(h.pack.names),
                    },
                    "source": dict(h.source),
                    "ready": latest is not None,
                    "last_evaluation": format_time(latest.time) if latest is not None else None,
                    "binding": latest.binding if latest is not None else None,
                    "decision": latest.decision if latest is not None else None,
                    "evaluations": {"success": successes, "error": errors},
                }
            )
        return JSONResponse({"pipelines": out})

    return app


# --------------------------------------------------------------------------- CLI

OVERRIDE_ARGS: tuple[str, ...] = tuple(ENV_VARS)


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """Config from ``--config`` (or CSF_CONFIG), the environment and the other flags."""
    path = getattr(args, "config", None) or env.get("CSF_CONFIG") or None
    overrides = {key: getattr(args, key, None) for key in OVERRIDE_ARGS}
    return load_config(path, env, overrides)


def serve_cli(args: argparse.Namespace) -> int:
    """``csf serve``: 0 after a graceful shutdown, 2 on configuration errors, 1 when serving failed."""
    import uvicorn

    try:
        config = build_config(args, os.environ)
    except ConfigError as exc:
        print(f"csf serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_config=None,
            log_level=config.log_level,
            access_log=config.log_level == "debug",
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    log.info(
        "starting",
        extra={
            "version": __version__,
            "address": f"{config.host}:{config.port}",
            "pipelines": ",".join(config.pipeline_names),
            "data_dir": str(config.data_dir),
            "config": config.path or "-",
        },
    )
    # uvicorn re-raises the signal that stopped it once shutdown is complete; a no-op
    # handler lets a SIGTERM/SIGINT-driven graceful shutdown end with exit status 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except SystemExit as exc:
        log.error("server failed to start", extra={"exit_code": exc.code})
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        return 1
    log.info("stopped")
    return 0


__all__ = ["KeyValueFormatter", "build_config", "configure_logging", "create_app", "serve_cli"]
