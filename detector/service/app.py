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

The endpoints live in `detector.service.routes_admin` (metrics, reload),
`detector.service.routes_ingest` (push) and `detector.service.routes_api` (probes, read
API, status page); `create_app` assembles them around one `Runner`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry

from detector import __version__
from detector.service import routes_admin, routes_api
from detector.service.auth import SecurityMiddleware
from detector.service.config import Config
from detector.service.reloader import ConfigReloader
from detector.service.responses import bad_request
from detector.service.routes_ingest import add_push_routes
from detector.service.runner import Runner
from detector.service.state import StateStore
from exporters.collector import EvaluationCollector
from exporters.selfmetrics import ServiceMetrics

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


def open_state(config: Config) -> StateStore:
    """The state store of `config`: ``state_url`` when set, else SQLite in ``data_dir``."""
    if config.state_url is not None:
        return StateStore(url=config.state_url)
    return StateStore(config.data_dir)


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
    admin_metrics = runner.metrics.admin()

    app = FastAPI(
        title="csf",
        version=__version__,
        description="Constraint-sequence detector: the one binding constraint of a platform, live.",
        lifespan=_lifespan(runner),
    )
    reloader = ConfigReloader(app.state, runner, admin_metrics, config, loader=loader, insecure=insecure)
    app.state.runner = runner
    app.state.registry = registry
    app.state.reload = reloader
    app.add_middleware(
        SecurityMiddleware,
        policy=lambda: reloader.policy,
        on_denied=lambda reason: admin_metrics.denied.labels(reason).inc(),
    )
    app.state.config = config
    app.exception_handler(RequestValidationError)(bad_request)
    routes_admin.add_routes(app.router)
    add_push_routes(app, runner)
    routes_api.add_routes(app.router)
    return app


def _lifespan(runner: Runner) -> Callable[[FastAPI], Any]:
    """Start `runner` with the app and stop it (closing the state database) at shutdown."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if runner.state is not None and runner.state.open_error is not None:
            log.error(
                "state database unavailable; evaluations continue unrecorded",
                extra={"error": str(runner.state.open_error)},
            )
        runner.start()
        try:
            yield
        finally:
            await asyncio.to_thread(runner.stop)

    return lifespan


# --------------------------------------------------------------------------- serving


def serve(config: Config, loader: Callable[[], Config] | None, insecure: bool = False) -> int:
    """Serve `config` until SIGTERM/SIGINT: 0 after a graceful shutdown, 1 when serving failed.
    SIGHUP reloads from `loader` (the command line re-read with the current environment)."""
    configure_logging(config.log_level)
    app = create_app(config, loader=loader, insecure=insecure)
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
    _log_start(config, app, insecure)

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


def _log_start(config: Config, app: FastAPI, insecure: bool) -> None:
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


__all__ = [
    "KeyValueFormatter",
    "configure_logging",
    "create_app",
    "open_state",
    "serve",
]
