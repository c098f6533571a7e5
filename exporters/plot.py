"""Backtest timeline as a PNG (`csf backtest --plot FILE.png`; needs the optional extra ``plot``).

Top: the published binding constraint as coloured bands, one band per run of equal
verdicts. Beneath: each constraint's pressure (signal / target) with the 1.0 line
above which a constraint is beyond its target, on a log scale when the pressures
span more than a decade. Drawn on a private `Figure` with the Agg canvas: no pyplot,
no global state, no display needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Importing this module without matplotlib raises ImportError (csf backtest --plot says
# to install the `plot` extra). Only the object API is used: no pyplot, no backend state.
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from detector.evidence.results import Evaluation
from detector.spec.pack import OBSERVABILITY

PALETTE: tuple[str, ...] = (
    "#c0392b", "#2471a3", "#d68910", "#7d3c98", "#117a65", "#b03a2e", "#1f618d", "#7e5109",
)  # fmt: skip
"""Constraint colours in dependency order (the status page uses the same order)."""
OBSERVABILITY_COLOUR = "#7f8c8d"
NONE_COLOUR = "#d5dbdb"
NONE_LABEL = "none (healthy)"


@dataclass(frozen=True)
class Segment:
    """A run of evaluations that published the same binding constraint."""

    binding: str
    """Constraint name, 'observability', or NONE_LABEL."""
    start: float
    end: float
    """Unix seconds: from the first evaluation of the run to the first of the next run (or the last)."""
    evaluations: int
    colour: str


@dataclass(frozen=True)
class PlotSummary:
    """What was drawn: the bands and the pressure series."""

    path: Path
    segments: tuple[Segment, ...]
    pressures: tuple[str, ...]
    """Constraints with at least one finite pressure, in dependency order."""
    log_scale: bool
    width_px: int
    height_px: int


def constraint_colours(names: Sequence[str]) -> dict[str, str]:
    """Colour of each constraint (by position), observability and "none"."""
    out = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    out[OBSERVABILITY] = OBSERVABILITY_COLOUR
    out[NONE_LABEL] = NONE_COLOUR
    return out


def segments(evaluations: Sequence[Evaluation], colours: dict[str, str]) -> tuple[Segment, ...]:
    """Runs of equal published binding constraints, in time order."""
    evs = sorted(evaluations, key=lambda e: e.time)
    out: list[Segment] = []
    for i, ev in enumerate(evs):
        key = ev.binding or NONE_LABEL
        end = evs[i + 1].time if i + 1 < len(evs) else ev.time
        if out and out[-1].binding == key:
            last = out[-1]
            out[-1] = Segment(key, last.start, end, last.evaluations + 1, last.colour)
        else:
            out.append(Segment(key, ev.time, end, 1, colours.get(key, NONE_COLOUR)))
    return tuple(out)


def _pressure(ev: Evaluation, name: str) -> float:
    for c in ev.constraints:
        if c.name == name:
            r = c.pressure.ratio if c.pressure is not None else None
            return float(r) if r is not None and math.isfinite(r) and r > 0 else math.nan
    return math.nan


def _same_series(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
        for x, y in zip(a, b, strict=True)
    )


def _draw_bands(
    top: Any, bottom: Any, segs: Sequence[Segment], colours: dict[str, str], num: Any, span: float, step: float
) -> None:
    """The binding strip (top) and the faint bands behind the pressures (bottom)."""
    # bands: each run extends to the next run's first evaluation (the last one by one step)
    for seg in segs:
        end = seg.end + step if seg is segs[-1] else seg.end
        x0, x1 = num(seg.start), num(end)
        top.axvspan(x0, x1, color=seg.colour, linewidth=0)
        bottom.axvspan(x0, x1, color=seg.colour, alpha=0.07, linewidth=0)
        if (end - seg.start) / (span + step) > 0.07:
            label = seg.binding if seg.binding != NONE_LABEL else "none"
            text_colour = "#1c2833" if seg.colour == NONE_COLOUR else "white"
            top.text((x0 + x1) / 2, 0.5, label, ha="center", va="center", color=text_colour, fontsize=9,
                     fontweight="bold", clip_on=True)
    top.set_yticks([])
    top.set_ylim(0, 1)
    top.set_ylabel("binding", rotation=0, ha="right", va="center")
    seen = list(dict.fromkeys(s.binding for s in segs))
    top.legend(handles=[Patch(color=colours.get(b, NONE_COLOUR), label=b) for b in seen],
               loc="lower left", bbox_to_anchor=(0, 1.02), ncol=len(seen), frameon=False, fontsize=9)



def _draw_pressures(
    bottom: Any, evs: Sequence[Evaluation], names: Sequence[str], colours: dict[str, str], num: Any
) -> tuple[list[str], list[float]]:
    """One pressure line per constraint with data; returns (plotted names, finite values)."""
    xs = [num(ev.time) for ev in evs]
    plotted: list[str] = []
    drawn: dict[str, list[float]] = {}
    finite: list[float] = []
    for name in names:
        ys = [_pressure(ev, name) for ev in evs]
        good = [y for y in ys if not math.isnan(y)]
        if not good:
            continue
        plotted.append(name)
        finite += good
        # constraints that read the same signal (latency and protocol) share a line: dash the later one
        same = next((other for other, o in drawn.items() if _same_series(o, ys)), None)
        style = {"linestyle": (0, (3, 3)), "label": f"{name} (= {same})"} if same else {"label": name}
        bottom.plot(xs, ys, color=colours[name], linewidth=1.6, **style)
        drawn[name] = ys
    return plotted, finite


def plot_backtest(
    evaluations: Sequence[Evaluation],
    path: str | Path,
    *,
    title: str | None = None,
    width: float = 12.0,
    height: float = 6.5,
    dpi: int = 100,
) -> PlotSummary:
    """Write the backtest PNG to `path` and describe what was drawn. Raises ValueError when empty."""
    if not evaluations:
        raise ValueError("no evaluations to plot")

    evs = sorted(evaluations, key=lambda e: e.time)
    names = [c.name for c in evs[0].constraints]
    colours = constraint_colours(names)
    segs = segments(evs, colours)

    def num(t: float) -> float:
        return float(date2num(datetime.fromtimestamp(t, UTC)))

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 4))
    span = max(evs[-1].time - evs[0].time, 1.0)
    step = span / max(len(evs) - 1, 1)

    _draw_bands(top, bottom, segs, colours, num, span, step)
    plotted, finite = _draw_pressures(bottom, evs, names, colours, num)
    bottom.axhline(1.0, color="#1c2833", linestyle="--", linewidth=1.0, label="target (1.0)")
    log_scale = bool(finite) and max(finite) / min(finite) > 10.0
    if log_scale:
        bottom.set_yscale("log")
    bottom.set_ylabel("pressure (signal / target)")
    bottom.grid(True, which="major", color="#d5dbdb", linewidth=0.6)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    bottom.set_xlim(num(evs[0].time), num(evs[-1].time + step))
    changes = len(segs) - 1
    heading = title or (
        f"csf backtest: {len(evs)} evaluations, {changes} binding change{'' if changes == 1 else 's'}"
    )
    fig.suptitle(heading, fontsize=11)

    out = Path(path)
    fig.savefig(out, format="png", dpi=dpi)
    return PlotSummary(
        path=out,
        segments=segs,
        pressures=tuple(plotted),
        log_scale=log_scale,
        width_px=round(width * dpi),
        height_px=round(height * dpi),
    )


__all__ = ["NONE_LABEL", "PALETTE", "PlotSummary", "Segment", "constraint_colours", "plot_backtest", "segments"]
