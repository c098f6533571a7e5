"""Security: bearer-token authentication of write/reload/admin endpoints, exposure checks, body limits,
PromQL injection through packs, and secrets that never reach logs, errors or API responses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from detector.service.auth import (
    MIN_TOKEN_LENGTH,
    SecurityMiddleware,
    SecurityPolicy,
    bearer_token,
    check_exposure,
    is_loopback,
    load_token,
    needs_auth,
    token_matches,
)
from detector.service.config import ConfigError, load_config
from tests._procs import wait_until
from tests.conftest import start_csf_server
from tests.integration.test_faults import fast_config, metric, small_pack

TOKEN = "tok-9Qe7ZrLm2XvB4nHs8KdW"
"""Distinctive, so that grepping logs and responses for it is meaningful."""
NEW_TOKEN = "tok-rotated-Jt5Ux1Pc6YaM3wRf"
WRONG = "tok-wrong-Lk2Hv7Nq4ZsD9gEo"


# --------------------------------------------------------------------------- exposure and tokens


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("csf.example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        check_exposure(host, token_configured=False, insecure=False)
    else:
        with pytest.raises(ValueError, match="--insecure"):
            check_exposure(host, token_configured=False, insecure=False)
        check_exposure(host, token_configured=True, insecure=False)
        check_exposure(host, token_configured=False, insecure=True)


def test_token_precedence_and_validation_never_quote_the_token(tmp_path: Path) -> None:
    env_file = tmp_path / "env-token"
    env_file.write_text(f"  {NEW_TOKEN}\n")
    cfg_file = tmp_path / "cfg-token"
    cfg_file.write_text(WRONG + "\n")
    assert load_token({}) is None
    assert load_token({}, str(cfg_file)).token == WRONG
    from_env_file = load_token({"CSF_AUTH_TOKEN_FILE": str(env_file)}, str(cfg_file))
    assert from_env_file.token == NEW_TOKEN and from_env_file.origin == f"file {env_file}"
    from_env = load_token({"CSF_AUTH_TOKEN": TOKEN, "CSF_AUTH_TOKEN_FILE": str(env_file)}, str(cfg_file))
    assert from_env.token == TOKEN and from_env.origin == "environment variable CSF_AUTH_TOKEN"
    assert TOKEN not in repr(from_env)

    short = "Sh0rt-SECRET"
    assert len(short) < MIN_TOKEN_LENGTH
    bad_cases: list[tuple[dict[str, str], str | None, str]] = [
        ({"CSF_AUTH_TOKEN": short}, None, "too short"),
        ({"CSF_AUTH_TOKEN": ""}, None, "is empty"),
        ({"CSF_AUTH_TOKEN": "with space SECRET-123456789"}, None, "printable ASCII"),
        ({"CSF_AUTH_TOKEN_FILE": str(tmp_path / "absent")}, None, "not found"),
    ]
    (tmp_path / "short").write_text(short)
    (tmp_path / "empty").write_text("\n")
    bad_cases += [({}, str(tmp_path / "short"), "too short"), ({}, str(tmp_path / "empty"), "is empty")]
    for env, path, message in bad_cases:
        with pytest.raises(ValueError, match=message) as info:
            load_token(env, path)
        assert "SECRET" not in str(info.value)


def test_bearer_parsing_and_constant_time_match() -> None:
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(f"bearer   {TOKEN}  ") == TOKEN
    for header in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", TOKEN):
        assert bearer_token(header) is None
    assert token_matches(TOKEN, TOKEN)
    for presented in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "tok-9Qe7ZrLm2XvB4nHs8KdW\u00e9"):
        assert not token_matches(presented, TOKEN)
    assert needs_auth("POST", "/-/reload", False) and needs_auth("DELETE", "/anything", False)
    assert not needs_auth("GET", "/metrics", False) and needs_auth("GET", "/metrics", True)
    assert not needs_auth("GET", "/healthz", True) and not needs_auth("GET", "/readyz", True)


def test_config_secrets_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    password = "Db-pa55-SECRET"
    config = load_config(
        None, {"CSF_AUTH_TOKEN": TOKEN, "CSF_STATE_URL": f"postgresql://csf:{password}@db:5432/csf"}
    )
    assert config.auth_token == TOKEN and config.auth_token_origin == "environment variable CSF_AUTH_TOKEN"
    assert config.state_url is not None and password in config.state_url
    assert TOKEN not in repr(config) and password not in repr(config)
    for url in (f"mysql://csf:{password}@db/csf", f"postgresql://csf:{password}@db:99999/csf"):
        with pytest.raises(ConfigError) as info:
            load_config(None, {"CSF_STATE_URL": url})
        assert password not in str(info.value) and "CSF_STATE_URL" in str(info.value)
    with pytest.raises(ConfigError, match="too short") as info:
        load_config(None, {"CSF_AUTH_TOKEN": "short-SECRET"})
    assert "SECRET" not in str(info.value)

    # in the file: auth.token_file resolves against the file's directory; protect_reads; limits
    (tmp_path / "token").write_text(TOKEN + "\n")
    cfg = tmp_path / "csf.yaml"
    cfg.write_text("auth:\n  token_file: token\n  protect_reads: true\nmax_body_bytes: 4096\n")
    loaded = load_config(cfg, {})
    assert loaded.auth_token == TOKEN and loaded.protect_reads and loaded.max_body_bytes == 4096
    assert loaded.auth_token_origin == f"file {tmp_path / 'token'}"
    cfg.write_text("auth:\n  token: inline-tokens-are-not-accepted\n")
    with pytest.raises(ConfigError, match=r"csf.yaml:2:3: auth.token: unknown key") as info:
        load_config(cfg, {})
    assert "inline-tokens" not in str(info.value)


# --------------------------------------------------------------------------- the middleware


class Echo:
    """An ASGI app that answers 200 with the request body; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body})


class Client:
    """httpx against a real uvicorn on loopback (the middleware sees what a server gives it)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=10.0)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.put(path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)


@pytest.fixture
def guarded() -> Iterator[tuple[Client, Echo, list[str], list[SecurityPolicy]]]:
    from tests._procs import serve_asgi

    echo = Echo()
    denied: list[str] = []
    policy = [SecurityPolicy(token=TOKEN, max_body_bytes=1024)]
    app = SecurityMiddleware(echo, policy=lambda: policy[0], on_denied=denied.append)
    with serve_asgi(app) as base:
        client = Client(base)
        try:
            yield client, echo, denied, policy
        finally:
            client.http.close()


def test_middleware_requires_the_token_for_writes_only(guarded: Any) -> None:
    client, echo, denied, policy = guarded
    missing = client.post("/-/reload", content=b"x")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="csf"'
    assert "missing bearer token" in missing.json()["error"]
    wrong = client.post("/api/v1/write", content=b"x", headers={"Authorization": f"Bearer {WRONG}"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    basic = client.post("/v1/metrics", content=b"x", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert echo.calls == 0 and denied == ["unauthorized"] * 3
    for response in (missing, wrong, basic):
        assert TOKEN not in response.text and WRONG not in response.text
    ok = client.post("/v1/metrics", content=b"payload", headers={"Authorization": f"bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.content == b"payload" and echo.calls == 1
    assert client.put("/anything", content=b"").status_code == 401  # every non-GET method
    assert client.get("/api/v1/status").status_code == 200  # reads are open by default

    policy[0] = SecurityPolicy(token=TOKEN, protect_reads=True)
    assert client.get("/api/v1/status").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200

    policy[0] = SecurityPolicy(token=None)  # no token configured: nothing is checked
    assert client.post("/-/reload", content=b"x").status_code == 200


def test_middleware_limits_bodies_declared_or_streamed(guarded: Any) -> None:
    client, echo, denied, _ = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    too_big = client.post("/api/v1/write", content=b"x" * 1025, headers=auth)
    assert too_big.status_code == 413 and "1025 bytes exceeds the limit of 1024" in too_big.json()["error"]

    def chunks(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield b"y" * 300

    streamed = client.post("/api/v1/write", content=chunks(4), headers=auth)  # chunked, 1200 bytes
    assert streamed.status_code == 413
    assert echo.calls == 0 and denied == ["too_large", "too_large"]
    fits = client.post("/api/v1/write", content=chunks(3), headers=auth)  # chunked, 900 bytes, replayed
    assert fits.status_code == 200 and fits.content == b"y" * 900
    exact = client.post("/api/v1/write", content=b"z" * 1024, headers=auth)
    assert exact.status_code == 200 and len(exact.content) == 1024
    # unauthenticated: refused before the body is looked at
    assert client.post("/api/v1/write", content=b"x" * 5000).status_code == 401
    assert client.http.request("GET", "/metrics", content=b"x" * 5000).status_code == 413  # any method


# --------------------------------------------------------------------------- PromQL injection


HOSTILE = [
    'us"} or vector(1000) or daily_active_users{region="eu',
    'a\\"} or on() vector(7) #',
    "line\nbreak\"'`{}[]",
    "back\\slash\\",
]


def test_label_values_from_packs_cannot_inject_promql(tmp_path: Path) -> None:
    """Hostile matcher values go through the pack loader and the compiler to a real Prometheus:
    each selects exactly the series carrying that literal value, and nothing else."""
    from detector.source.openmetrics import write_openmetrics
    from detector.source.prometheus_api import PrometheusSource
    from detector.source.promql import compile_promql
    from detector.spec.load import load_pack
    from tests._procs import PROMTOOL, PrometheusProcess, require_binary

    promtool = require_binary(PROMTOOL)
    end = (time.time() // 60) * 60
    times = [end - 600 + 60 * i for i in range(11)]
    regions = {"us": 1000.0, "eu": 2000.0, **{v: 10.0 * (i + 1) for i, v in enumerate(HOSTILE)}}
    om = tmp_path / "dau.om"
    with open(om, "w", encoding="utf-8", newline="\n") as fh:
        write_openmetrics(
            fh,
            [
                ("daily_active_users", "gauge", {"region": r}, times, [v] * len(times))
                for r, v in sorted(regions.items())
            ],
        )
    data = tmp_path / "tsdb"
    res = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]

    pack_path = small_pack(tmp_path / "pack.yaml")
    doc = yaml.safe_load(pack_path.read_text())
    with PrometheusProcess(tmp_path / "prom", "global:\n  scrape_interval: 1m\n", data_dir=data) as prom:
        prom.wait_ready()
        source = PrometheusSource(prom.url, timeout=10.0, retries=0)
        try:
            for i, value in enumerate([*HOSTILE, 'nobody"} or vector(1) or x{a="']):
                doc["organisation"]["dau"] = {
                    "gauge": "daily_active_users",
                    "agg": "sum",
                    "matchers": {"region": value},
                }
                pack_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
                signal = load_pack(pack_path).organisation.dau
                assert signal is not None and signal.matchers == (("region", value),)
                query = compile_promql(signal)
                assert query.startswith("sum(daily_active_users{region=") and query.endswith('"})')
                frame = source.query_range(signal, end - 120, end, 60.0)
                expected = regions.get(value)
                if expected is None:  # the value exists nowhere: no data, and no injected vector()
                    assert frame.values.size == 0 or not (frame.values == frame.values).any(), (
                        query,
                        frame.values,
                    )
                else:
                    assert frame.values.shape == (1, 3), query
                    assert frame.values.tolist() == [[expected] * 3], (i, query)
        finally:
            source.close()


# --------------------------------------------------------------------------- csf serve, end to end


def _serve_exit(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CSF_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "detector.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_non_loopback_listener_without_a_token_is_refused(tmp_path: Path) -> None:
    result = _serve_exit(["--host", "0.0.0.0", "--port", "9", "--data-dir", str(tmp_path / "d")])
    assert result.returncode == 2
    assert "refusing to listen on non-loopback address '0.0.0.0' without an auth token" in result.stderr
    assert "--insecure" in result.stderr
    bad = _serve_exit(["--data-dir", str(tmp_path / "d")], env={"CSF_AUTH_TOKEN": "short-SECRET"})
    assert bad.returncode == 2 and "too short" in bad.stderr and "SECRET" not in bad.stderr


@pytest.mark.slow
def test_tokens_guard_every_write_endpoint_rotate_on_reload_and_never_leak(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cfg = fast_config(tmp_path, extra={"auth": {"token_file": str(token_file)}, "max_body_bytes": 4096})
    doc = yaml.safe_load(cfg.read_text())
    doc["pipelines"].append(
        {"name": "pushed", "pack": doc["pipelines"][0]["pack"], "source": {"type": "push"}}
    )
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    server = start_csf_server(tmp_path, "--config", str(cfg))
    responses: list[str] = []

    def call(method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.request(method, server.url + path, headers=headers, timeout=30.0, **kwargs)
        responses.append(f"{r.status_code} {dict(r.headers)} {r.text}")
        return r

    try:
        server.wait_ready()
        write_paths = ("/-/reload", "/api/v1/write", "/v1/metrics")
        for path in write_paths:
            assert call("POST", path).status_code == 401, path
            assert call("POST", path, WRONG).status_code == 401, path
        assert metric(server, "csf_http_requests_denied_total", reason="unauthorized") == 6.0
        # authenticated: the endpoints themselves answer (an empty push is a client error, not 401)
        assert call("POST", "/api/v1/write", TOKEN, content=b"").status_code == 400
        assert call("POST", "/v1/metrics", TOKEN, content=b"").status_code in (400, 415)
        assert call("POST", "/-/reload", TOKEN).status_code == 200
        too_big = call("POST", "/api/v1/write", TOKEN, content=b"\0" * 5000)
        assert too_big.status_code == 413
        assert metric(server, "csf_http_requests_denied_total", reason="too_large") == 1.0
        # reads stay open (protect_reads is off)
        for path in (
            "/metrics",
            "/api/v1/status",
            "/api/v1/pipelines",
            "/api/v1/history",
            "/",
            "/openapi.json",
        ):
            assert call("GET", path).status_code == 200, path

        # rotation: a reload reads the token file again
        token_file.write_text(NEW_TOKEN + "\n")
        assert call("POST", "/-/reload", TOKEN).status_code == 200
        assert call("POST", "/-/reload", TOKEN).status_code == 401
        assert call("POST", "/-/reload", NEW_TOKEN).status_code == 200
        # a reload that would drop the token is refused: the running token stays
        token_file.write_text("")
        refused = call("POST", "/-/reload", NEW_TOKEN)
        assert refused.status_code == 400 and "is empty" in refused.json()["error"]
        assert call("POST", "/-/reload", None).status_code == 401
        token_file.write_text(NEW_TOKEN)
        wait_until(lambda: call("GET", "/readyz").status_code == 200, 30, 0.2, "readiness")
    finally:
        assert server.stop() == 0
    log = server.log()
    assert 'msg="request denied" reason=unauthorized' in log and "client=127.0.0.1" in log
    assert f'auth="file {token_file}"' in log or f"auth=file {token_file}" in log
    for text in [log, *responses]:
        for secret in (TOKEN, NEW_TOKEN, WRONG):
            assert secret not in text


# --------------------------------------------------------------------------- refusals a client can read


def _urllib_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST with Python's urllib, which writes the whole body before it reads the answer."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback test server
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_urllib_sending_64_mib_to_remote_write_reads_the_413(tmp_path: Path) -> None:
    server = start_csf_server(tmp_path)
    try:
        server.wait_ready()
        code, body = _urllib_post(server.url + "/api/v1/write", b"\0" * (64 * 1024 * 1024))
        assert code == 413
        assert "exceeds the limit of 16777216 bytes" in body["error"]
        assert server.get("/healthz").status_code == 200
    finally:
        assert server.stop() == 0


def test_urllib_without_a_token_reads_the_401_of_a_large_body(guarded: Any) -> None:
    client, echo, denied, _ = guarded
    base = str(client.http.base_url).rstrip("/")
    code, body = _urllib_post(base + "/api/v1/write", b"\0" * (8 * 1024 * 1024))
    assert code == 401 and "missing bearer token" in body["error"]
    code, body = _urllib_post(
        base + "/api/v1/write", b"\0" * (8 * 1024 * 1024), {"Authorization": f"Bearer {TOKEN}"}
    )
    assert code == 413 and "exceeds the limit of 1024 bytes" in body["error"]
    assert echo.calls == 0 and denied == ["unauthorized", "too_large"]


def test_refused_bodies_are_drained_only_up_to_the_bound() -> None:
    import asyncio

    from detector.service.auth import DRAIN_BYTES

    chunk = b"\0" * (1024 * 1024)

    def run(headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, int, list[tuple[bytes, bytes]]]:
        read = 0
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            nonlocal read
            read += 1
            return {"type": "http.request", "body": chunk, "more_body": read < chunks}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def app(*_: Any) -> None:
            raise AssertionError("a refused request must not reach the app")

        mw = SecurityMiddleware(app, policy=lambda: SecurityPolicy(token=None, max_body_bytes=1024))
        scope = {"type": "http", "method": "POST", "path": "/api/v1/write", "headers": headers}
        asyncio.run(mw(scope, receive, send))
        return read, sent[0]["status"], sent[0]["headers"]

    mib = 1024 * 1024
    n = 20  # a 20 MiB body, declared: read to its end, then 413 on a connection that stays usable
    read, status, headers = run([(b"content-length", str(n * mib).encode())], n)
    assert (read, status) == (n, 413) and (b"connection", b"close") not in headers
    n = 20  # the same, chunked
    read, status, headers = run([(b"transfer-encoding", b"chunked")], n)
    assert (read, status) == (n, 413) and (b"connection", b"close") not in headers
    # larger than the bound: declared -> answered at once; chunked -> read up to the bound, then closed
    read, status, headers = run([(b"content-length", str(DRAIN_BYTES + mib).encode())], 10_000)
    assert (read, status) == (0, 413) and (b"connection", b"close") in headers
    read, status, headers = run([(b"transfer-encoding", b"chunked")], 10_000)
    assert status == 413 and (b"connection", b"close") in headers
    assert read * mib <= DRAIN_BYTES + 2 * mib
    # a client waiting for 100 Continue has not sent its body: answered at once
    read, status, _ = run([(b"content-length", str(2 * mib).encode()), (b"expect", b"100-continue")], 2)
    assert (read, status) == (0, 413)
