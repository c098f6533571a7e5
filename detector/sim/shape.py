"""Real-world shapes for the simulator's output: pods, lost scrapes, late units, counter resets.

Real deployments do not send data shaped like `detector.sim.simulator.Simulator`'s: series
are split across pods carrying ``instance``/``job``/``pod`` labels, scrapes get lost,
a region joins mid-window, processes restart and their counters start again from 0.
`ShapedSimulator` plays the same platform with such a shape applied to every series of
`Simulator.generate` (the sample interval is the simulator's own ``interval``):

``pods``               counters and histogram series (buckets, ``_sum``, ``_count``) are
                       split across N pods of job ``platform``, with fixed shares
                       (N, N-1, ..., 1) / sum that add up to the unsplit series, so any
                       ``sum by`` over the pods gives the unsplit value. Each pod series
                       carries ``instance="pod-<i>:8080"``, ``job``, ``pod="pod-<i>"``.
                       Gauges are not split: they come from one exporter target
                       (``instance="exporter:9100"``, ``job="platform-exporter"``).
``lost_scrape_ratio``  each (target, sample time) scrape is lost with this probability;
                       a lost scrape drops every series of that target at that time, as a
                       failed Prometheus scrape does. A target is one pod (or, without
                       pods, the platform) or the gauge exporter.
``late_unit``          series whose labels include these label values emit nothing before
                       ``origin + late_after``; they then appear with their running totals,
                       as when a scrape job is added for a target that was already running.
``counter_resets``     times (seconds after ``origin``) at which pod 0 (or, without pods,
                       the platform process) restarts: from the first sample at or after
                       each reset its counters and histogram series count again from
                       the increment of that one interval, as a restarted process does.

Determinism: everything depends only on (seed, shape, sample time), never on how a
time range is split into `generate` calls, like the simulator itself. A lost scrape's
draw comes from a generator seeded by (seed, target, block of sample indices); a
counter's value at a reset is taken from the simulator at that instant.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from detector.sim.metrics import SeriesChunk
from detector.sim.simulator import BLOCK_STEPS, Simulator

POD_JOB = "platform"
EXPORTER_JOB = "platform-exporter"
EXPORTER_INSTANCE = "exporter:9100"


@dataclass(frozen=True)
class Shape:
    pods: int = 0
    lost_scrape_ratio: float = 0.0
    late_unit: tuple[tuple[str, str], ...] = ()
    """Label values of the unit that joins late, e.g. ``(("region", "apac"),)``."""
    late_after: float = 0.0
    """Seconds after the simulator's origin at which the late unit appears."""
    counter_resets: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not (isinstance(self.pods, int) and 0 <= self.pods <= 64):
            raise ValueError(f"pods must be an integer in [0, 64], got {self.pods!r}")
        if not (0.0 <= self.lost_scrape_ratio < 1.0):
            raise ValueError(f"lost_scrape_ratio must be in [0, 1), got {self.lost_scrape_ratio!r}")
        if not math.isfinite(self.late_after):
            raise ValueError(f"late_after must be finite, got {self.late_after!r}")
        for t in self.counter_resets:
            if not math.isfinite(t):
                raise ValueError(f"counter_resets must be finite times, got {t!r}")
        if list(self.counter_resets) != sorted(self.counter_resets):
            raise ValueError(f"counter_resets must be in increasing order, got {self.counter_resets!r}")

    @property
    def is_plain(self) -> bool:
        return (
            self.pods == 0
            and self.lost_scrape_ratio == 0.0
            and not self.late_unit
            and not self.counter_resets
        )

    def shares(self) -> np.ndarray:
        n = max(1, self.pods)
        w = np.arange(n, 0, -1, dtype=np.float64)
        return w / w.sum()


def parse_late_unit(text: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """``'region=apac@2d'`` -> (``(("region", "apac"),)``, ``'2d'``); several labels joined by ``,``."""
    if "@" not in text:
        raise ValueError(f"late unit {text!r} must look like 'label=value[,label=value]@DURATION'")
    labels_text, _, after = text.rpartition("@")
    pairs = []
    for part in labels_text.split(","):
        name, eq, value = part.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise ValueError(f"late unit {text!r}: {part!r} is not label=value")
        pairs.append((name.strip(), value.strip()))
    return tuple(sorted(pairs)), after


class ShapedSimulator:
    """`Simulator` output with a `Shape` applied (see the module docstring)."""

    def __init__(self, sim: Simulator, shape: Shape) -> None:
        self.sim = sim
        self.shape = shape
        self._reset_values: dict[float, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        self._lost: dict[tuple[int, int], np.ndarray] = {}

    @property
    def origin(self) -> float:
        return self.sim.origin

    @property
    def interval(self) -> float:
        return self.sim.interval

    def generate(self, t0: float, t1: float) -> Iterator[SeriesChunk]:
        """Every shaped series over [t0, t1), in the simulator's family order.

        A histogram's series of one label set (buckets, ``_count``, ``_sum``) stay together
        per pod, as OpenMetrics requires."""
        if self.shape.is_plain:
            yield from self.sim.generate(t0, t1)
            return
        pods = range(max(1, self.shape.pods))
        group: list[tuple[str, str, dict[str, str], np.ndarray, np.ndarray]] = []
        group_key: tuple[str, tuple[tuple[str, str], ...]] | None = None
        for name, family_type, labels, ts, values in self.sim.generate(t0, t1):
            if family_type != "histogram":
                if group:
                    yield from self._flush(group, pods)
                for pod in pods:
                    yield from self._shape(name, family_type, dict(labels), ts, values, pod)
                continue
            family = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
            key = (family, tuple(sorted((k, v) for k, v in labels.items() if k != "le")))
            if group and key != group_key:
                yield from self._flush(group, pods)
            group_key = key
            group.append((name, family_type, dict(labels), ts, values))
        if group:
            yield from self._flush(group, pods)

    def _flush(
        self, group: list[tuple[str, str, dict[str, str], np.ndarray, np.ndarray]], pods: range
    ) -> Iterator[SeriesChunk]:
        for pod in pods:
            for name, family_type, labels, ts, values in group:
                yield from self._shape(name, family_type, labels, ts, values, pod)
        group.clear()

    # ---------------------------------------------------------------- one series

    def _shape(
        self,
        name: str,
        family_type: str,
        labels: dict[str, str],
        ts: np.ndarray,
        values: np.ndarray,
        pod: int,
    ) -> Iterator[SeriesChunk]:
        shape = self.shape
        keep = np.ones(len(ts), dtype=bool)
        if shape.late_unit and all(labels.get(k) == v for k, v in shape.late_unit):
            keep &= ts >= self.origin + shape.late_after - 1e-9
        if family_type == "gauge":
            if pod != 0:
                return
            out = {**labels, "instance": EXPORTER_INSTANCE, "job": EXPORTER_JOB} if shape.pods else labels
            mask = keep & ~self._lost_mask(-1, ts)
            if mask.any():
                yield name, family_type, out, ts[mask], values[mask]
            return
        share = float(shape.shares()[pod])
        v = values * share
        if pod == 0 and shape.counter_resets:
            v = self._after_resets(name, labels, ts, v, share)
        mask = keep & ~self._lost_mask(pod, ts)
        if not mask.any():
            return
        out = dict(labels)
        if shape.pods:
            out.update({"instance": f"pod-{pod}:8080", "job": POD_JOB, "pod": f"pod-{pod}"})
        yield name, family_type, out, ts[mask], v[mask]

    def _after_resets(
        self, name: str, labels: Mapping[str, str], ts: np.ndarray, v: np.ndarray, share: float
    ) -> np.ndarray:
        """Pod 0's values with every counter restart applied."""
        out = np.array(v, dtype=np.float64)
        key = (name, tuple(sorted(labels.items())))
        for reset in self.shape.counter_resets:
            at = self._grid_at_or_after(self.origin + reset)
            after = ts >= at - 1e-9
            if after.any():
                out[after] = v[after] - share * self._value_before(at, key)
        return out

    def _grid_at_or_after(self, t: float) -> float:
        k = math.ceil((t - self.origin) / self.interval - 1e-9)
        return self.origin + k * self.interval

    def _value_before(self, at: float, key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        """The unsplit series' value one interval before the restart at `at` (0 before history)."""
        cache = self._reset_values.get(at)
        if cache is None:
            before = at - self.interval
            cache = {}
            if before >= self.sim.history_start:
                for n, _typ, lbl, _ts, vals in self.sim.generate(before, at):
                    cache[(n, tuple(sorted(lbl.items())))] = float(vals[0])
            self._reset_values[at] = cache
        return cache.get(key, 0.0)

    def _lost_mask(self, target: int, ts: np.ndarray) -> np.ndarray:
        """True where the scrape of `target` (pod index, -1: the exporter) at `ts` is lost."""
        ratio = self.shape.lost_scrape_ratio
        if ratio <= 0.0 or len(ts) == 0:
            return np.zeros(len(ts), dtype=bool)
        k = np.rint((ts - self.origin) / self.interval).astype(np.int64)
        blocks = np.floor_divide(k, BLOCK_STEPS)
        out = np.empty(len(ts), dtype=bool)
        for b in np.unique(blocks):
            draws = self._lost.get((target, int(b)))
            if draws is None:
                rng = np.random.default_rng([self.sim.seed, 0x5C4A, target + 1, int(b) % (1 << 62)])
                draws = rng.random(BLOCK_STEPS) < ratio
                self._lost[(target, int(b))] = draws
            sel = blocks == b
            out[sel] = draws[k[sel] - int(b) * BLOCK_STEPS]
        return out


__all__ = [
    "EXPORTER_INSTANCE",
    "EXPORTER_JOB",
    "POD_JOB",
    "Shape",
    "ShapedSimulator",
    "parse_late_unit",
]
