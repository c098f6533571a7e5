"""Signal frames and the source protocol shared by every data source.

A source answers one question: the values of a `Signal` on a regular time grid.
The embedded store (`detector.native`), Prometheus (`detector.prometheus`) and
replayed files all implement `Source`, so the evaluator has one code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from detector.signals import Signal

Labels = tuple[tuple[str, str], ...]
"""A label set as sorted (name, value) pairs: hashable and ordered."""


def labels_key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True)
class SignalFrame:
    """Values of one signal: `values[u, t]` for unit `units[u]` at `times[t]` (NaN = no value)."""

    units: tuple[Labels, ...]
    times: np.ndarray
    values: np.ndarray
    samples_read: int = 0

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.units), len(self.times)):
            raise ValueError(f"frame values shape {self.values.shape} != ({len(self.units)}, {len(self.times)})")

    def unit_values(self, label: str) -> tuple[str, ...]:
        """The value of `label` for each unit ('' when absent)."""
        return tuple(dict(u).get(label, "") for u in self.units)

    def scalar_series(self) -> np.ndarray:
        """For a platform-wide frame (one unit, no labels): the values over time; all-NaN when empty."""
        if not self.units:
            return np.full(len(self.times), np.nan)
        if len(self.units) != 1:
            raise ValueError(f"expected one platform-wide series, got {len(self.units)}")
        return self.values[0]

    def last(self) -> float:
        """Newest value of a platform-wide frame (NaN when missing)."""
        s = self.scalar_series()
        return float(s[-1]) if len(s) else float("nan")


class SourceError(Exception):
    """The source could not answer (down, timeout, bad response). Makes constraints `observe`."""


class Source(Protocol):
    name: str

    def query_range(self, signal: Signal, start: float, end: float, step: float) -> SignalFrame:
        """Evaluate `signal` at start, start+step, ..., <= end. Raises SourceError when unavailable."""
        ...
