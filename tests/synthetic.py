"""Seeded panels with a known causal answer (for tests and benchmarks).

Every generator returns a `Panel` (x, y, strata, segments) shaped like the default
pack's latency panel: X is a p95 start latency in seconds, Y an abandonment ratio,
units are region x device_tier (3 segments x 3 strata = 9 units by default), one step
is 5 minutes (2016 steps = 7 days). Orientation is already "harm = positive slope".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

REGIONS: tuple[str, ...] = ("us", "eu", "apac")
TIERS: tuple[str, ...] = ("low", "mid", "high")
DAY_STEPS = 288
X_REF = 0.32
"""Typical p95 start latency (s); effects are relative to it."""


class Panel(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    strata: list[str]
    segments: list[str]


def labels(units: int) -> tuple[list[str], list[str]]:
    """Stratum (device tier) and segment (region) of each unit: unit u = region u//3, tier u%3."""
    strata = [TIERS[u % len(TIERS)] for u in range(units)]
    segments = [REGIONS[(u // len(TIERS)) % len(REGIONS)] for u in range(units)]
    return strata, segments


def _ar1(rng: np.random.Generator, units: int, steps: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise per unit with innovation sd `sd`."""
    e = rng.normal(0.0, sd, size=(units, steps))
    out = np.empty((units, steps))
    out[:, 0] = e[:, 0] / np.sqrt(1.0 - phi * phi)
    for t in range(1, steps):
        out[:, t] = phi * out[:, t - 1] + e[:, t]
    return out


def _diurnal(steps: int, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2.0 * np.pi * np.arange(steps) / DAY_STEPS)


def _lagged_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of x[t-1..t-k] (the first k steps use what exists, step 0 uses x[0])."""
    out = np.empty_like(x)
    csum = np.cumsum(x, axis=1)
    for t in range(x.shape[1]):
        lo, hi = max(t - k, 0), max(t, 1)
        total = csum[:, hi - 1] - (csum[:, lo - 1] if lo > 0 else 0.0)
        out[:, t] = total / (hi - lo)
    return out


def true_effect(
    units: int = 9,
    steps: int = 2016,
    seed: int = 0,
    effect: float = 0.02,
    lag: int = 3,
    noise: float = 0.0004,
) -> Panel:
    """X = unit level + shared daily cycle + AR(1); Y_t = base + effect * (mean(X_{t-1..t-lag}) - X_REF) + noise.

    A true lagged effect: passes all five tests. Unit levels of X and Y are drawn
    independently, so between-unit differences carry no spurious correlation.
    """
    rng = np.random.default_rng(seed)
    level = 0.32 + 0.04 * rng.standard_normal(units)
    x = level[:, None] + _diurnal(steps, 0.02)[None, :] + _ar1(rng, units, steps, 0.8, 0.012)
    base = 0.004 + 0.0001 * rng.standard_normal(units)
    # Segment-specific sensitivities within a factor of 1.5 (test 3 tolerates 3x).
    scale = np.array([1.0, 1.25, 0.85])[(np.arange(units) // len(TIERS)) % 3]
    y = (
        base[:, None]
        + effect * scale[:, None] * (_lagged_mean(x, lag) - X_REF)
        + _diurnal(steps, 0.0003)[None, :]
        + _ar1(rng, units, steps, 0.5, noise)
    )
    return Panel(x, y, *labels(units))


def between_unit_confounder(units: int = 9, steps: int = 2016, seed: int = 0) -> Panel:
    """A unit-level confounder raises both X's and Y's level; within a unit Y ignores X.

    Passes only dose-response (pooled bins see the between-unit correlation) -> proxy.
    """
    rng = np.random.default_rng(seed)
    c = np.linspace(-1.5, 1.5, units)[rng.permutation(units)]
    x = (0.32 + 0.05 * c)[:, None] + _diurnal(steps, 0.02)[None, :] + _ar1(rng, units, steps, 0.8, 0.012)
    y = (0.004 + 0.001 * c)[:, None] + _diurnal(steps, 0.0003)[None, :] + _ar1(rng, units, steps, 0.5, 0.0004)
    return Panel(x, y, *labels(units))


def reverse_causality(units: int = 9, steps: int = 2016, seed: int = 0, strength: float = 25.0) -> Panel:
    """Y is an autonomous AR(1); X_t follows Y_{t-1}. Fails temporal precedence."""
    rng = np.random.default_rng(seed)
    base = 0.004 + 0.0003 * rng.standard_normal(units)
    yn = _ar1(rng, units, steps, 0.7, 0.0004)
    y = base[:, None] + yn
    x_prev = np.concatenate([yn[:, :1], yn[:, :-1]], axis=1)
    level = 0.32 + 0.04 * rng.standard_normal(units)
    x = level[:, None] + strength * x_prev + _ar1(rng, units, steps, 0.3, 0.005)
    return Panel(x, y, *labels(units))


def feedback_loop(units: int = 9, steps: int = 2016, seed: int = 0, coupling: float = 0.4) -> Panel:
    """X_t and Y_t each depend as strongly on the other's previous step: a feedback loop.

    In standardised units x' = dX / 0.01 s and y' = dY / 0.0004:
    x'_t = 0.4 x'_{t-1} + c y'_{t-1} + e,  y'_t = 0.4 y'_{t-1} + c x'_{t-1} + e.
    """
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((2, units, steps))
    xs = np.zeros((units, steps))
    ys = np.zeros((units, steps))
    for t in range(1, steps):
        xs[:, t] = 0.4 * xs[:, t - 1] + coupling * ys[:, t - 1] + e[0, :, t]
        ys[:, t] = 0.4 * ys[:, t - 1] + coupling * xs[:, t - 1] + e[1, :, t]
    level = 0.32 + 0.04 * rng.standard_normal(units)
    base = 0.004 + 0.0003 * rng.standard_normal(units)
    return Panel(level[:, None] + 0.01 * xs, base[:, None] + 0.0004 * ys, *labels(units))


def level_noise_null(
    units: int = 9,
    steps: int = 2016,
    seed: int = 0,
    spread: float = 50.0,
    y_cv: float = 0.3,
    x_cv: float = 0.12,
) -> Panel:
    """No effect either way, with noise proportional to each unit's level (like real ratio metrics).

    Unit levels of Y are spaced geometrically over a factor `spread` (0.1% to 5%
    abandonment by default) in random order; X's level follows Y's across units (slow
    devices abandon more: a between-unit link only). Within a unit X and Y are
    independent log-normal AR(1) processes whose sd is `x_cv` / `y_cv` times the unit's
    level, so the noisiest Y units are also the noisiest X units. Both carry additive
    shared time effects (a daily cycle and common AR(1) shocks) that the time means
    remove. The right answer of test 4 is FAIL ("no temporal precedence"); a test with
    the right size passes it in about alpha of the seeds.
    """
    rng = np.random.default_rng(seed)
    y_level = 0.001 * np.geomspace(1.0, spread, units)[rng.permutation(units)]
    x_level = X_REF * (y_level / 0.007) ** 0.3
    x_var = _ar1(rng, units, steps, 0.8, x_cv * 0.6)  # stationary sd x_cv
    y_var = _ar1(rng, units, steps, 0.5, y_cv * np.sqrt(0.75))  # stationary sd y_cv
    x = x_level[:, None] * np.exp(x_var - 0.5 * x_cv**2)
    y = y_level[:, None] * np.exp(y_var - 0.5 * y_cv**2)
    x += _diurnal(steps, 0.02)[None, :] + 0.004 * _ar1(rng, 1, steps, 0.9, 1.0)
    y += _diurnal(steps, 0.0003)[None, :] + 0.0002 * _ar1(rng, 1, steps, 0.9, 1.0)
    return Panel(x, y, *labels(units))


def too_few_points(units: int = 9, steps: int = 288, seed: int = 0, present: int = 3) -> Panel:
    """A true effect where only `present` steps per unit survive (27 points by default)."""
    x, y, strata, segments = true_effect(units, steps, seed)
    keep = np.zeros(steps, dtype=bool)
    keep[steps - present :] = True
    x = np.where(keep[None, :], x, np.nan)
    y = np.where(keep[None, :], y, np.nan)
    return Panel(x, y, strata, segments)


def with_missing(panel: Panel, fraction: float, seed: int = 0) -> Panel:
    """Knock out a random `fraction` of X and (independently) of Y values: an unbalanced panel."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(panel.x.shape) < fraction, np.nan, panel.x)
    y = np.where(rng.random(panel.y.shape) < fraction, np.nan, panel.y)
    return Panel(x, y, list(panel.strata), list(panel.segments))
