"""Service configuration: defaults, precedence file < env < CLI, and errors that name their origin."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from detector.service.config import ConfigError, SimulatorSource, load_config
from detector.spec.load import default_pack, default_pack_path


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _pack_copy(path: Path, name: str = "copy-pack") -> Path:
    text = default_pack_path().read_text(encoding="utf-8")
    text = text.replace("name: microlearning-video", f"name: {name}", 1)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults():
    config = load_config(None, {}, {})
    assert (config.host, config.port, config.evaluation_interval, config.log_level) == (
        "127.0.0.1",
        9466,
        60.0,
        "info",
    )
    assert config.data_dir == Path(".csf")
    assert config.path is None
    (pipeline,) = config.pipelines
    assert pipeline.name == "default"
    assert pipeline.pack == default_pack()
    assert pipeline.pack_path is None
    assert pipeline.source == SimulatorSource(scenario="sequence", seed=1, speed=1.0, interval=60.0)


def test_file_env_and_cli_precedence(tmp_path):
    cfg = _write(
        tmp_path / "csf.yaml",
        """
        host: 0.0.0.0
        port: 1000
        data_dir: state
        evaluation_interval: 2m
        log_level: WARNING
        pipelines:
          - name: main
            source: {type: simulator, scenario: sequence, seed: 7, speed: 2, interval: 30s}
        """,
    )
    file_only = load_config(cfg, {}, {})
    assert (file_only.host, file_only.port, file_only.evaluation_interval, file_only.log_level) == (
        "0.0.0.0",
        1000,
        120.0,
        "warning",
    )
    assert file_only.data_dir == tmp_path / "state"  # relative to the config file
    assert file_only.pipelines[0].source == SimulatorSource("sequence", 7, 2.0, 30.0)
    assert file_only.path == str(cfg)

    env = {
        "CSF_PORT": "2000",
        "CSF_SPEED": "3.5",
        "CSF_SEED": "8",
        "CSF_EVALUATION_INTERVAL": "90",
        "CSF_HOST": "::1",
    }
    with_env = load_config(cfg, env, {})
    assert (with_env.port, with_env.evaluation_interval, with_env.host) == (2000, 90.0, "::1")
    assert (with_env.pipelines[0].source.speed, with_env.pipelines[0].source.seed) == (3.5, 8)
    assert with_env.pipelines[0].source.interval == 30.0  # untouched by env

    overrides = {
        "port": 3000,
        "speed": 60.0,
        "evaluation_interval": "1s",
        "data_dir": "elsewhere",
        "seed": None,
    }
    with_cli = load_config(cfg, env, overrides)
    assert (with_cli.port, with_cli.evaluation_interval, with_cli.data_dir) == (3000, 1.0, Path("elsewhere"))
    assert with_cli.pipelines[0].source.speed == 60.0
    assert with_cli.pipelines[0].source.seed == 8  # None override = not given: env still wins


def test_pack_override_and_relative_pack_path(tmp_path):
    (tmp_path / "packs").mkdir()
    _pack_copy(tmp_path / "packs" / "a.yaml", "pack-a")
    _pack_copy(tmp_path / "b.yaml", "pack-b")
    cfg = _write(
        tmp_path / "csf.yaml",
        """
        pipelines:
          - name: one
            pack: packs/a.yaml
          - name: two
        """,
    )
    config = load_config(cfg, {}, {})
    assert [p.name for p in config.pipelines] == ["one", "two"]
    assert config.pipeline("one").pack.name == "pack-a"
    assert config.pipeline("two").pack.name == default_pack().name
    # the env/CLI pack applies to every pipeline; the CLI wins over the env
    env_pack = load_config(cfg, {"CSF_PACK": str(tmp_path / "b.yaml")}, {})
    assert {p.pack.name for p in env_pack.pipelines} == {"pack-b"}
    cli_pack = load_config(
        cfg, {"CSF_PACK": str(tmp_path / "b.yaml")}, {"pack": str(tmp_path / "packs" / "a.yaml")}
    )
    assert {p.pack.name for p in cli_pack.pipelines} == {"pack-a"}


def test_empty_file_means_defaults(tmp_path):
    config = load_config(_write(tmp_path / "empty.yaml", "# nothing\n"), {}, {})
    assert config.port == 9466 and [p.name for p in config.pipelines] == ["default"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port: 1\nprot: 2\n", "csf.yaml:2:1: prot: unknown key"),
        (
            "pipelines:\n  - name: a\n    source:\n      type: simulator\n      sped: 2\n",
            "csf.yaml:5:7: pipelines[0].source.sped: unknown key",
        ),
        ("port: 1\nport: 2\n", "csf.yaml:2:1: port: duplicate key"),
        ("port: [1\n", "csf.yaml:2:1: invalid YAML"),
        ("port: nine\n", "csf.yaml:1:7: port: must be an integer"),
        ("port: 70000\n", "csf.yaml:1:7: port: must be between 1 and 65535"),
        ("evaluation_interval: soon\n", "csf.yaml:1:22: evaluation_interval: invalid duration 'soon'"),
        ("evaluation_interval: 0s\n", "csf.yaml:1:22: evaluation_interval: must be a positive duration"),
        ("log_level: loud\n", "csf.yaml:1:12: log_level: must be one of debug, info, warning, error"),
        ("- 1\n", "csf.yaml:1:1: expected a mapping, got a list"),
        ("pipelines: []\n", "csf.yaml:1:12: pipelines: must be a non-empty list"),
        ("pipelines:\n  - pack: x.yaml\n", "csf.yaml:2:5: pipelines[0].name: missing"),
        (
            "pipelines:\n  - name: a\n  - name: a\n",
            "csf.yaml:3:11: pipelines[1].name: duplicate pipeline name 'a'",
        ),
        ("pipelines:\n  - name: 'bad name'\n", "csf.yaml:2:11: pipelines[0].name: must be 1-64 characters"),
        (
            "pipelines:\n  - name: a\n    source:\n      type: kafka\n",
            "csf.yaml:4:13: pipelines[0].source.type: unknown source type 'kafka' (known: prometheus, push, simulator)",
        ),
        (
            "pipelines:\n  - name: a\n    source: {seed: 1}\n",
            "csf.yaml:3:13: pipelines[0].source.type: missing",
        ),
        (
            "pipelines:\n  - name: a\n    source:\n      type: simulator\n      speed: -1\n",
            "csf.yaml:5:14: pipelines[0].source.speed: must be a positive number",
        ),
        (
            "pipelines:\n  - name: a\n    source:\n      type: simulator\n      scenario: nope\n",
            "csf.yaml:5:17: pipelines[0].source.scenario: unknown simulator scenario 'nope'",
        ),
    ],
)
def test_file_errors_name_file_line_and_field(tmp_path, text, expected):
    cfg = _write(tmp_path / "csf.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, {}, {})
    message = str(info.value)
    assert message.startswith(f"{tmp_path}/{expected}"), message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml: not found"):
        load_config(tmp_path / "nope.yaml", {}, {})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CSF_PORT": "abc"}, "environment variable CSF_PORT='abc': must be an integer"),
        ({"CSF_PORT": "0"}, "environment variable CSF_PORT='0': must be between 1 and 65535"),
        ({"CSF_PORT": ""}, "environment variable CSF_PORT='': must be an integer"),
        ({"CSF_SPEED": "fast"}, "environment variable CSF_SPEED='fast': must be a positive number"),
        ({"CSF_SPEED": "nan"}, "environment variable CSF_SPEED='nan': must be a positive number"),
        ({"CSF_SEED": "1.5"}, "environment variable CSF_SEED='1.5': must be an integer"),
        (
            {"CSF_EVALUATION_INTERVAL": "-5s"},
            "environment variable CSF_EVALUATION_INTERVAL='-5s': invalid duration",
        ),
        ({"CSF_LOG_LEVEL": "trace"}, "environment variable CSF_LOG_LEVEL='trace': must be one of"),
        ({"CSF_HOST": "  "}, "environment variable CSF_HOST='  ': must be a non-empty string"),
        (
            {"CSF_SCENARIO": "nope"},
            "environment variable CSF_SCENARIO='nope': unknown simulator scenario 'nope'",
        ),
    ],
)
def test_bad_env_value_names_variable_and_value(env, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, env, {})
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_bad_cli_value_names_flag():
    with pytest.raises(ConfigError, match=r"^--evaluation-interval 'never': invalid duration"):
        load_config(None, {}, {"evaluation_interval": "never"})
    with pytest.raises(ConfigError, match=r"^--speed 0\.0: must be a positive number"):
        load_config(None, {}, {"speed": 0.0})
    with pytest.raises(ConfigError, match="unknown override"):
        load_config(None, {}, {"colour": "red"})


def test_cli_value_is_checked_even_when_env_is_bad_first():
    # the environment is checked before the command line: a bad env value stops start-up
    with pytest.raises(ConfigError, match="CSF_PORT='x'"):
        load_config(None, {"CSF_PORT": "x"}, {"port": 9000})


def test_bad_pack_is_a_config_error_with_the_pack_location(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (
        default_pack_path().read_text(encoding="utf-8").replace("windows:\n", "windows:\n  colour: red\n", 1)
    )
    bad.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  colour: red") + 1
    cfg = _write(tmp_path / "csf.yaml", "pipelines:\n  - name: a\n    pack: bad.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, {}, {})
    message = str(info.value)
    assert message.startswith(f"{cfg}:3:11: pipelines[0].pack: invalid pack: "), message
    assert f"{bad}:{line}:" in message and "colour" in message, message

    with pytest.raises(
        ConfigError, match=r"^environment variable CSF_PACK='.*missing\.yaml': cannot read pack"
    ):
        load_config(None, {"CSF_PACK": str(tmp_path / "missing.yaml")}, {})


def test_simulator_overrides_need_a_simulator_pipeline_and_leave_other_fields(tmp_path):
    cfg = _write(
        tmp_path / "csf.yaml",
        """
        pipelines:
          - name: a
            source: {type: simulator, seed: 3, interval: 2m}
          - name: b
        """,
    )
    config = load_config(cfg, {"CSF_SCENARIO": "sequence"}, {"speed": 10.0})
    assert [p.source for p in config.pipelines] == [
        SimulatorSource("sequence", 3, 10.0, 120.0),
        SimulatorSource("sequence", 1, 10.0, 60.0),
    ]


def test_prometheus_replay_settings(tmp_path):
    import pytest as _pytest

    from detector.service.config import ConfigError

    cfg = tmp_path / "csf.yaml"
    base = "pipelines:\n  - name: h\n    source:\n      type: prometheus\n      url: http://127.0.0.1:9090\n"
    cfg.write_text(base + "      replay: {from: 2023-11-16T22:15:00Z, speed: 600}\n")
    src = load_config(cfg, {}, {}).pipelines[0].source
    assert (src.replay_from, src.replay_speed) == (1700172900.0, 600.0)
    assert src.describe()["replay"] == {"from": "2023-11-16T22:15:00Z", "speed": 600.0}
    cfg.write_text(base + "      replay: {from: '2023-11-16T22:15:00Z'}\n")
    assert load_config(cfg, {}, {}).pipelines[0].source.replay_speed == 1.0
    for bad, where in (("{speed: 60}", "replay.from"), ("{from: yesterday}", "replay.from"),
                       ("{from: '2023-11-16T22:15:00Z', speed: 0}", "replay.speed")):
        cfg.write_text(base + f"      replay: {bad}\n")
        with _pytest.raises(ConfigError) as exc:
            load_config(cfg, {}, {})
        assert where in str(exc.value) and ":6:" in str(exc.value), str(exc.value)


def test_every_file_problem_is_reported_at_once_in_the_words_of_pack_errors(tmp_path):
    """One run lists every problem of the file, by line, worded like a pack's (one YAML reader)."""
    cfg = _write(
        tmp_path / "csf.yaml",
        """
        prot: 9466
        log_level: loud
        pipelines:
          - name: a
            source: {type: simulator, sped: 2, seed: -1}
          - name: a
          - pack: x.yaml
        port: 1
        port: 2
        alertmanager: {url: 'ftp://am', timeout: never}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg, {}, {})
    problems = [p.removeprefix(f"{cfg}:") for p in info.value.problems]
    assert problems == [
        "1:1: prot: unknown key 'prot' (did you mean 'port'?); allowed keys: host, port, data_dir, "
        "evaluation_interval, log_level, pipelines, shard, max_body_bytes, state, auth, alertmanager",
        "2:12: log_level: must be one of debug, info, warning, error",
        "5:31: pipelines[0].source.sped: unknown key 'sped' (did you mean 'speed'?); "
        "allowed keys: type, scenario, seed, speed, interval",
        "5:46: pipelines[0].source.seed: must be between 0 and 9223372036854775807",
        "6:11: pipelines[1].name: duplicate pipeline name 'a' (also pipelines[0])",
        "7:5: pipelines[2].name: missing",
        "9:1: port: duplicate key 'port' (first at line 8)",
        "10:21: alertmanager.url: must be an http:// or https:// URL with a host",
        "10:42: alertmanager.timeout: invalid duration 'never': use a number of seconds or units "
        "ms, s, m, h, d, w, y",
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_environment_flag_and_pack_problems_are_reported_together(tmp_path):
    bad_pack = _write(tmp_path / "bad.yaml", "apiVersion: csf/v1\nkind: ConstraintPack\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CSF_PORT": "abc", "CSF_SCENARIO": "nope"}, {"log_level": "loud", "pack": str(bad_pack)})
    problems = info.value.problems
    assert problems[0] == "environment variable CSF_PORT='abc': must be an integer"
    assert problems[1] == "--log-level 'loud': must be one of debug, info, warning, error"
    assert problems[2].startswith(f"--pack '{bad_pack}': invalid pack: {bad_pack}:1:1: ")
    assert "constraints: missing required field 'constraints'" in problems[2]
    assert len(problems) == 3  # the pack is invalid: its pipeline's scenario is not judged on top of it


@pytest.mark.parametrize("source", ["[simulator]", "simulator", "{type: simulator, seed: x}"])
def test_a_source_that_is_not_a_mapping_is_reported_not_crashed_on(tmp_path, source):
    """The walk goes on after a bad source: it must not trip over what it could not read."""
    cfg = _write(tmp_path / "csf.yaml", f"pipelines:\n  - name: a\n    source: {source}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, {}, {})
    assert len(info.value.problems) == 1 and "pipelines[0].source" in info.value.problems[0]
