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
``POST /-/reload``        Re-read the configuration and packs; 400 with the reason when
                          invalid (the running configuration stays), 200 with what changed.
                          ``SIGHUP`` does the same.
``POST /api/v1/write``    Prometheus remote_write 1.0 into a ``push`` pipeline's store.
``POST /v1/metrics``      OTLP/HTTP metrics into a ``push`` pipeline's store.

The two push endpoints always exist; without a ``push`` pipeline they answer 404. The
target pipeline is the ``?pipeline=`` query parameter or the ``X-CSF-Pipeline`` header
(both given and different: 400); neither given: the only push pipeline (400 when there
are several). A name that is not a push pipeline answers 404 (`select_push_pipeline`).
The request itself is handled by the pipeline's `PushReceiver` (docs/ingestion.md).

Bad query parameters answer 400 with ``{"error": ...}``. Nothing is built at import time.
With an auth token configured, every non-GET endpoint (and, with ``auth.protect_reads``,
every endpoint but the probes) needs ``Authorization: Bearer <token>``; request bodies
are limited to ``max_body_bytes`` (`detector.service.auth`, SECURITY.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.routing import Route

from detector import __version__
from detector.service.auth import AdminMetrics, SecurityMiddleware, SecurityPolicy, check_exposure
from detector.service.config import ENV_VARS, Config, ConfigError, load_config
from detector.service.runner import Runner
from detector.service.state import StateError, StateStore
from detector.timefmt import format_time, parse_time
from exporters.collector import EvaluationCollector, ServiceMetrics
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
    # httpx logs every request (each Prometheus query, each Alertmanager push) at info level.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    return handler


# --------------------------------------------------------------------------- app


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


_ERROR_DESCRIPTIONS = {
    400: "Bad request: an invalid query parameter",
    401: "Missing or invalid bearer token (when a token is configured)",
    404: "Unknown pipeline",
    409: "Reload is not available",
    500: "The reload failed unexpectedly; the running configuration stays",
    503: "Not available yet (no successful evaluation) or the state database is unavailable",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the ``{"error": ...}`` answers an endpoint can give."""
    schema = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    return {
        code: {"description": _ERROR_DESCRIPTIONS[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


def open_state(config: Config) -> StateStore:
    """The state store of `config`: ``state_url`` when set, else SQLite in ``data_dir``."""
    if config.state_url is not None:
        return StateStore(url=config.state_url)
    return StateStore(config.data_dir)


PIPELINE_HEADER = "X-CSF-Pipeline"
"""Header naming the target pipeline of a pushed request (alternative to ``?pipeline=``)."""
PUSH_PATHS: tuple[str, ...] = ("/api/v1/write", "/v1/metrics")


def select_push_pipeline(
    pipelines: tuple[str, ...], push: tuple[str, ...], query: str | None, header: str | None
) -> str | tuple[int, str]:
    """The push pipeline a request targets, or (HTTP status, reason) (rules in the module doc)."""
    if query is not None and header is not None and query != header:
        return 400, f"the pipeline query parameter {query!r} and the {PIPELINE_HEADER} header {header!r} differ"
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
            await _error(status, reason)(scope, receive, send)
            return
        await receiver.app(scope, receive, send)


RESTART_ONLY: tuple[str, ...] = ("host", "port", "data_dir", "state_url")
"""Settings a reload cannot change (the listener and the state database stay)."""


def create_app(
    config: Config,
    runner: Runner | None = None,
    registry: CollectorRegistry | None = None,
    *,
    loader: Callable[[], Config] | None = None,
    insecure: bool = False,
) -> FastAPI:
    """Build the service app. Without `runner`, one is built from `config` with its own state store.

    With a `runner`, `registry` defaults to (and must be) the registry of the runner's metrics.
    The app's lifespan starts the runner and stops it (closing the state database).
    `loader` builds a fresh configuration for ``POST /-/reload`` and SIGHUP (None: reload
    answers 409); `insecure` is the ``--insecure`` flag a reload is checked against.
    """
    if runner is None:
        registry = registry if registry is not None else CollectorRegistry()
        runner = Runner.from_config(config, metrics=ServiceMetrics(registry), state=open_state(config))
    elif registry is None:
        registry = runner.metrics.registry
    elif registry is not runner.metrics.registry:
        raise ValueError("registry must be the registry of the runner's metrics")
    registry.register(EvaluationCollector(runner.snapshots, version=__version__))
    the_runner = runner
    the_registry = registry
    admin_metrics = AdminMetrics(registry)
    policy = [_policy(config)]
    current = [config]
    reload_lock = threading.Lock()

    def reload() -> tuple[int, dict[str, Any]]:
        """Load, validate and apply a fresh configuration: (HTTP status, body)."""
        with reload_lock:
            if loader is None:
                return 409, {"status": "error", "error": "reload is not available: no configuration source"}
            old = current[0]
            try:
                new = loader()
                check_exposure(new.host, new.auth_token is not None, insecure)
                restart = [key for key in RESTART_ONLY if getattr(new, key) != getattr(old, key)]
                effective = replace(new, **{key: getattr(old, key) for key in RESTART_ONLY})
                result = the_runner.reload(effective)
            except (ConfigError, ValueError) as exc:
                admin_metrics.reloaded(False)
                log.error(
                    "configuration reload refused; the running configuration stays", extra={"error": str(exc)}
                )
                return 400, {"status": "error", "error": str(exc)}
            except Exception as exc:
                admin_metrics.reloaded(False)
                log.exception("configuration reload failed; the running configuration stays")
                return 500, {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            current[0] = effective
            app.state.config = effective
            policy[0] = _policy(effective)
            logging.getLogger().setLevel(effective.log_level.upper())
            admin_metrics.reloaded(True)
            if restart:
                log.warning(
                    "settings that need a restart were not applied", extra={"settings": ",".join(restart)}
                )
            log.info(
                "configuration reloaded",
                extra={"config": effective.path or "-", "auth": effective.auth_token_origin or "none"},
            )
            return 200, {"status": "success", "pipelines": result.to_dict(), "restart_required": restart}

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
    app.state.reload = reload
    app.add_middleware(
        SecurityMiddleware,
        policy=lambda: policy[0],
        on_denied=lambda reason: admin_metrics.denied.labels(reason).inc(),
    )
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

    @app.post(
        "/-/reload",
        summary="Reload the configuration and packs (needs the token when one is set)",
        responses=_errors(400, 401, 409, 500),
    )
    def reload_endpoint() -> JSONResponse:
        status_code, body = reload()
        return JSONResponse(body, status_code=status_code)

    dispatch = _PushDispatch(the_runner)
    for push_path in PUSH_PATHS:
        # Authentication and the body limit apply as to every POST (SecurityMiddleware).
        app.router.routes.append(Route(push_path, endpoint=dispatch, methods=["POST"]))

    @app.get("/healthz", summary="Liveness: 200 while the process runs")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: 200 once every pipeline has evaluated successfully",
        responses={503: {"description": "Some pipeline has not evaluated successfully yet"}},
    )
    def readyz() -> JSONResponse:
        pipelines = {name: the_runner.is_ready(name) for name in the_runner.names}
        ready = all(pipelines.values())
        return JSONResponse({"ready": ready, "pipelines": pipelines}, status_code=200 if ready else 503)

    @app.get("/api/v1/status", summary="Latest evaluation of a pipeline", responses=_errors(400, 404, 503))
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

    @app.get(
        "/api/v1/history",
        summary="Stored evaluations and binding changes of a pipeline",
        responses=_errors(400, 404, 503),
    )
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
                format_time(start)  # NaN, +-inf, 1e20: outside what a datetime holds
            except (ValueError, OverflowError, OSError) as exc:
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

    @app.get("/", summary="Status page (HTML)", response_class=HTMLResponse, responses=_errors(400, 404))
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
        refresh = max(5, min(300, int(current[0].evaluation_interval)))
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
                    "source": dict(h.source)
                    | ({"store": h.receiver.stats()} if h.receiver is not None else {}),
                    "ready": latest is not None,
                    "last_evaluation": format_time(latest.time) if latest is not None else None,
                    "binding": latest.binding if latest is not None else None,
                    "decision": latest.decision if latest is not None else None,
                    "evaluations": {"success": successes, "error": errors},
                }
            )
        return JSONResponse({"pipelines": out})

    return app


def _policy(config: Config) -> SecurityPolicy:
    return SecurityPolicy(
        token=config.auth_token, max_body_bytes=config.max_body_bytes, protect_reads=config.protect_reads
    )


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

    insecure = bool(getattr(args, "insecure", False))
    try:
        config = build_config(args, os.environ)
        check_exposure(config.host, config.auth_token is not None, insecure)
    except (ConfigError, ValueError) as exc:
        print(f"csf serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    app = create_app(config, loader=lambda: build_config(args, os.environ), insecure=insecure)
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
            "shard": str(config.shard) if config.shard is not None else "-",
            "data_dir": str(config.data_dir),
            "state": app.state.runner.state.display if app.state.runner.state is not None else "-",
            "auth": config.auth_token_origin or "none",
            "config": config.path or "-",
        },
    )
    if config.auth_token is None and insecure:
        log.warning(
            "no auth token: write, reload and admin endpoints are open to anyone who can reach the listener",
            extra={"address": f"{config.host}:{config.port}"},
        )

    def on_sighup(*_: object) -> None:
        def run() -> None:
            status, body = app.state.reload()
            if status != 200:
                log.error("SIGHUP reload failed", extra={"error": body.get("error", "")})

        threading.Thread(target=run, name="csf-reload", daemon=True).start()

    previous_hup = signal.signal(signal.SIGHUP, on_sighup)
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
        signal.signal(signal.SIGHUP, previous_hup)
    if not server.started:
        return 1
    log.info("stopped")
    return 0


__all__ = [
    "KeyValueFormatter",
    "build_config",
    "configure_logging",
    "create_app",
    "open_state",
    "select_push_pipeline",
    "serve_cli",
]
