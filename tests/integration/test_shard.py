"""`csf serve --shard i/n` (CSF_SHARD, `shard:`): each pipeline is evaluated by exactly one shard.

The end-to-end counterpart (two real shards scraped by a real Prometheus, each pipeline
published by exactly its owner) is in tests/integration/test_dashboard_live.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detector.service.config import ConfigError, Shard, load_config, shard_of
from detector.service.runner import Runner
from exporters.selfmetrics import ServiceMetrics

NAMES = ("checkout", "search", "video-eu", "video-us", "video-apac", "ads", "feed", "payments", "a", "b.c-d_e")


def reference_shard(name: str, count: int) -> int:
    """sha256 of the name read as one big hexadecimal number, mod count."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % count


def write_config(tmp: Path, names: tuple[str, ...] = NAMES, **top: object) -> Path:
    doc = {**top, "pipelines": [{"name": n, "source": {"type": "simulator", "seed": i + 1}}
                                for i, n in enumerate(names)]}
    path = tmp / "csf.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def owned(path: Path, shard: str) -> tuple[str, ...] | None:
    """Pipelines of shard `shard` (None when it owns none: a config error)."""
    try:
        return load_config(path, {}, {"shard": shard}).pipeline_names
    except ConfigError as exc:
        assert "owns no pipeline" in str(exc), exc
        return None


def test_shard_of_is_sha256_mod_n_and_independent_of_the_hash_seed() -> None:
    for n in range(1, 8):
        for name in NAMES:
            assert shard_of(name, n) == reference_shard(name, n), (name, n)
    # the same assignment in fresh interpreters with different str-hash seeds
    code = (
        "import json, sys; from detector.service.config import shard_of;"
        f"print(json.dumps([shard_of(n, 5) for n in {list(NAMES)!r}]))"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [reference_shard(n, 5) for n in NAMES]
    with pytest.raises(ValueError):
        shard_of("x", 0)


def test_every_pipeline_is_in_exactly_one_shard(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    assert load_config(path, {}).shard is None
    for n in (1, 2, 3, 4, 7):
        shards = [owned(path, f"{i}/{n}") for i in range(n)]
        seen = [name for names in shards if names for name in names]
        assert sorted(seen) == sorted(NAMES), n  # each pipeline once: a partition
        for i, names in enumerate(shards):
            expected = tuple(name for name in NAMES if reference_shard(name, n) == i)
            assert names == (expected or None), (i, n)  # config order kept
    # stable: loading again gives the same assignment, and it does not depend on the
    # other pipelines of the file (adding one moves nobody else)
    assert owned(path, "1/3") == owned(path, "1/3")
    more = tmp_path / "more"
    more.mkdir()
    bigger = write_config(more, (*NAMES, "new-pipeline"))
    for i in range(3):
        before = set(owned(path, f"{i}/3") or ())
        after = set(owned(bigger, f"{i}/3") or ())
        assert after - before <= {"new-pipeline"} and before <= after


def test_runner_schedules_only_the_shards_pipelines(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    path = write_config(tmp_path, data_dir=str(tmp_path / "data"))
    config = load_config(path, {}, {"shard": "0/2"})
    runner = Runner.from_config(config, metrics=ServiceMetrics(CollectorRegistry()), state=None)
    assert runner.names == tuple(n for n in NAMES if reference_shard(n, 2) == 0)
    assert config.shard == Shard(0, 2) and str(config.shard) == "0/2"


def test_shard_from_file_environment_and_flag_with_precedence(tmp_path: Path) -> None:
    path = write_config(tmp_path, shard="1/2")
    in_1 = tuple(n for n in NAMES if reference_shard(n, 2) == 1)
    in_0 = tuple(n for n in NAMES if reference_shard(n, 2) == 0)
    assert load_config(path, {}).pipeline_names == in_1
    assert load_config(path, {"CSF_SHARD": "0/2"}).pipeline_names == in_0  # env beats file
    assert load_config(path, {"CSF_SHARD": "0/2"}, {"shard": "1/2"}).pipeline_names == in_1  # flag beats env
    assert load_config(path, {}, {"shard": " 0 / 2 "}).shard == Shard(0, 2)


@pytest.mark.parametrize("value", ["2/2", "1/0", "a/b", "-1/2", "1", "", "0/2/3", "1.0/2"])
def test_invalid_shards_are_errors_naming_their_origin(tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path)
    with pytest.raises(ConfigError) as flag:
        load_config(path, {}, {"shard": value})
    assert str(flag.value).startswith(f"--shard {value!r}: ")
    with pytest.raises(ConfigError) as env:
        load_config(path, {"CSF_SHARD": value})
    assert str(env.value).startswith(f"environment variable CSF_SHARD={value!r}: ")
    file_path = write_config(tmp_path, shard=value)
    with pytest.raises(ConfigError) as file:
        load_config(file_path, {})
    assert str(file.value).startswith(f"{file_path}:1:8: shard: ")


def test_a_shard_without_pipelines_is_an_error_naming_the_flag(tmp_path: Path) -> None:
    path = write_config(tmp_path, ("video-eu",))
    empty = 1 - reference_shard("video-eu", 2)
    with pytest.raises(ConfigError) as exc:
        load_config(path, {}, {"shard": f"{empty}/2"})
    assert str(exc.value).startswith(f"--shard '{empty}/2': shard {empty}/2 owns no pipeline")
    assert f"video-eu->{1 - empty}" in str(exc.value)


def test_csf_serve_rejects_a_bad_shard_with_exit_status_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSF_")}
    r = subprocess.run(
        [sys.executable, "-m", "detector.cli", "serve", "--shard", "3/2", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "--shard '3/2': the shard index must be between 0 and 1" in r.stderr
