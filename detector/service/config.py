"""Service configuration: one YAML file, then ``CSF_*`` environment variables, then CLI flags.

Precedence (later wins): built-in defaults < config file < environment < command line.
Every value is validated where it enters, and every error names its origin:

* file values as ``path:line:column: field: message`` (the same shape as pack errors),
* environment values as ``environment variable CSF_PORT='abc': message``,
* command-line values as ``--port 'abc': message``.

Packs are loaded and validated here, so a service never starts half-configured.

File layout (every key optional; unknown keys are errors)::

    host: 127.0.0.1
    port: 9466
    data_dir: ./.csf              # relative paths in the file resolve against the file's directory
    evaluation_interval: 60s
    log_level: info               # debug | info | warning | error
    shard: 0/2                    # evaluate only this shard's pipelines (see `Shard`); default: all
    max_body_bytes: 16777216      # requests with a larger body are refused with 413
    state:
      url: sqlite:///csf.db       # or postgresql://user@host/db; default: <data_dir>/csf.db
    auth:
      token_file: /run/secrets/csf-token   # Bearer token for write/reload/admin endpoints
      protect_reads: false        # true: the read API and /metrics need the token too
    alertmanager:                 # optional push mode: csf sends its alerts to Alertmanager itself
      url: http://127.0.0.1:9093  # or CSF_ALERTMANAGER_URL (which also turns push mode on)
      resend_interval: 1m         # active alerts are re-sent this often (they expire after 4x)
      timeout: 5s                 # per HTTP request
      runbook_base_url: https://runbooks.example.com/csf/   # where deploy/runbooks/ is published
    pipelines:
      - name: default
        pack: packs/my-pack.yaml  # omitted: the built-in default pack
        source:
          type: simulator         # simulator | prometheus | push
          scenario: sequence
          seed: 1
          speed: 1.0              # simulated seconds per wall-clock second
          interval: 60s           # simulated sample interval
      - name: prod
        source:
          type: prometheus        # a Prometheus-compatible query API, read at wall-clock time
          url: http://prometheus:9090   # no credentials in the URL: use the keys below
          timeout: 10s            # per request
          retries: 2              # of 5xx/429/connection failures, exponential backoff
          bearer_token_file: /run/secrets/prom-token   # or bearer_token: ..., or basic_auth:
          # basic_auth: {username: csf, password_file: /run/secrets/prom-password}  # or password:
          tenant: team-a          # sent as X-Scope-OrgID (Mimir, Cortex)
          tls_verify: true
          # replay: {from: 2026-11-20T00:00:00Z, speed: 60}   # watch history as if live (docs/ingestion.md)
      - name: pushed
        source:
          type: push              # fed by POST /api/v1/write (remote_write) and POST /v1/metrics (OTLP)
          max_decoded_bytes: 67108864   # largest decompressed request (413 above)

Source details, routing of pushed samples and retention: docs/ingestion.md.

``csf serve`` also reads the file path from ``CSF_CONFIG`` when ``--config`` is not given.
The pipeline-level overrides (``CSF_PACK``/``--pack``, ``CSF_SCENARIO``/``--scenario``,
``CSF_SEED``/``--seed``, ``CSF_SPEED``/``--speed``) apply to every pipeline; the
simulator ones to every pipeline whose source is a simulator (an error when none is).
``CSF_SHARD``/``--shard i/n`` (or ``shard:`` in the file) keeps only the pipelines whose
stable hash falls in shard i of n (see `shard_of`); a shard that owns none is an error.
An empty environment variable is an error, not "unset".

Secrets: the auth token comes from ``CSF_AUTH_TOKEN``, else the file named by
``CSF_AUTH_TOKEN_FILE``, else ``auth.token_file`` (rules in `detector.service.auth`);
``CSF_STATE_URL`` (or ``state.url``) may hold a database password. Neither is ever part
of an error message, a log line or the ``repr`` of `Config`. There is no command-line
flag for either (command lines are visible to every local user). The same holds for a
Prometheus source's ``bearer_token`` and basic-auth password (``describe()`` shows them
as ``<redacted>``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from detector.decision.pipeline import DEFAULT_EVALUATION_INTERVAL
from detector.errors import SpecError
from detector.spec.pack import Pack
from detector.timefmt import parse_duration

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

_PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(SpecError):
    """The configuration is invalid; the message names the file/line, variable or flag."""


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
            from detector.timefmt import format_time

            out["replay"] = {"from": format_time(self.replay_from), "speed": self.replay_speed}
        return out


DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class PushSourceConfig:
    """Samples pushed to csf: Prometheus remote_write (``POST /api/v1/write``) and OTLP/HTTP
    (``POST /v1/metrics``) into the pipeline's own in-memory sample store."""

    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    """Largest decompressed request accepted (snappy/gzip bombs are refused with 413)."""
    type: Literal["push"] = "push"

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "endpoints": ["/api/v1/write", "/v1/metrics"],
            "max_decoded_bytes": self.max_decoded_bytes,
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


# --------------------------------------------------------------------------- value checks
# Each check takes the raw value (a YAML scalar, or a string from the environment/CLI)
# and returns the typed value or raises ValueError with a message that completes
# "<origin>: ...".


def _check_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _check_int(value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError("must be an integer") from None
    if not isinstance(value, int):
        raise ValueError("must be an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"must be between {lo} and {hi}")
    return value


def _check_port(value: Any) -> int:
    return _check_int(value, 1, 65535)


def _check_seed(value: Any) -> int:
    return _check_int(value, 0, 2**63 - 1)


def _check_positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a positive number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("must be a positive number") from None
    try:
        ok = isinstance(value, int | float) and math.isfinite(value) and value > 0
    except OverflowError:  # an integer beyond the float range
        ok = False
    if not ok:
        raise ValueError("must be a positive number")
    return float(value)


def _check_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 60s, 5m or a number of seconds")
    try:
        seconds = parse_duration(value)  # ValueError names the text
    except OverflowError:  # an integer beyond the float range
        raise ValueError("must be a positive duration") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def _check_log_level(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return value.strip().lower()


def _check_shard(value: Any) -> Shard:
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if m is None:
        raise ValueError("must be INDEX/COUNT, e.g. 0/2 (shard INDEX of COUNT, counting from 0)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise ValueError("the shard count must be at least 1")
    if index >= count:
        raise ValueError(f"the shard index must be between 0 and {count - 1}")
    return Shard(index, count)


def _check_state_url(value: Any) -> str:
    from detector.service.state import parse_state_url

    if not isinstance(value, str):
        raise ValueError("must be a URL: sqlite:///path or postgresql://user@host/db")
    location = parse_state_url(value)  # its ValueError never quotes a password
    if location.backend == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            raise ValueError(
                "a PostgreSQL state URL needs the psycopg package (pip install 'psycopg[binary]')"
            )
    return value.strip()


def _check_max_body_bytes(value: Any) -> int:
    return _check_int(value, 1024, 1 << 30)


def _check_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false")


def _check_http_url(value: Any) -> str:
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an http:// or https:// URL")
    text = value.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("must be an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return text


def _check_pipeline_name(value: Any) -> str:
    if not isinstance(value, str) or not _PIPELINE_NAME.match(value):
        raise ValueError(
            "must be 1-64 characters of letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "host": _check_str,
    "port": _check_port,
    "data_dir": _check_str,
    "evaluation_interval": _check_duration,
    "log_level": _check_log_level,
    "pack": _check_str,
    "scenario": _check_str,
    "seed": _check_seed,
    "speed": _check_positive_float,
    "shard": _check_shard,
    "state_url": _check_state_url,
    "max_body_bytes": _check_max_body_bytes,
    "alertmanager_url": _check_http_url,
}

_SECRET_SETTINGS = frozenset({"state_url"})
"""Settings whose value may hold a password: error messages show them redacted."""


# --------------------------------------------------------------------------- YAML walking


class _File:
    """A config file parsed to YAML nodes, so every error can name its line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {self.name}: not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {self.name}: cannot read: {exc}") from None
        try:
            self.root: Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{self.name}{line}: invalid YAML: {problem}") from None
        self._constructor = yaml.SafeLoader("")

    def error(self, node: Node, field: str, message: str) -> ConfigError:
        mark = node.start_mark
        return ConfigError(f"{self.name}:{mark.line + 1}:{mark.column + 1}: {field}: {message}")

    def mapping(self, node: Node, field: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        """key -> (key node, value node); rejects non-mappings, duplicate and unknown keys."""
        if not isinstance(node, MappingNode):
            raise self.error(node, field or "<top level>", "must be a mapping")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                raise self.error(key_node, field or "<top level>", "keys must be strings")
            if key in out:
                raise self.error(key_node, where, "duplicate key")
            if key not in allowed:
                raise self.error(key_node, where, f"unknown key (known: {', '.join(sorted(allowed))})")
            out[key] = (key_node, value_node)
        return out

    def scalar(self, node: Node, field: str) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.error(node, field, "must be a single value")
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:  # an unknown or mistyped tag: !foo, !!int abc, !!binary zz
            raise self.error(node, field, f"invalid value: {exc.problem}") from None
        except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise ValueError, KeyError,
            # AttributeError, OverflowError... on mistyped explicit tags (!!bool maybe, !!timestamp x)
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.error(node, field, f"invalid {tag} value {shown!r} ({type(exc).__name__})") from None

    def value(self, node: Node, field: str, check: Callable[[Any], Any]) -> Any:
        raw = self.scalar(node, field)
        try:
            return check(raw)
        except (ValueError, OverflowError) as exc:
            raise self.error(node, field, str(exc)) from None

    def path_value(self, node: Node, field: str) -> str:
        """A path: relative paths resolve against the config file's directory."""
        text = self.value(node, field, _check_str)
        p = Path(text).expanduser()
        return str(p if p.is_absolute() else self.path.parent / p)


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class _Source:
    """A source configuration before packs/scenarios are checked."""

    config: SourceConfig
    where: str


@dataclass(frozen=True)
class _Pipeline:
    name: str
    pack_path: str | None
    pack_where: str
    """Origin of the pack path, for error messages."""
    source: _Source
    where: str


def _line_col(node: Node) -> str:
    return f"{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _parse_simulator(f: _File, node: Node, field: str) -> SimulatorSource:
    keys = f.mapping(node, field, ("type", "scenario", "seed", "speed", "interval"))
    src = SimulatorSource()
    if "scenario" in keys:
        src = replace(src, scenario=f.value(keys["scenario"][1], f"{field}.scenario", _check_str))
    if "seed" in keys:
        src = replace(src, seed=f.value(keys["seed"][1], f"{field}.seed", _check_seed))
    if "speed" in keys:
        src = replace(src, speed=f.value(keys["speed"][1], f"{field}.speed", _check_positive_float))
    if "interval" in keys:
        src = replace(src, interval=f.value(keys["interval"][1], f"{field}.interval", _check_duration))
    return src


def _check_timeout(value: Any) -> float:
    seconds = _check_duration(value)
    if seconds > 600:
        raise ValueError("must be at most 10m")
    return seconds


def _check_retries(value: Any) -> int:
    return _check_int(value, 0, 10)


def _check_secret(value: Any) -> str:
    """A non-empty string; the message never quotes the value."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value.strip()):
        raise ValueError("must not contain control characters")
    return value.strip()


def _check_header_value(value: Any) -> str:
    text = _check_str(value)
    if any(not (0x20 <= ord(ch) <= 0x7E) for ch in text):
        raise ValueError("must be printable ASCII (it is sent as an HTTP header)")
    return text


def _secret_file(f: _File, node: Node, field: str) -> tuple[str, str]:
    """(resolved path, stripped content) of a secret file; errors never quote the content."""
    path = f.path_value(node, field)
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise f.error(node, field, f"file {path} not found") from None
    except UnicodeDecodeError:
        raise f.error(node, field, f"file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise f.error(node, field, f"cannot read {path}: {exc.strerror or exc}") from None
    if not text:
        raise f.error(node, field, f"file {path} is empty")
    return path, text


def _parse_prometheus(f: _File, node: Node, field: str) -> PrometheusSourceConfig:
    keys = f.mapping(
        node,
        field,
        (
            "type",
            "url",
            "timeout",
            "retries",
            "bearer_token",
            "bearer_token_file",
            "basic_auth",
            "tenant",
            "tls_verify",
            "replay",
        ),
    )
    if "url" not in keys:
        raise f.error(
            node, f"{field}.url", "missing (the base URL of the query API, e.g. http://prometheus:9090)"
        )
    url = f.value(keys["url"][1], f"{field}.url", _check_http_url).rstrip("/")
    src = PrometheusSourceConfig(url=url)
    if "timeout" in keys:
        src = replace(src, timeout=f.value(keys["timeout"][1], f"{field}.timeout", _check_timeout))
    if "retries" in keys:
        src = replace(src, retries=f.value(keys["retries"][1], f"{field}.retries", _check_retries))
    if "bearer_token" in keys and "bearer_token_file" in keys:
        raise f.error(
            keys["bearer_token_file"][0],
            f"{field}.bearer_token_file",
            "give bearer_token or bearer_token_file, not both",
        )
    if "bearer_token" in keys:
        src = replace(
            src, bearer_token=f.value(keys["bearer_token"][1], f"{field}.bearer_token", _check_secret)
        )
    if "bearer_token_file" in keys:
        path, _ = _secret_file(f, keys["bearer_token_file"][1], f"{field}.bearer_token_file")
        src = replace(src, bearer_token_file=path)
    if "basic_auth" in keys:
        key_node, auth_node = keys["basic_auth"]
        if "bearer_token" in keys or "bearer_token_file" in keys:
            raise f.error(key_node, f"{field}.basic_auth", "give a bearer token or basic_auth, not both")
        where = f"{field}.basic_auth"
        auth = f.mapping(auth_node, where, ("username", "password", "password_file"))
        if "username" not in auth:
            raise f.error(auth_node, f"{where}.username", "missing")
        username = f.value(auth["username"][1], f"{where}.username", _check_header_value)
        if ("password" in auth) == ("password_file" in auth):
            raise f.error(auth_node, f"{where}.password", "give exactly one of password and password_file")
        password_file: str | None = None
        if "password" in auth:
            password = f.value(auth["password"][1], f"{where}.password", _check_secret)
        else:
            password_file, password = _secret_file(f, auth["password_file"][1], f"{where}.password_file")
        src = replace(
            src,
            basic_auth_username=username,
            basic_auth_password=password,
            basic_auth_password_file=password_file,
        )
    if "tenant" in keys:
        src = replace(src, tenant=f.value(keys["tenant"][1], f"{field}.tenant", _check_header_value))
    if "tls_verify" in keys:
        src = replace(src, tls_verify=f.value(keys["tls_verify"][1], f"{field}.tls_verify", _check_bool))
    if "replay" in keys:
        where = f"{field}.replay"
        replay = f.mapping(keys["replay"][1], where, ("from", "speed"))
        if "from" not in replay:
            raise f.error(keys["replay"][1], f"{where}.from", "missing (the RFC3339 time the replay starts at)")
        src = replace(src, replay_from=f.value(replay["from"][1], f"{where}.from", _check_time))
        if "speed" in replay:
            src = replace(src, replay_speed=f.value(replay["speed"][1], f"{where}.speed", _check_positive_float))
    return src


def _check_time(value: Any) -> float:
    import datetime as dt

    from detector.timefmt import parse_time

    if isinstance(value, dt.datetime):  # an unquoted YAML timestamp; naive means UTC
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be an RFC3339 time such as 2026-11-28T00:00:00Z")
    return parse_time(str(value)) if isinstance(value, str) else float(value)


def _check_max_decoded_bytes(value: Any) -> int:
    return _check_int(value, 1024, 1 << 31)


def _parse_push(f: _File, node: Node, field: str) -> PushSourceConfig:
    keys = f.mapping(node, field, ("type", "max_decoded_bytes"))
    src = PushSourceConfig()
    if "max_decoded_bytes" in keys:
        src = replace(
            src,
            max_decoded_bytes=f.value(
                keys["max_decoded_bytes"][1], f"{field}.max_decoded_bytes", _check_max_decoded_bytes
            ),
        )
    return src


_SOURCE_PARSERS: dict[str, Callable[[_File, Node, str], SourceConfig]] = {
    "simulator": _parse_simulator,
    "prometheus": _parse_prometheus,
    "push": _parse_push,
}
"""Source type -> parser."""


def _parse_source(f: _File, node: Node, field: str) -> SourceConfig:
    if not isinstance(node, MappingNode):
        raise f.error(node, field, "must be a mapping with a 'type'")
    kind_node = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "type"), None)
    if kind_node is None:
        raise f.error(node, f"{field}.type", f"missing (known: {', '.join(sorted(_SOURCE_PARSERS))})")
    kind = f.scalar(kind_node, f"{field}.type")
    if kind not in _SOURCE_PARSERS:
        raise f.error(
            kind_node,
            f"{field}.type",
            f"unknown source type {kind!r} (known: {', '.join(sorted(_SOURCE_PARSERS))})",
        )
    return _SOURCE_PARSERS[kind](f, node, field)


def _parse_pipelines(f: _File, node: Node) -> list[_Pipeline]:
    if not isinstance(node, SequenceNode) or not node.value:
        raise f.error(node, "pipelines", "must be a non-empty list")
    out: list[_Pipeline] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(node.value):
        field = f"pipelines[{i}]"
        keys = f.mapping(item, field, ("name", "pack", "source"))
        if "name" not in keys:
            raise f.error(item, f"{field}.name", "missing")
        name_node = keys["name"][1]
        name = f.value(name_node, f"{field}.name", _check_pipeline_name)
        if name in seen:
            raise f.error(
                name_node, f"{field}.name", f"duplicate pipeline name {name!r} (also pipelines[{seen[name]}])"
            )
        seen[name] = i
        pack_path: str | None = None
        pack_where = f"{field}.pack"
        if "pack" in keys:
            pack_node = keys["pack"][1]
            pack_path = f.path_value(pack_node, f"{field}.pack")
            pack_where = f"{f.name}:{_line_col(pack_node)}: {field}.pack"
        source: SourceConfig = SimulatorSource()
        source_where = f"{f.name}:{_line_col(item)}: {field}.source"
        if "source" in keys:
            src_node = keys["source"][1]
            source = _parse_source(f, src_node, f"{field}.source")
            scenario_node = next(
                (v for k, v in src_node.value if isinstance(k, ScalarNode) and k.value == "scenario"),
                src_node,
            )
            source_where = f"{f.name}:{_line_col(scenario_node)}: {field}.source.scenario"
        out.append(_Pipeline(name, pack_path, pack_where, _Source(source, source_where), field))
    return out


def _shown(key: str, value: Any) -> Any:
    if key not in _SECRET_SETTINGS or not isinstance(value, str):
        return value
    from detector.service.state import redact_url_safely

    return redact_url_safely(value)


def _origin_env(var: str, value: str, key: str = "") -> str:
    return f"environment variable {var}={_shown(key, value)!r}"


def _origin_flag(key: str, value: Any) -> str:
    return f"--{key.replace('_', '-')} {_shown(key, value)!r}"


def load_config(
    path: str | Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the service configuration: defaults < file `path` < `env` (CSF_*) < `overrides` (CLI).

    `overrides` keys are those of `ENV_VARS` (host, port, data_dir, evaluation_interval,
    log_level, pack, scenario, seed, speed, shard); None values mean "not given". Every pack is
    loaded and every simulator scenario checked (in every shard). Raises ConfigError.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(ENV_VARS))
    if unknown:
        raise ConfigError(f"unknown override(s): {', '.join(unknown)} (known: {', '.join(ENV_VARS)})")

    settings: dict[str, Any] = {
        "host": DEFAULT_HOST,
        "port": DEFAULT_PORT,
        "data_dir": DEFAULT_DATA_DIR,
        "evaluation_interval": DEFAULT_EVALUATION_INTERVAL,
        "log_level": "info",
        "state_url": None,
        "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
    }
    token_file: str | None = None
    token_file_origin = "auth.token_file"
    protect_reads = False
    pipelines = [_Pipeline(DEFAULT_PIPELINE, None, "pack", _Source(SimulatorSource(), "source"), "pipeline")]
    file_name: str | None = None
    shard: Shard | None = None
    shard_origin = ""
    alertmanager: AlertmanagerConfig | None = None
    alertmanager_node: Node | None = None

    # 1. the file
    if path is not None:
        f = _File(Path(path))
        file_name = f.name
        if f.root is not None:
            top = f.mapping(
                f.root,
                "",
                (
                    "host",
                    "port",
                    "data_dir",
                    "evaluation_interval",
                    "log_level",
                    "pipelines",
                    "shard",
                    "max_body_bytes",
                    "state",
                    "auth",
                    "alertmanager",
                ),
            )
            if "alertmanager" in top:
                alertmanager_node = top["alertmanager"][1]
                alertmanager = _parse_alertmanager(f, alertmanager_node)
            if "max_body_bytes" in top:
                settings["max_body_bytes"] = f.value(
                    top["max_body_bytes"][1], "max_body_bytes", _check_max_body_bytes
                )
            if "state" in top:
                settings["state_url"] = _parse_state(f, top["state"][1])
            if "auth" in top:
                token_file, token_file_origin, protect_reads = _parse_auth(f, top["auth"][1])
            for key in ("host", "port", "evaluation_interval", "log_level"):
                if key in top:
                    settings[key] = f.value(top[key][1], key, _CHECKS[key])
            if "data_dir" in top:
                settings["data_dir"] = f.path_value(top["data_dir"][1], "data_dir")
            if "pipelines" in top:
                pipelines = _parse_pipelines(f, top["pipelines"][1])
            if "shard" in top:
                shard_node = top["shard"][1]
                shard = f.value(shard_node, "shard", _check_shard)
                shard_origin = f"{f.name}:{_line_col(shard_node)}: shard"

    # 2. environment, then 3. command line: the same checks, different origins
    layered: list[tuple[str, Any, str]] = []
    for key, var in ENV_VARS.items():
        if var in env:
            layered.append((key, env[var], _origin_env(var, env[var], key)))
    for key, value in overrides.items():
        if value is not None:
            layered.append((key, value, _origin_flag(key, value)))

    pipeline_overrides: dict[str, tuple[Any, str]] = {}
    for key, raw, origin in layered:
        try:
            value = _CHECKS[key](raw)
        except (ValueError, OverflowError) as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        if key in ("pack", "scenario", "seed", "speed"):
            pipeline_overrides[key] = (value, origin)
        elif key == "shard":
            shard, shard_origin = value, origin
        elif key == "alertmanager_url":
            alertmanager = replace(alertmanager or AlertmanagerConfig(url=""), url=value)
        else:
            settings[key] = value

    if "pack" in pipeline_overrides:
        value, origin = pipeline_overrides["pack"]
        pipelines = [
            replace(p, pack_path=str(Path(value).expanduser()), pack_where=origin) for p in pipelines
        ]
    for key in ("scenario", "seed", "speed"):
        if key not in pipeline_overrides:
            continue
        value, origin = pipeline_overrides[key]
        if not any(isinstance(p.source.config, SimulatorSource) for p in pipelines):
            raise ConfigError(f"{origin}: no pipeline has a simulator source")
        pipelines = [
            replace(
                p,
                source=_Source(
                    replace(p.source.config, **{key: value}), origin if key == "scenario" else p.source.where
                ),
            )
            if isinstance(p.source.config, SimulatorSource)
            else p
            for p in pipelines
        ]

    # secrets: the auth token (environment first, then files)
    from detector.service.auth import load_token

    try:
        token = load_token(env, token_file, token_file_origin)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    if alertmanager is not None and not alertmanager.url:
        where = f"{file_name}:{_line_col(alertmanager_node)}: " if alertmanager_node is not None else ""
        raise ConfigError(f"{where}alertmanager.url: missing (set it here or in CSF_ALERTMANAGER_URL)")

    # 4. packs and scenarios: everything is loaded before the service starts
    built = tuple(_build_pipeline(p) for p in pipelines)
    if shard is not None:
        owned = tuple(p for p in built if shard.owns(p.name))
        if not owned:
            assignment = ", ".join(f"{p.name}->{shard_of(p.name, shard.count)}" for p in built)
            raise ConfigError(f"{shard_origin}: shard {shard} owns no pipeline (pipeline->shard: {assignment})")
        built = owned
    return Config(
        pipelines=built,
        host=settings["host"],
        port=settings["port"],
        data_dir=Path(settings["data_dir"]).expanduser(),
        evaluation_interval=settings["evaluation_interval"],
        log_level=settings["log_level"],
        path=file_name,
        shard=shard,
        state_url=settings["state_url"],
        auth_token=token.token if token is not None else None,
        auth_token_origin=token.origin if token is not None else None,
        protect_reads=protect_reads,
        max_body_bytes=settings["max_body_bytes"],
        alertmanager=alertmanager,
    )


def _parse_state(f: _File, node: Node) -> str:
    from detector.service.state import parse_state_url

    keys = f.mapping(node, "state", ("url",))
    if "url" not in keys:
        raise f.error(node, "state.url", "missing")
    url_node = keys["url"][1]
    url = f.value(url_node, "state.url", _check_state_url)
    location = parse_state_url(url, base=f.path.parent)
    if location.path is not None:  # relative SQLite paths resolve against the file's directory
        return f"sqlite:///{location.path}"
    return url


def _parse_alertmanager(f: _File, node: Node) -> AlertmanagerConfig:
    """The ``alertmanager:`` section; `url` may come from CSF_ALERTMANAGER_URL instead ('' here)."""
    keys = f.mapping(node, "alertmanager", ("url", "resend_interval", "timeout", "runbook_base_url"))
    out = AlertmanagerConfig(url="")
    if "url" in keys:
        out = replace(out, url=f.value(keys["url"][1], "alertmanager.url", _check_http_url))
    if "resend_interval" in keys:
        out = replace(
            out,
            resend_interval=f.value(
                keys["resend_interval"][1], "alertmanager.resend_interval", _check_duration
            ),
        )
    if "timeout" in keys:
        out = replace(out, timeout=f.value(keys["timeout"][1], "alertmanager.timeout", _check_duration))
    if "runbook_base_url" in keys:
        out = replace(
            out,
            runbook_base_url=f.value(
                keys["runbook_base_url"][1], "alertmanager.runbook_base_url", _check_http_url
            ),
        )
    return out


def _parse_auth(f: _File, node: Node) -> tuple[str | None, str, bool]:
    """(token file path or None, its origin for messages, protect_reads)."""
    keys = f.mapping(node, "auth", ("token_file", "protect_reads"))
    token_file: str | None = None
    origin = "auth.token_file"
    if "token_file" in keys:
        value_node = keys["token_file"][1]
        token_file = f.path_value(value_node, "auth.token_file")
        origin = f"{f.name}:{_line_col(value_node)}: auth.token_file"
    protect_reads = False
    if "protect_reads" in keys:
        protect_reads = f.value(keys["protect_reads"][1], "auth.protect_reads", _check_bool)
    return token_file, origin, protect_reads


def _build_pipeline(p: _Pipeline) -> PipelineConfig:
    from detector.spec.load import BUILTIN_PACKS, PackError, builtin_pack, default_pack, load_pack

    try:
        if p.pack_path is None:
            pack = default_pack()
        elif Path(p.pack_path).name in BUILTIN_PACKS and not Path(p.pack_path).exists():
            pack = builtin_pack(Path(p.pack_path).name)  # a built-in pack's name, e.g. --pack web-shop
        else:
            pack = load_pack(p.pack_path)
    except PackError as exc:
        where = p.pack_where if p.pack_path is not None else f"{p.name}: built-in pack"
        raise ConfigError(f"{where}: invalid pack: {exc}") from None
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL character
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{p.pack_where}: cannot read pack {p.pack_path}: {message}") from None
    src = p.source.config
    if isinstance(src, SimulatorSource):
        from detector.sim.simulator import SCENARIOS as VIDEO_SCENARIOS
        from detector.sim.web import SCENARIOS as WEB_SCENARIOS

        SCENARIOS = {**VIDEO_SCENARIOS, **WEB_SCENARIOS}

        if src.scenario not in SCENARIOS:
            raise ConfigError(
                f"{p.source.where}: unknown simulator scenario {src.scenario!r} (known: {', '.join(sorted(SCENARIOS))})"
            )
    return PipelineConfig(name=p.name, pack=pack, source=src, pack_path=p.pack_path)


__all__ = [
    "ENV_VARS",
    "AlertmanagerConfig",
    "LOG_LEVELS",
    "Config",
    "ConfigError",
    "PipelineConfig",
    "PrometheusSourceConfig",
    "PushSourceConfig",
    "Shard",
    "SimulatorSource",
    "SourceConfig",
    "load_config",
    "shard_of",
]
