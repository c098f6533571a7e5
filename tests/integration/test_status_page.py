"""The status page: renderer unit tests, and the real page of a running `csf serve` in headless Chromium.

The browser test screenshots ``/`` into ``test-artifacts/status-page.png`` and dumps the
rendered DOM, whose ``id="binding"`` element must name the binding constraint that
``/api/v1/status`` returns for the same evaluation.
"""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from detector.evidence.results import CausalEvidence, Pressure, TestResult
from exporters.status_page import render_status_page
from tests.conftest import ServerProcess, make_evaluation, make_result, require_binary

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
WINDOW = (1400, 1800)
CHROMIUM_TIMEOUT = 90.0
DOM_ATTEMPTS = 5
"""Status/DOM pairs tried before giving up (an evaluation may land between the two)."""


# --------------------------------------------------------------------------- helpers


class _ById(HTMLParser):
    """Text content of every element that has an id (the first element per id)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: dict[str, str] = {}
        self.attrs_by_id: dict[str, dict[str, str | None]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.data_attrs: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.data_attrs.append((tag, a))
        if tag in ("meta", "br", "img", "input", "link", "hr"):
            return
        ident = a.get("id")
        if ident is not None and ident not in self.text:
            self.text[ident] = ""
            self.attrs_by_id[ident] = a
        self._open.append((tag, ident))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident is not None:
                self.text[ident] += data


def parse(html: str) -> _ById:
    p = _ById()
    p.feed(html)
    p.close()
    return p


def png_info(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) of a PNG; raises ValueError if it is not a sound PNG.

    Walks every chunk checking its CRC, and inflates the image data to check it has
    exactly the bytes the header promises.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("no PNG signature")
    pos, chunks, idat = 8, [], b""
    header: tuple[int, int, int, int] | None = None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        chunks.append(kind)
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            header = (w, h, depth, colour)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if header is None or chunks[0] != b"IHDR" or chunks[-1] != b"IEND":
        raise ValueError(f"bad chunk order {chunks[:3]}...{chunks[-2:]}")
    w, h, depth, colour = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    expected = h * (1 + (w * channels * depth + 7) // 8)
    if len(zlib.decompress(idat)) != expected:
        raise ValueError("image data length does not match the header")
    return header


def chromium_cmd(binary: str, profile: Path, *args: str) -> list[str]:
    return [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip


def run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    env = {**os.environ, "HOME": str(tmp)}
    r = subprocess.run(
        chromium_cmd(binary, profile, *args),
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, f"chromium failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def screenshot(binary: str, tmp: Path, url: str, out: Path) -> bytes:
    out.unlink(missing_ok=True)
    run_chromium(binary, tmp, f"--screenshot={out}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url)
    return out.read_bytes()


def fmt_time(rfc3339: str) -> str:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- renderer


def test_page_names_the_binding_constraint_and_every_constraint():
    constraints = [
        make_result("latency", "binding", "invest", pressure=Pressure(0.75, 2.5, True, 3, 4)),
        make_result("protocol", "deferred", "defer"),
        make_result("supply"),
        make_result("meta"),
    ]
    ev = make_evaluation(1_700_000_000.25, binding="latency", decision="invest", constraints=constraints)
    page = parse(render_status_page(ev.to_dict(), [], refresh_seconds=17))
    assert page.text["binding"] == "latency"
    assert page.text["decision"] == "decision: invest"
    latency_row = render_status_page(ev.to_dict()).split('data-constraint="latency"', 1)[1].split("</tr>")[0]
    assert "<td class=num>2.50</td>" in latency_row
    assert "binding" in (page.attrs_by_id["verdict"]["class"] or "").split()
    # 1_700_000_000 s after the epoch is 2023-11-14 22:13:20 UTC
    assert page.text["evaluated"] == "2023-11-14 22:13:20 UTC"
    rows = [a["data-constraint"] for tag, a in page.data_attrs if tag == "tr" and "data-constraint" in a]
    assert rows == ["latency", "protocol", "supply", "meta"]
    pills = [a["data-state"] for tag, a in page.data_attrs if "data-state" in a]
    assert pills == ["binding", "deferred", "slack", "slack"]
    assert '<meta http-equiv="refresh" content="17">' in render_status_page(ev.to_dict(), [], 17)


def test_verdict_colour_follows_the_decision():
    def classes(decision: str, binding: str | None = "latency") -> list[str]:
        ev = make_evaluation(0.0, binding=binding, decision=decision)
        return (parse(render_status_page(ev.to_dict())).attrs_by_id["verdict"]["class"] or "").split()

    assert classes("invest") == ["verdict", "binding"]
    assert classes("defer") == ["verdict", "binding", "defer"]
    assert classes("investigate") == ["verdict", "binding", "investigate"]
    assert classes("observe", "observability") == ["verdict", "observability"]
    assert classes("stop", None) == ["verdict"]


def test_a_hysteresis_hold_shows_as_a_hold_not_a_red_binding():
    """After the fix, the binding is held until its pressure stays low for exit_after
    evaluations: the page says so instead of a red 'binding' banner with decision 'stop'."""
    from detector.decision.decide import HysteresisState, decide
    from tests.unit.test_decision import META, _evidence, _pack

    pack = _pack(enter=1, exit_=6)
    state = HysteresisState()
    evaluations = []
    for i, ratio in enumerate([1.5, 0.5, 0.5]):
        ev, state = decide(pack, _evidence(pack, float(i), a=ratio), state, META)
        evaluations.append(ev)
    binding_now, held = evaluations[0], evaluations[2]
    assert binding_now.hold is None and held.binding == "a"
    assert held.hold == ("a", 2, 6, 0.9)
    doc = held.to_dict()
    assert doc["hold"] == {"constraint": "a", "evaluations_below": 2, "needed": 6, "release_below": 0.9}
    page = parse(render_status_page(doc))
    assert (page.attrs_by_id["verdict"]["class"] or "").split() == ["verdict", "binding", "held"]
    assert "released after 6 consecutive evaluations below 0.90 (2 so far)" in page.text["hold"]
    assert "its pressure is back within target" in page.text["hold"]
    # held while still beyond target (its causal or sustained evidence lapsed): the banner must
    # not claim the pressure is back within target
    beyond = dict(doc, constraints=[dict(c, pressure=1.4) if c["name"] == "a" else c for c in doc["constraints"]])
    still = parse(render_status_page(beyond)).text["hold"]
    assert "back within target" not in still
    assert "its pressure is still beyond target (1.40x) but it no longer binds on its own evidence" in still
    plain = parse(render_status_page(binding_now.to_dict()))
    assert "hold" not in plain.text and "held" not in (plain.attrs_by_id["verdict"]["class"] or "")


def test_healthy_and_not_yet_evaluated_pages():
    healthy = parse(render_status_page(make_evaluation(0.0).to_dict()))
    assert healthy.text["binding"] == "none (healthy)"
    assert "binding" not in (healthy.attrs_by_id["verdict"]["class"] or "").split()
    waiting = parse(render_status_page(None))
    assert waiting.text["binding"] == "no evaluation yet"


def test_text_from_the_evaluation_is_escaped():
    evil = "<script>alert(1)</script>"
    c = make_result("latency", "binding", "invest")
    ev = make_evaluation(0.0, binding="latency", constraints=[c])
    d = ev.to_dict()
    d["explanation"] = evil
    d["constraints"][0]["explanation"] = evil
    html = render_status_page(d, [{"time": evil, "binding": evil}], pipelines=["a", evil])
    assert "<script>" not in html
    assert html.count("&lt;script&gt;") >= 4
    assert parse(html).text["explanation"] == evil


def test_timeline_has_one_bar_per_row_oldest_first_with_a_legend():
    constraints = [make_result(n) for n in ("latency", "protocol", "supply", "meta")]
    ev = make_evaluation(100.0, binding="protocol", constraints=constraints)
    bindings = [None, "latency", "latency", "protocol", "observability", "protocol"]
    rows = [{"time": f"2024-01-01T00:0{i}:00Z", "binding": b} for i, b in enumerate(bindings)]
    page = parse(render_status_page(ev.to_dict(), rows))
    bars = [a for tag, a in page.data_attrs if tag == "span" and "data-binding" in a]
    assert [b["data-binding"] for b in bars] == ["none", "latency", "latency", "protocol", "observability",
                                                 "protocol"]
    colours = {b["data-binding"]: (b["style"] or "").removeprefix("background:") for b in bars}
    # one colour per constraint, grey for observability, a light grey for none
    assert len(set(colours.values())) == 4
    assert colours["observability"] == "#7f8c8d"
    assert page.text["timeline"] == ""
    assert page.text["timeline-span"].split(" ", 3)[:3] == ["2024-01-01", "00:00:00", "UTC"]
    assert page.text["timeline-span"].endswith("2024-01-01 00:05:00 UTC")
    # the legend lists each binding once, in order of first appearance
    assert page.text["timeline-legend"].split() == ["none", "latency", "protocol", "observability"]


def test_causal_tests_fold_except_for_the_binding_constraint():
    def causal(passed: int) -> CausalEvidence:
        tests = tuple(
            TestResult(n, "PASS" if i < passed else "FAIL", 1.0, 1e-6 * (i + 1), 100, "r")
            for i, n in enumerate(("within_unit", "stratification", "segment_consistency",
                                   "temporal_precedence", "dose_response"))
        )
        return CausalEvidence(verdict="causal" if passed >= 3 else "proxy", passed=passed, inconclusive=0,
                              tests=tests, gamma=2.0, reason="x")

    constraints = [make_result("latency", "binding", "invest", causal=causal(4)),
                   make_result("protocol", "slack", "stop", causal=causal(2))]
    html = render_status_page(make_evaluation(0.0, binding="latency", constraints=constraints).to_dict())
    assert '<details data-constraint="latency" open><summary><b>latency</b> · 4 of 5 pass · causal' in html
    assert '<details data-constraint="protocol"><summary><b>protocol</b> · 2 of 5 pass · proxy' in html
    # p-values: two significant digits, scientific below 0.001
    assert "<td class=num>1.0e-06</td>" in html and "<td class=num>5.0e-06</td>" in html


# --------------------------------------------------------------------------- real page, real browser


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_binary("chromium")


def test_status_page_in_headless_chromium(
    chromium: str, csf_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = csf_server()
    server.wait_ready()
    url = server.url + "/"

    # the DOM names the binding constraint of the evaluation /api/v1/status returns
    checked = None
    for _ in range(DOM_ATTEMPTS):
        before = server.get("/api/v1/status").json()
        dom = run_chromium(chromium, tmp_path, "--dump-dom", url).stdout
        after = server.get("/api/v1/status").json()
        if before["time"] != after["time"]:
            continue  # an evaluation landed in between: the DOM may show either one
        page = parse(dom)
        assert page.text.get("evaluated") == fmt_time(before["time"]), dom[:2000]
        expected = before["binding"] or "none (healthy)"
        assert page.text["binding"] == expected, dom[:2000]
        rows = [a["data-constraint"] for t, a in page.data_attrs if t == "tr" and "data-constraint" in a]
        assert rows == [c["name"] for c in before["constraints"]]
        checked = before
        break
    assert checked is not None, f"status changed during every one of {DOM_ATTEMPTS} attempts"
    assert "timeline" in page.text, "the stored history should draw a timeline"

    # a screenshot of the page, much richer than one of an empty page of the same size
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    data = screenshot(chromium, tmp_path, url, shot)
    w, h, depth, colour = png_info(data)
    assert (w, h) == WINDOW and depth == 8 and colour in (2, 6)
    blank = screenshot(chromium, tmp_path, "about:blank", tmp_path / "blank.png")
    assert png_info(blank)[:2] == WINDOW
    assert len(data) > 5 * len(blank), (len(data), len(blank))


def test_docs_screenshot_is_a_small_valid_png():
    doc = ROOT / "docs/status-page.png"
    assert doc.is_file(), "docs/status-page.png is referenced by the README"
    data = doc.read_bytes()
    w, h, _, _ = png_info(data)
    assert w >= 800 and h >= 600
    assert len(data) < 600_000

