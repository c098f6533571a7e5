"""Alertmanager push: the pure alert mapping, the HTTP adapter (fake transport), and a REAL Alertmanager.

The real-Alertmanager tests start /usr/bin/prometheus-alertmanager on 127.0.0.1 with a
webhook receiver served from this process, short group_wait/group_interval, and stop it
themselves; every wait is bounded. They skip when the binary is missing locally and
fail when CI=true.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from detector.evidence.results import (
    TEST_NAMES,
    CausalEvidence,
    ConstraintResult,
    EconomicsResult,
    Evaluation,
    MetaReport,
    Pressure,
    TestResult,
)
from detector.spec.load import default_pack
from exporters.alertmanager import AlertmanagerPusher, desired_alerts, format_rfc3339, humanize
from rules.generate import DEFAULT_RUNBOOK_BASE_URL, generate_rules
from tests._procs import free_port, require_binary

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "deploy" / "runbooks"
PIPE = "video"
T0 = 1_800_000_000.0


# --------------------------------------------------------------------------- evaluations


def _causal(passed: tuple[str, ...]) -> CausalEvidence:
    tests = tuple(
        TestResult(n, "PASS" if n in passed else "FAIL", 1.0, 0.01 if n in passed else 0.4, 500, "seeded")
        for n in TEST_NAMES
    )
    verdict = "causal" if len(passed) >= 3 else "proxy"
    return CausalEvidence(verdict, len(passed), 0, tests, 2.1, f"{len(passed)}/5 tests passed")


def _result(name: str, layer: str, state: str, decision: str, **kw: Any) -> ConstraintResult:
    return ConstraintResult(
        name=name, layer=layer, state=state, decision=decision, explanation=f"{name} is {state}", **kw
    )


def _evaluation(
    binding: str | None = "latency",
    decision: str = "invest",
    *,
    proxy: str | None = None,
    observe: str | None = None,
    source_up: bool = True,
    overhead: float | None = None,
    t: float = T0,
) -> Evaluation:
    rows = []
    for name, layer in (
        ("latency", "physics"),
        ("protocol", "architecture"),
        ("supply", "resource"),
        ("cold_start", "information"),
        ("consistency", "trust"),
    ):
        if name == binding:
            rows.append(
                _result(
                    name,
                    layer,
                    "binding",
                    decision,
                    pressure=Pressure(0.4, 4 / 3, True, 20, 24),
                    target=0.3,
                    causal=_causal(TEST_NAMES),
                    economics=EconomicsResult(380_000.0, 3.17, 3.0, 120_000.0),
                )
            )
        elif name == proxy:
            rows.append(
                _result(
                    name,
                    layer,
                    "proxy",
                    "investigate",
                    pressure=Pressure(1.4, 1.4, True, 20, 24),
                    target=1.0,
                    causal=_causal(("within_unit", "dose_response")),
                )
            )
        elif name == observe:
            rows.append(
                _result(name, layer, "observe", "observe", missing=("transcode_wait_seconds_bucket",))
            )
        else:
            rows.append(_result(name, layer, "slack", "stop", pressure=Pressure(0.2, 0.5, False, 0, 24)))
    rows.append(_result("meta", "meta", "slack", "stop"))
    return Evaluation(
        pipeline=PIPE,
        time=t,
        binding=binding,
        decision=decision if binding else "stop",
        explanation="seeded evaluation",
        constraints=tuple(rows),
        meta=MetaReport(0.1, 0.2, 10, 1000, 1 << 20, overhead),
        source_up=source_up,
    )


def _by_name(alerts: dict[Any, Any]) -> dict[tuple[str, str], tuple[dict[str, str], dict[str, str]]]:
    out = {}
    for labels, ann in alerts.items():
        lab = dict(labels)
        out[(lab["alertname"], lab["constraint"])] = (lab, dict(ann))
    return out


# --------------------------------------------------------------------------- pure mapping


def test_desired_alerts_follow_the_evaluation() -> None:
    pack = default_pack()
    got = _by_name(desired_alerts(_evaluation("latency", "invest"), pack))
    assert set(got) == {("CSFBindingConstraint", "latency")}
    labels, ann = got[("CSFBindingConstraint", "latency")]
    assert labels == {
        "alertname": "CSFBindingConstraint",
        "constraint": "latency",
        "pipeline": PIPE,
        "severity": "page",
    }
    assert ann["runbook_url"] == DEFAULT_RUNBOOK_BASE_URL + "constraint-latency.md"
    assert "Pressure 1.33x" in ann["description"] and "5/5 causal tests" in ann["description"]
    assert "$380k/year" in ann["description"] and "ROI 3.17x against threshold 3.00x" in ann["description"]

    # binding but deferred (ROI below theta): no page
    assert desired_alerts(_evaluation("latency", "defer"), pack) == {}
    # nothing binding: nothing
    assert desired_alerts(_evaluation(None), pack) == {}


def test_a_binding_without_economics_pages_in_push_mode_too() -> None:
    pages = _by_name(desired_alerts(_evaluation("latency", "investigate"), default_pack()))
    labels, ann = pages[("CSFBindingConstraint", "latency")]
    assert labels["severity"] == "page"
    assert "decision is invest" not in ann["description"] and "latency is binding" in ann["description"]
    # the same summary as the generated rule for a constraint without a revenue model
    assert ann["summary"] == "latency is the binding constraint of video: proven, payoff unknown"
    # a binding constraint whose fix does not pay ('defer') does not page
    assert ("CSFBindingConstraint", "latency") not in _by_name(desired_alerts(_evaluation("latency", "defer")))


def test_proxy_gap_source_and_meta_alerts() -> None:
    pack = default_pack()
    got = _by_name(
        desired_alerts(_evaluation(None, proxy="cold_start", observe="supply", overhead=0.6), pack)
    )
    assert set(got) == {
        ("CSFConstraintProxy", "cold_start"),
        ("CSFObservabilityGap", "supply"),
        ("CSFMetaOverhead", "meta"),
    }
    _, proxy = got[("CSFConstraintProxy", "cold_start")]
    assert "passed only 2/5" in proxy["description"]
    assert "not passed: segment_consistency, stratification, temporal_precedence." in proxy["description"]
    assert got[("CSFObservabilityGap", "supply")][0]["severity"] == "ticket"
    assert "transcode_wait_seconds_bucket" in got[("CSFObservabilityGap", "supply")][1]["description"]
    assert "0.60" in got[("CSFMetaOverhead", "meta")][1]["description"]

    # the gap pages when it hides the head of the sequence
    blind = _by_name(desired_alerts(_evaluation("observability", "observe", observe="latency"), pack))
    assert blind[("CSFObservabilityGap", "latency")][0]["severity"] == "page"
    down = _by_name(desired_alerts(_evaluation("observability", "observe", source_up=False), pack))
    assert down[("CSFSourceDown", "observability")][0]["severity"] == "page"
    # overhead at the limit, unknown or NaN: no alert
    for overhead in (0.5, None, math.nan):
        assert not desired_alerts(_evaluation(None, overhead=overhead), pack)


def test_pushed_alerts_match_the_generated_rules() -> None:
    """Same names, severities, label keys, annotation keys, summaries and runbook URLs as the rules."""
    pack = default_pack()
    (text,) = [t for n, t in generate_rules(pack).items() if n.endswith("-alerts.yml")]
    rules = [r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r]
    pushed = {}
    for ev in (
        _evaluation("latency", "invest"),
        _evaluation(None, proxy="cold_start", observe="supply", overhead=0.9),
        _evaluation("observability", "observe", observe="latency", source_up=False),
    ):
        pushed.update(_by_name(desired_alerts(ev, pack)))
    assert len(pushed) == 6
    for (name, constraint), (labels, ann) in pushed.items():
        candidates = [
            r
            for r in rules
            if r["alert"] == name
            and r["labels"]["severity"] == labels["severity"]
            and r["labels"].get("constraint", constraint) == constraint
        ]
        assert len(candidates) == 1, (name, constraint)
        rule = candidates[0]
        assert set(ann) == set(rule["annotations"]), name
        assert ann["summary"] == rule["annotations"]["summary"].replace("{{ $labels.pipeline }}", PIPE)
        for key in ann:
            if key.endswith("runbook_url"):
                assert ann[key] == rule["annotations"][key]
                assert (RUNBOOKS / ann[key].removeprefix(DEFAULT_RUNBOOK_BASE_URL)).is_file()


def test_formatting_helpers() -> None:
    assert format_rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert format_rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert humanize(380_000) == "380k"
    assert humanize(1_506_000) == "1.506M"
    assert humanize(0.25) == "0.25"
    assert humanize(float("nan")) == "unknown"


# --------------------------------------------------------------------------- adapter on a fake transport


class _FakeAM:
    """httpx transport recording POSTed alert lists; `fail` makes it refuse connections or answer 500."""

    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.fail: str | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.fail == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        self.posts.append(json.loads(request.content))
        if self.fail == "500":
            return httpx.Response(500, text="boom")
        assert request.url.path == "/am/api/v2/alerts"
        assert request.headers["content-type"] == "application/json"
        return httpx.Response(200)


def _pusher(fake: _FakeAM, tmp: Path | None = None, **kw: Any) -> AlertmanagerPusher:
    client = httpx.Client(transport=httpx.MockTransport(fake.handler))
    kw.setdefault("resend_interval", 60.0)
    return AlertmanagerPusher(
        "http://am.invalid/am/", PIPE, pack=default_pack(), state_dir=tmp, client=client, **kw
    )


def _parse(ts: str) -> float:
    assert ts.endswith("Z")
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_payload_resend_and_resolve() -> None:
    fake = _FakeAM()
    p = _pusher(fake)
    r = p.sync(_evaluation("latency"), T0)
    assert r.delivered and r.active == 1 and r.pending_resolves == 0
    (alert,) = fake.posts[0]
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert alert["labels"]["alertname"] == "CSFBindingConstraint"
    assert _parse(alert["startsAt"]) == T0
    assert _parse(alert["endsAt"]) == T0 + 4 * 60.0  # active: a few resend intervals ahead

    assert not p.sync(_evaluation("latency"), T0 + 30).attempted  # nothing new, resend not due
    r = p.sync(_evaluation("latency"), T0 + 60)
    assert r.delivered and len(fake.posts) == 2
    assert _parse(fake.posts[1][0]["startsAt"]) == T0  # stable across resends

    r = p.sync(_evaluation(None), T0 + 90)  # stopped: endsAt = now
    assert r.delivered and r.active == 0 and r.pending_resolves == 0
    (resolved,) = fake.posts[2]
    assert _parse(resolved["endsAt"]) == T0 + 90 and _parse(resolved["startsAt"]) == T0
    assert not p.sync(_evaluation(None), T0 + 500).attempted  # nothing left to say


def test_backoff_is_exponential_and_bounded_and_keeps_the_resolve() -> None:
    fake = _FakeAM()
    p = _pusher(fake, initial_backoff=1.0, max_backoff=8.0)
    assert p.sync(_evaluation("latency"), T0).delivered
    fake.fail = "connect"
    r = p.sync(_evaluation(None), T0 + 10)
    assert r.attempted and not r.delivered and r.error and "cannot reach" in r.error
    assert r.pending_resolves == 1 and r.next_attempt == T0 + 11

    now, delays = T0 + 10, []
    for _ in range(6):
        assert not p.flush(r.next_attempt - 0.01).attempted  # backing off: no request
        now = r.next_attempt
        r = p.flush(now)
        assert r.attempted and not r.delivered
        delays.append(r.next_attempt - now)
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert p.pending_resolves == (
        (
            ("alertname", "CSFBindingConstraint"),
            ("constraint", "latency"),
            ("pipeline", PIPE),
            ("severity", "page"),
        ),
    )

    fake.fail = "500"  # reachable but failing: still pending
    r = p.flush(now + 8)
    assert r.attempted and not r.delivered and "HTTP 500" in (r.error or "")
    fake.fail = None
    r = p.flush(now + 8 + 16)
    assert r.delivered and r.pending_resolves == 0
    (resolved,) = fake.posts[-1]
    assert _parse(resolved["endsAt"]) == T0 + 10  # the time it stopped, not the delivery time


def test_reactivated_before_resolve_was_delivered_keeps_the_incident() -> None:
    fake = _FakeAM()
    p = _pusher(fake)
    p.sync(_evaluation("latency"), T0)
    fake.fail = "connect"
    p.sync(_evaluation(None), T0 + 10)
    fake.fail = None
    r = p.sync(_evaluation("latency"), T0 + 20)
    assert r.delivered and r.pending_resolves == 0
    sent = {a["labels"]["alertname"]: a for a in fake.posts[-1]}
    # the page continues (same startsAt, still active); the move None -> latency is a change notice
    assert set(sent) == {"CSFBindingConstraint", "CSFBindingConstraintChanged"}
    alert = sent["CSFBindingConstraint"]
    assert _parse(alert["startsAt"]) == T0 and _parse(alert["endsAt"]) > T0 + 20
    assert _parse(sent["CSFBindingConstraintChanged"]["startsAt"]) == T0 + 20


def test_binding_change_alert_and_restart_from_state(tmp_path: Path) -> None:
    fake = _FakeAM()
    p = _pusher(fake, tmp_path, change_window=3600.0)
    p.sync(_evaluation("latency"), T0)
    r = p.sync(_evaluation("protocol"), T0 + 300)
    names = {(a["labels"]["alertname"], a["labels"]["constraint"]) for a in fake.posts[-1]}
    active = {(dict(k)["alertname"], dict(k)["constraint"]) for k in p.active}
    assert active == {("CSFBindingConstraint", "protocol"), ("CSFBindingConstraintChanged", "protocol")}
    assert ("CSFBindingConstraint", "latency") in names  # sent as resolved in the same request
    assert r.delivered
    p.close()

    # a restarted service reloads the active set: same labels and startsAt, no false change
    fake2 = _FakeAM()
    p2 = _pusher(fake2, tmp_path, change_window=3600.0)
    assert p2.active == p.active
    r = p2.sync(_evaluation("protocol"), T0 + 400)
    assert r.delivered
    starts = {a["labels"]["alertname"]: _parse(a["startsAt"]) for a in fake2.posts[0]}
    assert starts == {"CSFBindingConstraint": T0 + 300, "CSFBindingConstraintChanged": T0 + 300}
    # the change notice expires after the window
    p2.sync(_evaluation("protocol"), T0 + 300 + 3600)
    assert {dict(k)["alertname"] for k in p2.active} == {"CSFBindingConstraint"}


def test_unreadable_state_is_ignored(tmp_path: Path) -> None:
    (tmp_path / f"alertmanager-{PIPE}.json").write_text("{not json", encoding="utf-8")
    fake = _FakeAM()
    p = _pusher(fake, tmp_path)
    assert p.active == () and p.pending_resolves == ()
    assert p.sync(_evaluation("latency"), T0).delivered
    saved = json.loads((tmp_path / f"alertmanager-{PIPE}.json").read_text(encoding="utf-8"))
    assert saved["pipeline"] == PIPE and len(saved["active"]) == 1


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AlertmanagerPusher("", PIPE)
    with pytest.raises(ValueError):
        AlertmanagerPusher("http://x", PIPE, resend_interval=0)
    fake = _FakeAM()
    p = _pusher(fake)
    other = _evaluation("latency")
    with pytest.raises(ValueError):
        p.sync(Evaluation(**{**other.__dict__, "pipeline": "other"}), T0)


# --------------------------------------------------------------------------- real Alertmanager


def _require_alertmanager() -> str:
    return require_binary(ALERTMANAGER)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class _Webhook:
    """Alertmanager webhook receiver on 127.0.0.1, served from a thread of this process."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._lock:
                    outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        """Alerts of every notification with that notification status ('firing' / 'resolved')."""
        with self._lock:
            return [a for n in self.notifications if n["status"] == status for a in n["alerts"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _Alertmanager:
    """A real Alertmanager on a fixed loopback port; `start`/`stop` may be called repeatedly."""

    def __init__(self, tmp: Path, webhook_url: str) -> None:
        self.binary = _require_alertmanager()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "alertmanager.yml"
        self.storage = tmp / "am-data"
        self.log = tmp / "alertmanager.log"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname", "pipeline", "constraint"],
                        "group_wait": "200ms",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
                    ],
                }
            ),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.path={self.storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                return httpx.get(self.url + "/-/ready", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(ready, 15.0, "alertmanager /-/ready")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def active_alerts(self) -> list[dict[str, Any]]:
        return httpx.get(self.url + "/api/v2/alerts", timeout=2).json()


@pytest.fixture
def am(tmp_path: Path) -> Iterator[tuple[_Alertmanager, _Webhook]]:
    hook = _Webhook()
    manager = _Alertmanager(tmp_path, hook.url)
    try:
        manager.start()
        yield manager, hook
    finally:
        manager.stop()
        hook.close()


def _firing(hook: _Webhook, name: str) -> list[dict[str, Any]]:
    return [a for a in hook.alerts("firing") if a["labels"]["alertname"] == name]


def test_real_alertmanager_delivers_resolves_and_survives_a_pusher_restart(
    am: tuple[_Alertmanager, _Webhook], tmp_path: Path
) -> None:
    manager, hook = am
    state = tmp_path / "state"
    p1 = AlertmanagerPusher(
        manager.url, PIPE, resend_interval=60, timeout=2, pack=default_pack(), state_dir=state
    )
    t1 = time.time()
    assert p1.sync(_evaluation("latency", t=t1), t1).delivered

    _wait(lambda: len(_firing(hook, "CSFBindingConstraint")) == 1, 10, "the firing notification")
    (alert,) = _firing(hook, "CSFBindingConstraint")
    assert alert["labels"] == {
        "alertname": "CSFBindingConstraint",
        "constraint": "latency",
        "pipeline": PIPE,
        "severity": "page",
    }
    url = alert["annotations"]["runbook_url"]
    assert url == DEFAULT_RUNBOOK_BASE_URL + "constraint-latency.md"
    assert (RUNBOOKS / url.removeprefix(DEFAULT_RUNBOOK_BASE_URL)).is_file()
    assert alert["generatorURL"] == "http://localhost:9466/api/v1/status"
    assert abs(_parse(alert["startsAt"]) - t1) < 0.002
    p1.close()

    # the service restarts: the new pusher re-sends the same label set and startsAt
    p2 = AlertmanagerPusher(
        manager.url, PIPE, resend_interval=60, timeout=2, pack=default_pack(), state_dir=state
    )
    t2 = time.time()
    assert p2.sync(_evaluation("latency", t=t2), t2).delivered
    time.sleep(2.5)  # > 2 group intervals: a new incident would have been notified by now
    assert len(_firing(hook, "CSFBindingConstraint")) == 1
    (held,) = manager.active_alerts()
    assert held["fingerprint"] == alert["fingerprint"]
    assert abs(_parse(held["startsAt"]) - t1) < 0.002

    p2.close()

    # Alertmanager restarts too (its alert store is empty, its notification log is not) and
    # csf restarts once more: only the persisted startsAt can put the original back
    manager.stop()
    manager.start()
    assert manager.active_alerts() == []
    p3 = AlertmanagerPusher(
        manager.url, PIPE, resend_interval=60, timeout=2, pack=default_pack(), state_dir=state
    )
    t3 = time.time()
    assert p3.sync(_evaluation("latency", t=t3), t3).delivered
    time.sleep(2.5)
    assert len(_firing(hook, "CSFBindingConstraint")) == 1
    (held,) = manager.active_alerts()
    assert held["fingerprint"] == alert["fingerprint"]
    assert abs(_parse(held["startsAt"]) - t1) < 0.002

    # the constraint is relieved: Alertmanager notifies the resolve
    t3 = time.time()
    assert p3.sync(_evaluation(None, t=t3), t3).delivered
    _wait(lambda: len(hook.alerts("resolved")) == 1, 10, "the resolved notification")
    (resolved,) = hook.alerts("resolved")
    assert resolved["fingerprint"] == alert["fingerprint"]
    assert abs(_parse(resolved["endsAt"]) - t3) < 0.002
    assert manager.active_alerts() == []
    p3.close()


class _Outage:
    """A loopback TCP relay in front of Alertmanager whose link the test cuts and restores.

    While cut, every connection is reset as soon as it is accepted, so a client sees the
    outage at once and deterministically. The relay keeps its listening port the whole
    time (no other process can take it over), and Alertmanager itself keeps running, so
    the test does not depend on what Alertmanager persists when it is stopped.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # listener closed
            if self.cut.is_set():
                # SO_LINGER 0: close with RST, the client's request fails at once
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            for a, b in ((conn, upstream), (upstream, conn)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Outage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self._accept.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)


def test_real_alertmanager_outage_keeps_the_resolve_pending_until_delivered(
    am: tuple[_Alertmanager, _Webhook], tmp_path: Path
) -> None:
    manager, hook = am
    # a fresh connection per request: a pooled connection must not outlive the cut link
    keepalive_off = httpx.Limits(max_keepalive_connections=0)
    with _Outage(manager.port) as link, httpx.Client(limits=keepalive_off) as client:
        state = tmp_path / "state"
        p = AlertmanagerPusher(
            link.url,
            PIPE,
            resend_interval=60,
            timeout=5,
            pack=default_pack(),
            state_dir=state,
            initial_backoff=0.5,
            client=client,
        )
        try:
            t1 = time.time()
            assert p.sync(_evaluation("latency", t=t1), t1).delivered
            _wait(lambda: len(_firing(hook, "CSFBindingConstraint")) == 1, 10, "the firing notification")

            link.cut.set()  # Alertmanager is unreachable from here on
            t2 = time.time()
            r = p.sync(_evaluation(None, t=t2), t2)
            assert r.attempted and not r.delivered and r.error and r.pending_resolves == 1
            assert "cannot reach Alertmanager" in r.error
            assert not p.flush(t2 + 0.1).attempted  # backing off
            saved = json.loads((state / f"alertmanager-{PIPE}.json").read_text(encoding="utf-8"))
            assert len(saved["resolved"]) == 1 and saved["active"] == []
        finally:
            p.close()

        # csf restarts during the outage: the pending resolve survives in the state file
        p2 = AlertmanagerPusher(
            link.url,
            PIPE,
            resend_interval=60,
            timeout=5,
            pack=default_pack(),
            state_dir=state,
            client=client,
        )
        try:
            assert len(p2.pending_resolves) == 1
            r = p2.flush(time.time())
            assert r.attempted and not r.delivered
            # nothing was resolved while the link was cut: Alertmanager still holds the firing alert
            assert [a["labels"]["alertname"] for a in manager.active_alerts()] == ["CSFBindingConstraint"]
            assert hook.alerts("resolved") == []

            link.cut.clear()  # the link is back
            r = p2.flush(r.next_attempt or time.time())
            assert r.delivered and r.pending_resolves == 0
            _wait(lambda: len(hook.alerts("resolved")) == 1, 10, "the resolved notification after the outage")
            (resolved,) = hook.alerts("resolved")
            assert resolved["labels"]["constraint"] == "latency"
            assert abs(_parse(resolved["endsAt"]) - t2) < 0.002  # when it stopped, not when it was delivered
            assert len(_firing(hook, "CSFBindingConstraint")) == 1
        finally:
            p2.close()
