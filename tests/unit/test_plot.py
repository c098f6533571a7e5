"""`exporters.plot.plot_backtest`: a valid PNG whose bands follow the backtest's binding timeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detector.decision.backtest import run_backtest, summary
from detector.evidence.results import Pressure
from detector.sim.simulator import Simulator
from detector.source.native import NativeSource
from detector.source.store import SampleStore
from detector.spec.load import default_pack
from tests.conftest import in_ci, make_evaluation, make_result
from tests.integration.test_status_page import png_info

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = 1_780_000_000.0 - (1_780_000_000.0 % 3600)
HOUR = 3600.0


@pytest.fixture(scope="module")
def plot_module():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if in_ci():
            pytest.fail("matplotlib is required when CI=true (pip install -e '.[dev,plot]')")
        pytest.skip("matplotlib not installed (optional extra 'plot')")
    from exporters import plot

    return plot


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def count_colour(png: Path, hex_colour: str) -> int:
    """Pixels of exactly this colour (the bands are drawn opaque, without anti-aliasing inside)."""
    import numpy as np
    from matplotlib.image import imread

    img = np.round(imread(png)[..., :3] * 255).astype(int)
    return int(np.all(img == np.array(rgb(hex_colour)), axis=-1).sum())


def test_short_sequence_backtest_plot(plot_module, tmp_path: Path) -> None:
    pack = default_pack()
    store = SampleStore(retention=None)
    Simulator("sequence", seed=1, origin=ORIGIN, interval=60.0).write_to(
        store, ORIGIN - pack.windows.lookback - HOUR, ORIGIN + 16 * HOUR + 1
    )
    times = [ORIGIN + k * 2 * HOUR for k in range(9)]
    evaluations = run_backtest(pack, NativeSource(store), times)
    out = tmp_path / "backtest.png"
    drawn = plot_module.plot_backtest(evaluations, out)

    w, h, depth, _ = png_info(out.read_bytes())
    assert (w, h) == (drawn.width_px, drawn.height_px) == (1200, 650) and depth == 8
    # the bands are the backtest's own timeline (computed by detector.decision.backtest.summary)
    expected = [(seg["binding"], seg["evaluations"]) for seg in summary(evaluations, 2 * HOUR)["timeline"]]
    assert [(s.binding.replace(plot_module.NONE_LABEL, "none"), s.evaluations) for s in drawn.segments] == expected
    # the first phase of `sequence` is latency: it binds after the hysteresis, and is drawn as a band
    assert expected[-1][0] == "latency"
    colours = plot_module.constraint_colours([c.name for c in evaluations[0].constraints])
    band = count_colour(out, colours["latency"])
    assert band > 30_000, band  # latency band: most of a ~1100 x 100 px strip
    # supply never binds here: its colour only draws its thin pressure line
    assert count_colour(out, colours["supply"]) < band / 10
    assert "latency" in drawn.pressures and "meta" not in drawn.pressures
    if os.environ.get("CSF_KEEP_PLOTS"):
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        (ROOT / "test-artifacts/backtest-short.png").write_bytes(out.read_bytes())


def test_segments_and_scale_from_constructed_evaluations(plot_module, tmp_path: Path) -> None:
    def ev(t: float, binding: str | None, latency: float, supply: float):
        cs = [make_result("latency", pressure=Pressure(latency, latency, False, 0, 1)),
              make_result("supply", pressure=Pressure(supply, supply, False, 0, 1)),
              make_result("meta")]
        return make_evaluation(t, binding=binding, constraints=cs)

    evs = [ev(0, None, 0.5, 0.5), ev(60, "latency", 2.0, 0.5), ev(120, "latency", 3.0, 0.4),
           ev(180, "observability", 40.0, 0.3), ev(240, None, 0.5, 0.5)]
    # given out of order: the plot sorts by time
    drawn = plot_module.plot_backtest(list(reversed(evs)), tmp_path / "p.png", width=6, height=4, dpi=50)
    assert [(s.binding, s.start, s.end, s.evaluations) for s in drawn.segments] == [
        (plot_module.NONE_LABEL, 0, 60, 1), ("latency", 60, 180, 2), ("observability", 180, 240, 1),
        (plot_module.NONE_LABEL, 240, 240, 1),
    ]
    assert drawn.log_scale  # 40 / 0.3 spans more than a decade
    assert png_info((tmp_path / "p.png").read_bytes())[:2] == (300, 200)
    narrow = plot_module.plot_backtest(evs[:3], tmp_path / "q.png")
    assert not narrow.log_scale  # 3.0 / 0.4 < 10
    with pytest.raises(ValueError, match="no evaluations"):
        plot_module.plot_backtest([], tmp_path / "r.png")


def test_docs_backtest_plot_is_a_small_valid_png():
    doc = ROOT / "docs/backtest-sequence.png"
    assert doc.is_file()
    data = doc.read_bytes()
    w, h, _, _ = png_info(data)
    assert (w, h) == (1200, 650) and len(data) < 400_000
