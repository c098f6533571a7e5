"""The service configuration as a model: `Config`, its pipelines and sources, `ConfigError`.

Read by `detector.service.config.load_config` (file, then environment, then flags); every value
here has been validated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detector.decision.pipeline import DEFAULT_EVALUATION_INTERVAL
from detector.errors import SpecError
from detector.spec.pack import Pack
from detector.timefmt import format_time

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9466
DEFAULT_DATA_DIR = ".csf"

DEFAULT_PIPELINE = "default"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

ENV_VARS: dict[str, str] = {
    "host": "CSF_HOST",
    "port": "CSF_PORT",
    "data_dir": "CSF_DATA_DIR",
    "evaluation_interval": "CSF_EVALUATION_INTERVAL",
    "log_level": "CSF_LOG_LEVEL",
    "pack": "CSF_PACK",
    "scenario": "CSF_SCENARIO",
    "seed": "CSF_SEED",
    "speed": "CSF_SPEED",
    "shard": "CSF_SHARD",
    "state_url": "CSF_STATE_URL",
    "max_body_bytes": "CSF_MAX_BODY_BYTES",
    "alertmanager_url": "CSF_ALERTMANAGER_URL",
}
"""Setting -> environment variable. The same keys are accepted as CLI overrides."""


class ConfigError(SpecError):
    """The configuration is invalid. `problems` lists every problem found (file values as
    ``path:line:column: field: message``, then environment variables, flags, packs); the
    message is one problem per line."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def shard_of(pipeline: str, count: int) -> int:
    """The shard (0..count-1) that owns `pipeline`: SHA-256 of the UTF-8 name, as a big-endian
    integer, modulo `count`. Stable across processes, hosts and versions (unlike `hash()`)."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    return int.from_bytes(hashlib.sha256(pipeline.encode("utf-8")).digest(), "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: this process evaluates only the pipelines it owns."""

    index: int
    count: int

    def owns(self, pipeline: str) -> bool:
        return shard_of(pipeline, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


DEFAULT_ALERTMANAGER_RESEND = 60.0
DEFAULT_ALERTMANAGER_TIMEOUT = 5.0


@dataclass(frozen=True)
class AlertmanagerConfig:
    """Push mode: after every evaluation each pipeline's alerts are sent to Alertmanager
    (`exporters.alertmanager.AlertmanagerPusher`, state in ``<data_dir>/alertmanager``)."""

    url: str
    """Base URL of Alertmanager (``/api/v2/alerts`` is appended)."""
    resend_interval: float = DEFAULT_ALERTMANAGER_RESEND
    timeout: float = DEFAULT_ALERTMANAGER_TIMEOUT
    runbook_base_url: str | None = None
    """Base of the runbook links (None: the rules generator's placeholder)."""


@dataclass(frozen=True)
class SimulatorSource:
    """The embedded simulator: plays a scenario into an in-process sample store."""

    scenario: str = "sequence"
    seed: int = 1
    speed: float = 1.0
    """Simulated seconds per wall-clock second."""
    interval: float = 60.0
    """Simulated sample interval in seconds."""
    type: Literal["simulator"] = "simulator"

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "scenario": self.scenario,
            "seed": self.seed,
            "speed": self.speed,
            "interval": self.interval,
        }


REDACTED = "<redacted>"
"""How a secret is shown by `describe()` (API, logs): present, but not what it is."""


@dataclass(frozen=True)
class PrometheusSourceConfig:
    """A Prometheus-compatible query API (Prometheus, Thanos, Mimir/Cortex, VictoriaMetrics),
    read by `detector.source.prometheus_api.PrometheusSource` at wall-clock time.

    Secrets (`bearer_token`, `basic_auth_password`) are kept out of ``repr`` and shown by
    `describe` as ``<redacted>``; a password file is read when the configuration is
    loaded (so a reload picks up a rotated password), a bearer token file on every request.
    """

    url: str
    timeout: float = 10.0
    """Seconds per HTTP request (also sent as the query ``timeout``)."""
    retries: int = 2
    """Retries of a failed request (5xx, 429, connection errors), with exponential backoff."""
    bearer_token: str | None = field(default=None, repr=False)
    bearer_token_file: str | None = None
    basic_auth_username: str | None = None
    basic_auth_password: str | None = field(default=None, repr=False)
    basic_auth_password_file: str | None = None
    """Where the password came from (None: given inline); the password itself is `basic_auth_password`."""
    tenant: str | None = None
    """Sent as ``X-Scope-OrgID`` (Mimir, Cortex, Loki-style multi-tenancy)."""
    tls_verify: bool = True
    replay_from: float | None = None
    """Replay mode: the pipeline's clock starts at this time (unix seconds) instead of now..."""
    replay_speed: float = 1.0
    """...and runs this many times faster than the wall clock (history watched as if live)."""
    type: Literal["prometheus"] = "prometheus"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "url": self.url,
            "timeout": self.timeout,
            "retries": self.retries,
        }
        if self.bearer_token is not None:
            out["bearer_token"] = REDACTED
        if self.bearer_token_file is not None:
            out["bearer_token_file"] = self.bearer_token_file
        if self.basic_auth_username is not None:
            auth: dict[str, Any] = {"username": self.basic_auth_username, "password": REDACTED}
            if self.basic_auth_password_file is not None:
                auth["password_file"] = self.basic_auth_password_file
            out["basic_auth"] = auth
        if self.tenant is not None:
            out["tenant"] = self.tenant
        out["tls_verify"] = self.tls_verify
        if self.replay_from is not None:
            out["replay"] = {"from": format_time(self.replay_from), "speed": self.replay_speed}
        return out


DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class PushSourceConfig:
    """Samples pushed to csf: Prometheus remote_write (``POST /api/v1/write``) and OTLP/HTTP
    (``POST /v1/metrics``) into the pipeline's own sample store, kept in memory and, with
    `wal`, in a write-ahead log under ``<data_dir>/push/<pipeline>`` (`detector.source.wal`)."""

    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    """Largest decompressed request accepted (snappy/gzip bombs are refused with 413)."""
    wal: bool = True
    """Log every accepted sample before acknowledging it, and replay the log at start."""
    wal_fsync: bool = False
    """fsync the log before each acknowledgement (survives power loss; one disk flush per request)."""
    type: Literal["push"] = "push"

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "endpoints": ["/api/v1/write", "/v1/metrics"],
            "max_decoded_bytes": self.max_decoded_bytes,
            "wal": self.wal,
            "wal_fsync": self.wal_fsync,
        }


SourceConfig = SimulatorSource | PrometheusSourceConfig | PushSourceConfig
"""Union of source configurations; each type has a parser in `_SOURCE_PARSERS`."""


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    pack: Pack
    source: SourceConfig
    pack_path: str | None = None
    """The pack file, or None for the built-in default pack."""


@dataclass(frozen=True)
class Config:
    pipelines: tuple[PipelineConfig, ...]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    evaluation_interval: float = DEFAULT_EVALUATION_INTERVAL
    """Wall-clock seconds between evaluations of each pipeline."""
    log_level: str = "info"
    path: str | None = None
    """The config file this came from (None: defaults, environment and flags only)."""
    shard: Shard | None = None
    """The shard this process serves (`pipelines` holds only its pipelines); None: all."""
    state_url: str | None = field(default=None, repr=False)
    """``sqlite:///path`` or ``postgresql://...`` (may hold a password); None: <data_dir>/csf.db."""
    auth_token: str | None = field(default=None, repr=False)
    """Bearer token required by write/reload/admin endpoints (None: no authentication)."""
    auth_token_origin: str | None = None
    """Where the token came from (safe to log), e.g. ``environment variable CSF_AUTH_TOKEN``."""
    protect_reads: bool = False
    """With a token: the read endpoints need it too (the probes /healthz and /readyz never do)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted (413 above)."""
    alertmanager: AlertmanagerConfig | None = None
    """Push mode (None: off; Prometheus evaluates the generated rules instead)."""

    def pipeline(self, name: str) -> PipelineConfig:
        for p in self.pipelines:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def pipeline_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pipelines)

