"""Reading the service's configuration file with the spec's YAML reader (`detector.spec.yamlnodes`).

Every problem in the file is collected (``path:line:column: field: message``, the words of
pack errors: unknown keys with "did you mean", duplicate keys with the line of the first), so
one run reports them all; a field with a problem is left out and the walk goes on. Only a YAML
syntax error stops the reading (nothing after it can be trusted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yaml import MarkedYAMLError, SafeLoader
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from detector.service.config_checks import (
    SETTING_CHECKS,
    check_bool,
    check_duration,
    check_header_value,
    check_http_url,
    check_max_body_bytes,
    check_max_decoded_bytes,
    check_pipeline_name,
    check_positive_float,
    check_retries,
    check_secret,
    check_seed,
    check_shard,
    check_state_url,
    check_str,
    check_time,
    check_timeout,
)
from detector.service.config_model import (
    AlertmanagerConfig,
    ConfigError,
    PrometheusSourceConfig,
    PushSourceConfig,
    Shard,
    SimulatorSource,
    SourceConfig,
)
from detector.service.state import parse_state_url
from detector.spec.yamlnodes import Collector, compose, did_you_mean, read_mapping

TOP_KEYS: tuple[str, ...] = (
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
)
PROMETHEUS_KEYS: tuple[str, ...] = (
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
)


class _Skip(Exception):
    """The value is invalid and already recorded: the caller leaves the field out."""


class ConfigFile:
    """A config file parsed to YAML nodes, so every problem can name its line."""

    def __init__(self, path: Path, issues: Collector) -> None:
        self.path = path
        self.name = str(path)
        self.issues = issues
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {self.name}: not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {self.name}: cannot read: {exc}") from None
        root, syntax = compose(text, self.name)
        if syntax is not None:
            raise ConfigError(str(syntax))
        self.root: Node | None = root
        self._constructor = SafeLoader("")

    def error(self, node: Node, field: str, message: str) -> _Skip:
        """Record a problem; raise the result to skip the field being read."""
        self.issues.error(node, field, message)
        return _Skip()

    @contextmanager
    def each(self) -> Iterator[None]:
        """Read one field: a problem inside is recorded and the walk goes on after the block."""
        try:
            yield
        except _Skip:
            pass

    def mapping(self, node: Node, field: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        """key -> (key node, value node) of the allowed keys; unknown and duplicate keys are recorded."""
        m = read_mapping(self.issues, node, field, allowed)
        if m is None:
            raise _Skip()
        return {key: (m.keys[key], value) for key, value in m.values.items()}

    def scalar(self, node: Node, field: str) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.error(node, field, "must be a single value")
        try:
            return self._constructor.construct_object(node, deep=True)
        except MarkedYAMLError as exc:  # an unknown or mistyped tag: !foo, !!int abc, !!binary zz
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
        text = self.value(node, field, check_str)
        p = Path(text).expanduser()
        return str(p if p.is_absolute() else self.path.parent / p)

    def where(self, node: Node) -> str:
        """``path:line:column`` of `node`, for messages about the node raised later (packs, shards)."""
        return f"{self.name}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


@dataclass(frozen=True)
class SourceEntry:
    """A source configuration before packs/scenarios are checked; `where` names its origin."""

    config: SourceConfig
    where: str


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    pack_path: str | None
    pack_where: str
    source: SourceEntry
    where: str


@dataclass
class FileSettings:
    """What the file sets (absent keys are absent here too)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    pipelines: list[PipelineEntry] | None = None
    shard: Shard | None = None
    shard_origin: str = ""
    alertmanager: AlertmanagerConfig | None = None
    alertmanager_where: str = ""
    token_file: str | None = None
    token_file_origin: str = "auth.token_file"
    protect_reads: bool = False


def read_config_file(path: Path) -> FileSettings:
    """Read the file at `path`; `ConfigError` listing every problem in it."""
    issues = Collector(str(path))
    f = ConfigFile(path, issues)
    out = FileSettings(name=f.name)
    if f.root is not None:
        with f.each():
            _read_top(f, f.mapping(f.root, "", TOP_KEYS), out)
    if issues.issues:
        raise ConfigError([str(i) for i in sorted(issues.issues, key=lambda i: (i.line, i.column))])
    return out


def _read_top(f: ConfigFile, top: dict[str, tuple[Node, Node]], out: FileSettings) -> None:
    if "alertmanager" in top:
        with f.each():
            node = top["alertmanager"][1]
            out.alertmanager = _parse_alertmanager(f, node)
            out.alertmanager_where = f"{f.where(node)}: "
    if "max_body_bytes" in top:
        with f.each():
            out.settings["max_body_bytes"] = f.value(top["max_body_bytes"][1], "max_body_bytes", check_max_body_bytes)
    if "state" in top:
        with f.each():
            out.settings["state_url"] = _parse_state(f, top["state"][1])
    if "auth" in top:
        with f.each():
            out.token_file, out.token_file_origin, out.protect_reads = _parse_auth(f, top["auth"][1])
    for key in ("host", "port", "evaluation_interval", "log_level"):
        if key in top:
            with f.each():
                out.settings[key] = f.value(top[key][1], key, SETTING_CHECKS[key])
    if "data_dir" in top:
        with f.each():
            out.settings["data_dir"] = f.path_value(top["data_dir"][1], "data_dir")
    if "pipelines" in top:
        with f.each():
            out.pipelines = _parse_pipelines(f, top["pipelines"][1])
    if "shard" in top:
        with f.each():
            shard_node = top["shard"][1]
            out.shard = f.value(shard_node, "shard", check_shard)
            out.shard_origin = f"{f.where(shard_node)}: shard"


def _optional(
    f: ConfigFile, keys: dict[str, tuple[Node, Node]], field: str, checks: Mapping[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    """The optional scalar keys of a section that are present and valid, checked by `checks`."""
    out: dict[str, Any] = {}
    for key, check in checks.items():
        if key in keys:
            with f.each():
                out[key] = f.value(keys[key][1], f"{field}.{key}", check)
    return out


def _parse_simulator(f: ConfigFile, node: Node, field: str) -> SimulatorSource:
    keys = f.mapping(node, field, ("type", "scenario", "seed", "speed", "interval"))
    checks = {"scenario": check_str, "seed": check_seed, "speed": check_positive_float, "interval": check_duration}
    return SimulatorSource(**_optional(f, keys, field, checks))


def _secret_file(f: ConfigFile, node: Node, field: str) -> tuple[str, str]:
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


def _parse_prometheus(f: ConfigFile, node: Node, field: str) -> PrometheusSourceConfig:
    keys = f.mapping(node, field, PROMETHEUS_KEYS)
    url: str | None = None
    if "url" not in keys:
        f.error(node, f"{field}.url", "missing (the base URL of the query API, e.g. http://prometheus:9090)")
    else:
        with f.each():
            url = f.value(keys["url"][1], f"{field}.url", check_http_url).rstrip("/")
    kwargs = _optional(
        f,
        keys,
        field,
        {"timeout": check_timeout, "retries": check_retries, "tenant": check_header_value, "tls_verify": check_bool},
    )
    with f.each():
        kwargs.update(_prometheus_auth(f, keys, field))
    if "replay" in keys:
        with f.each():
            kwargs.update(_parse_replay(f, keys["replay"][1], f"{field}.replay"))
    if url is None:
        raise _Skip()
    return PrometheusSourceConfig(url=url, **kwargs)


def _prometheus_auth(f: ConfigFile, keys: dict[str, tuple[Node, Node]], field: str) -> dict[str, Any]:
    """The credentials of a Prometheus source: a bearer token (inline or file) or basic auth."""
    out: dict[str, Any] = {}
    if "bearer_token" in keys and "bearer_token_file" in keys:
        raise f.error(
            keys["bearer_token_file"][0],
            f"{field}.bearer_token_file",
            "give bearer_token or bearer_token_file, not both",
        )
    if "bearer_token" in keys:
        out["bearer_token"] = f.value(keys["bearer_token"][1], f"{field}.bearer_token", check_secret)
    if "bearer_token_file" in keys:
        out["bearer_token_file"], _ = _secret_file(f, keys["bearer_token_file"][1], f"{field}.bearer_token_file")
    if "basic_auth" not in keys:
        return out
    key_node, auth_node = keys["basic_auth"]
    if "bearer_token" in keys or "bearer_token_file" in keys:
        raise f.error(key_node, f"{field}.basic_auth", "give a bearer token or basic_auth, not both")
    where = f"{field}.basic_auth"
    auth = f.mapping(auth_node, where, ("username", "password", "password_file"))
    if "username" not in auth:
        raise f.error(auth_node, f"{where}.username", "missing")
    username = f.value(auth["username"][1], f"{where}.username", check_header_value)
    if ("password" in auth) == ("password_file" in auth):
        raise f.error(auth_node, f"{where}.password", "give exactly one of password and password_file")
    password_file: str | None = None
    if "password" in auth:
        password = f.value(auth["password"][1], f"{where}.password", check_secret)
    else:
        password_file, password = _secret_file(f, auth["password_file"][1], f"{where}.password_file")
    out.update(
        basic_auth_username=username, basic_auth_password=password, basic_auth_password_file=password_file
    )
    return out


def _parse_replay(f: ConfigFile, node: Node, where: str) -> dict[str, Any]:
    replay = f.mapping(node, where, ("from", "speed"))
    if "from" not in replay:
        raise f.error(node, f"{where}.from", "missing (the RFC3339 time the replay starts at)")
    out = {"replay_from": f.value(replay["from"][1], f"{where}.from", check_time)}
    if "speed" in replay:
        out["replay_speed"] = f.value(replay["speed"][1], f"{where}.speed", check_positive_float)
    return out


def _parse_push(f: ConfigFile, node: Node, field: str) -> PushSourceConfig:
    keys = f.mapping(node, field, ("type", "max_decoded_bytes", "wal", "wal_fsync"))
    checks = {"max_decoded_bytes": check_max_decoded_bytes, "wal": check_bool, "wal_fsync": check_bool}
    return PushSourceConfig(**_optional(f, keys, field, checks))


_SOURCE_PARSERS: dict[str, Callable[[ConfigFile, Node, str], SourceConfig]] = {
    "simulator": _parse_simulator,
    "prometheus": _parse_prometheus,
    "push": _parse_push,
}
"""Source type -> parser."""


def _parse_source(f: ConfigFile, node: Node, field: str) -> SourceConfig:
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
            f"unknown source type {kind!r}{did_you_mean(str(kind), _SOURCE_PARSERS)} "
            f"(known: {', '.join(sorted(_SOURCE_PARSERS))})",
        )
    return _SOURCE_PARSERS[kind](f, node, field)


def _parse_pipelines(f: ConfigFile, node: Node) -> list[PipelineEntry]:
    if not isinstance(node, SequenceNode) or not node.value:
        raise f.error(node, "pipelines", "must be a non-empty list")
    out: list[PipelineEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(node.value):
        with f.each():
            entry = _parse_pipeline(f, item, f"pipelines[{i}]", seen)
            seen[entry.name] = i
            out.append(entry)
    return out


def _parse_pipeline(f: ConfigFile, item: Node, field: str, seen: dict[str, int]) -> PipelineEntry:
    """One pipeline; every problem in it is recorded before it is skipped."""
    keys = f.mapping(item, field, ("name", "pack", "source"))
    name: str | None = None
    if "name" not in keys:
        f.error(item, f"{field}.name", "missing")
    else:
        with f.each():
            name_node = keys["name"][1]
            name = f.value(name_node, f"{field}.name", check_pipeline_name)
            if name in seen:
                raise f.error(
                    name_node, f"{field}.name", f"duplicate pipeline name {name!r} (also pipelines[{seen[name]}])"
                )
    pack_path: str | None = None
    pack_where = f"{field}.pack"
    if "pack" in keys:
        pack_node = keys["pack"][1]
        pack_path = f.path_value(pack_node, f"{field}.pack")
        pack_where = f"{f.where(pack_node)}: {field}.pack"
    source: SourceConfig | None = SimulatorSource()
    source_where = f"{f.where(item)}: {field}.source"
    if "source" in keys:
        src_node = keys["source"][1]
        source = None
        with f.each():
            source = _parse_source(f, src_node, f"{field}.source")
        pairs = src_node.value if isinstance(src_node, MappingNode) else []
        scenario_node = next(
            (v for k, v in pairs if isinstance(k, ScalarNode) and k.value == "scenario"), src_node
        )
        source_where = f"{f.where(scenario_node)}: {field}.source.scenario"
    if name is None or source is None or name in seen:
        raise _Skip()
    return PipelineEntry(name, pack_path, pack_where, SourceEntry(source, source_where), field)


def _parse_state(f: ConfigFile, node: Node) -> str:


    keys = f.mapping(node, "state", ("url",))
    if "url" not in keys:
        raise f.error(node, "state.url", "missing")
    url_node = keys["url"][1]
    url = f.value(url_node, "state.url", check_state_url)
    location = parse_state_url(url, base=f.path.parent)
    if location.path is not None:  # relative SQLite paths resolve against the file's directory
        return f"sqlite:///{location.path}"
    return str(url)


def _parse_alertmanager(f: ConfigFile, node: Node) -> AlertmanagerConfig:
    """The ``alertmanager:`` section; `url` may come from CSF_ALERTMANAGER_URL instead ('' here)."""
    keys = f.mapping(node, "alertmanager", ("url", "resend_interval", "timeout", "runbook_base_url"))
    checks = {
        "url": check_http_url,
        "resend_interval": check_duration,
        "timeout": check_duration,
        "runbook_base_url": check_http_url,
    }
    return replace(AlertmanagerConfig(url=""), **_optional(f, keys, "alertmanager", checks))


def _parse_auth(f: ConfigFile, node: Node) -> tuple[str | None, str, bool]:
    """(token file path or None, its origin for messages, protect_reads)."""
    keys = f.mapping(node, "auth", ("token_file", "protect_reads"))
    token_file: str | None = None
    origin = "auth.token_file"
    if "token_file" in keys:
        with f.each():
            value_node = keys["token_file"][1]
            token_file = f.path_value(value_node, "auth.token_file")
            origin = f"{f.where(value_node)}: auth.token_file"
    protect_reads = _optional(f, keys, "auth", {"protect_reads": check_bool}).get("protect_reads", False)
    return token_file, origin, protect_reads
