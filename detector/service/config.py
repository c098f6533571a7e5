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
          wal: true               # log accepted samples under <data_dir>/push/<name>, replay at start
          wal_fsync: false        # true: fsync before each answer (survives power loss, slower)

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

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from detector.decision.pipeline import DEFAULT_EVALUATION_INTERVAL
from detector.service.auth import load_token
from detector.service.config_checks import SECRET_SETTINGS, SETTING_CHECKS
from detector.service.config_file import FileSettings, PipelineEntry, SourceEntry, read_config_file
from detector.service.config_model import (
    DEFAULT_DATA_DIR,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PIPELINE,
    DEFAULT_PORT,
    ENV_VARS,
    LOG_LEVELS,
    REDACTED,
    AlertmanagerConfig,
    Config,
    ConfigError,
    PipelineConfig,
    PrometheusSourceConfig,
    PushSourceConfig,
    Shard,
    SimulatorSource,
    SourceConfig,
    shard_of,
)
from detector.service.state import redact_url_safely
from detector.sim.scenarios import SCENARIOS as VIDEO_SCENARIOS
from detector.sim.web import SCENARIOS as WEB_SCENARIOS
from detector.spec.load import BUILTIN_PACKS, PackError, builtin_pack, default_pack, load_pack

SCENARIOS = {**VIDEO_SCENARIOS, **WEB_SCENARIOS}
"""Every simulator scenario a pipeline may play (the video platform's and the web shop's)."""


def _shown(key: str, value: Any) -> Any:
    if key not in SECRET_SETTINGS or not isinstance(value, str):
        return value
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
    loaded and every simulator scenario checked (in every shard). Raises ConfigError listing
    every problem: the file's (all of them, by line) when it has any; otherwise those of the
    environment, the flags, the packs and the scenarios together.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(ENV_VARS))
    if unknown:
        raise ConfigError(f"unknown override(s): {', '.join(unknown)} (known: {', '.join(ENV_VARS)})")
    file = read_config_file(Path(path)) if path is not None else FileSettings(name="")
    problems: list[str] = []
    layers = _Layers(file)
    layers.apply(_layered(env, overrides), problems)
    try:
        token = load_token(env, file.token_file, file.token_file_origin)
    except ValueError as exc:
        problems.append(str(exc))
        token = None
    if layers.alertmanager is not None and not layers.alertmanager.url:
        problems.append(
            f"{file.alertmanager_where}alertmanager.url: missing (set it here or in CSF_ALERTMANAGER_URL)"
        )
    built = []
    for p in layers.pipelines:
        try:
            built.append(_build_pipeline(p))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return _assemble(file, layers, tuple(built), token)


class _Layers:
    """The settings as the environment and the flags leave them on top of the file's."""

    def __init__(self, file: FileSettings) -> None:
        self.settings: dict[str, Any] = {
            "host": DEFAULT_HOST,
            "port": DEFAULT_PORT,
            "data_dir": DEFAULT_DATA_DIR,
            "evaluation_interval": DEFAULT_EVALUATION_INTERVAL,
            "log_level": "info",
            "state_url": None,
            "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
            **file.settings,
        }
        self.pipelines: list[PipelineEntry] = file.pipelines or [
            PipelineEntry(DEFAULT_PIPELINE, None, "pack", SourceEntry(SimulatorSource(), "source"), "pipeline")
        ]
        self.shard, self.shard_origin = file.shard, file.shard_origin
        self.alertmanager = file.alertmanager

    def apply(self, layered: list[tuple[str, Any, str]], problems: list[str]) -> None:
        """Apply environment then command-line values (the same checks, different origins)."""
        pipeline_overrides: dict[str, tuple[Any, str]] = {}
        for key, raw, origin in layered:
            try:
                value = SETTING_CHECKS[key](raw)
            except (ValueError, OverflowError) as exc:
                problems.append(f"{origin}: {exc}")
                continue
            if key in ("pack", "scenario", "seed", "speed"):
                pipeline_overrides[key] = (value, origin)
            elif key == "shard":
                self.shard, self.shard_origin = value, origin
            elif key == "alertmanager_url":
                self.alertmanager = replace(self.alertmanager or AlertmanagerConfig(url=""), url=value)
            else:
                self.settings[key] = value
        if "pack" in pipeline_overrides:
            value, origin = pipeline_overrides["pack"]
            self.pipelines = [
                replace(p, pack_path=str(Path(value).expanduser()), pack_where=origin) for p in self.pipelines
            ]
        for key in ("scenario", "seed", "speed"):
            if key in pipeline_overrides:
                self._simulator_override(key, *pipeline_overrides[key], problems)

    def _simulator_override(self, key: str, value: Any, origin: str, problems: list[str]) -> None:
        if not any(isinstance(p.source.config, SimulatorSource) for p in self.pipelines):
            problems.append(f"{origin}: no pipeline has a simulator source")
            return
        self.pipelines = [
            replace(
                p,
                source=SourceEntry(
                    replace(p.source.config, **{key: value}), origin if key == "scenario" else p.source.where
                ),
            )
            if isinstance(p.source.config, SimulatorSource)
            else p
            for p in self.pipelines
        ]


def _layered(env: Mapping[str, str], overrides: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(setting, raw value, origin) from the environment, then from the command line."""
    layered: list[tuple[str, Any, str]] = []
    for key, var in ENV_VARS.items():
        if var in env:
            layered.append((key, env[var], _origin_env(var, env[var], key)))
    for key, value in overrides.items():
        if value is not None:
            layered.append((key, value, _origin_flag(key, value)))
    return layered


def _assemble(
    file: FileSettings, layers: _Layers, built: tuple[PipelineConfig, ...], token: Any
) -> Config:
    shard = layers.shard
    if shard is not None:
        owned = tuple(p for p in built if shard.owns(p.name))
        if not owned:
            assignment = ", ".join(f"{p.name}->{shard_of(p.name, shard.count)}" for p in built)
            raise ConfigError(f"{layers.shard_origin}: shard {shard} owns no pipeline (pipeline->shard: {assignment})")
        built = owned
    settings = layers.settings
    return Config(
        pipelines=built,
        host=settings["host"],
        port=settings["port"],
        data_dir=Path(settings["data_dir"]).expanduser(),
        evaluation_interval=settings["evaluation_interval"],
        log_level=settings["log_level"],
        path=file.name or None,
        shard=shard,
        state_url=settings["state_url"],
        auth_token=token.token if token is not None else None,
        auth_token_origin=token.origin if token is not None else None,
        protect_reads=file.protect_reads,
        max_body_bytes=settings["max_body_bytes"],
        alertmanager=layers.alertmanager,
    )


def _build_pipeline(p: PipelineEntry) -> PipelineConfig:
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
    if isinstance(src, SimulatorSource) and src.scenario not in SCENARIOS:
        raise ConfigError(
            f"{p.source.where}: unknown simulator scenario {src.scenario!r} (known: {', '.join(sorted(SCENARIOS))})"
        )
    return PipelineConfig(name=p.name, pack=pack, source=src, pack_path=p.pack_path)


__all__ = [
    "ENV_VARS",
    "REDACTED",
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
