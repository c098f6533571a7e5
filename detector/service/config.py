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
    pipelines:
      - name: default
        pack: packs/my-pack.yaml  # omitted: the built-in default pack
        source:
          type: simulator         # the only source type for now
          scenario: sequence
          seed: 1
          speed: 1.0              # simulated seconds per wall-clock second
          interval: 60s           # simulated sample interval

``csf serve`` also reads the file path from ``CSF_CONFIG`` when ``--config`` is not given.
The pipeline-level overrides (``CSF_PACK``/``--pack``, ``CSF_SCENARIO``/``--scenario``,
``CSF_SEED``/``--seed``, ``CSF_SPEED``/``--speed``) apply to every pipeline; the
simulator ones to every pipeline whose source is a simulator (an error when none is).
An empty environment variable is an error, not "unset".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from detector.pack import Pack
from detector.timefmt import parse_duration

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9466
DEFAULT_DATA_DIR = ".csf"
DEFAULT_EVALUATION_INTERVAL = 60.0
DEFAULT_PIPELINE = "default"

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
}
"""Setting -> environment variable. The same keys are accepted as CLI overrides."""

_PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(Exception):
    """The configuration is invalid; the message names the file/line, variable or flag."""


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


SourceConfig = SimulatorSource
"""Union of source configurations. A Prometheus source (url, ...) joins here and in `_SOURCE_PARSERS`."""


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
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return float(value)


def _check_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 60s, 5m or a number of seconds")
    seconds = parse_duration(value)  # ValueError names the text
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def _check_log_level(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return value.strip().lower()


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
}


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
        return self._constructor.construct_object(node, deep=True)

    def value(self, node: Node, field: str, check: Callable[[Any], Any]) -> Any:
        raw = self.scalar(node, field)
        try:
            return check(raw)
        except ValueError as exc:
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


_SOURCE_PARSERS: dict[str, Callable[[_File, Node, str], SourceConfig]] = {
    "simulator": _parse_simulator,
}
"""Source type -> parser. A `prometheus` source ({url, ...}) registers here."""


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


def _origin_env(var: str, value: str) -> str:
    return f"environment variable {var}={value!r}"


def _origin_flag(key: str, value: Any) -> str:
    return f"--{key.replace('_', '-')} {value!r}"


def load_config(
    path: str | Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the service configuration: defaults < file `path` < `env` (CSF_*) < `overrides` (CLI).

    `overrides` keys are those of `ENV_VARS` (host, port, data_dir, evaluation_interval,
    log_level, pack, scenario, seed, speed); None values mean "not given". Every pack is
    loaded and every simulator scenario checked. Raises ConfigError.
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
    }
    pipelines = [_Pipeline(DEFAULT_PIPELINE, None, "pack", _Source(SimulatorSource(), "source"), "pipeline")]
    file_name: str | None = None

    # 1. the file
    if path is not None:
        f = _File(Path(path))
        file_name = f.name
        if f.root is not None:
            top = f.mapping(
                f.root, "", ("host", "port", "data_dir", "evaluation_interval", "log_level", "pipelines")
            )
            for key in ("host", "port", "evaluation_interval", "log_level"):
                if key in top:
                    settings[key] = f.value(top[key][1], key, _CHECKS[key])
            if "data_dir" in top:
                settings["data_dir"] = f.path_value(top["data_dir"][1], "data_dir")
            if "pipelines" in top:
                pipelines = _parse_pipelines(f, top["pipelines"][1])

    # 2. environment, then 3. command line: the same checks, different origins
    layered: list[tuple[str, Any, str]] = []
    for key, var in ENV_VARS.items():
        if var in env:
            layered.append((key, env[var], _origin_env(var, env[var])))
    for key, value in overrides.items():
        if value is not None:
            layered.append((key, value, _origin_flag(key, value)))

    pipeline_overrides: dict[str, tuple[Any, str]] = {}
    for key, raw, origin in layered:
        try:
            value = _CHECKS[key](raw)
        except ValueError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        if key in ("pack", "scenario", "seed", "speed"):
            pipeline_overrides[key] = (value, origin)
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

    # 4. packs and scenarios: everything is loaded before the service starts
    built = tuple(_build_pipeline(p) for p in pipelines)
    return Config(
        pipelines=built,
        host=settings["host"],
        port=settings["port"],
        data_dir=Path(settings["data_dir"]).expanduser(),
        evaluation_interval=settings["evaluation_interval"],
        log_level=settings["log_level"],
        path=file_name,
    )


def _build_pipeline(p: _Pipeline) -> PipelineConfig:
    from detector.packload import PackError, default_pack, load_pack

    try:
        pack = default_pack() if p.pack_path is None else load_pack(p.pack_path)
    except PackError as exc:
        where = p.pack_where if p.pack_path is not None else f"{p.name}: built-in pack"
        raise ConfigError(f"{where}: invalid pack: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p.pack_where}: cannot read pack {p.pack_path}: {exc.strerror or exc}") from None
    src = p.source.config
    if isinstance(src, SimulatorSource):
        from detector.simulator import SCENARIOS

        if src.scenario not in SCENARIOS:
            raise ConfigError(
                f"{p.source.where}: unknown simulator scenario {src.scenario!r} (known: {', '.join(sorted(SCENARIOS))})"
            )
    return PipelineConfig(name=p.name, pack=pack, source=src, pack_path=p.pack_path)


__all__ = [
    "ENV_VARS",
    "LOG_LEVELS",
    "Config",
    "ConfigError",
    "PipelineConfig",
    "SimulatorSource",
    "SourceConfig",
    "load_config",
]
