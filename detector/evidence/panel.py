"""The panel the causal tests share: fit types, input checks, and the exact within transformation.

`prepare_panel` removes unit (and, with >= 3 units, time) fixed effects from a panel
``x[u, t]``, ``y[u, t]`` exactly on an unbalanced grid (the conventions are in
`detector.evidence.causal`); the fit types are what the estimators return, shared with the
statsmodels reference implementation in tests/oracles/.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_VARIATION_RTOL = 1e-9
"""A demeaned series whose norm is below this share of the raw norm has no variation."""
PIVOT_RTOL = 1e-7
"""Cholesky pivot of the unit-norm lag Gram matrix (the sine of a column's angle to the
columns before it) below this: the lag matrix is singular."""
COV_RTOL = 1e-10
"""Smallest eigenvalue of the robust correlation matrix of the tested lag coefficients
below this: that covariance is singular (too few time steps for the test)."""


# --------------------------------------------------------------------------------------
# Typed intermediate results (shared with the reference implementation)


@dataclass(frozen=True)
class Unavailable:
    """A statistic that cannot be computed on this data (-> INCONCLUSIVE)."""

    reason: str
    n: int


@dataclass(frozen=True)
class SlopeFit:
    """Test-1 regression on a set of units."""

    slope: float
    se: float
    t: float
    p: float
    n: int
    """Usable points."""
    units: int
    df: float
    """Degrees of freedom of the t distribution used for p."""
    two_way: bool
    hac_lags: int
    """Newey-West lags (single unit), 0 when clustered."""


@dataclass(frozen=True)
class GrangerFit:
    f_xy: float
    p_xy: float
    f_yx: float
    p_yx: float
    n: int
    """Rows (unit, step) with complete lags."""
    df_num: int
    df_den: int
    """F(df_num, df_den) reference distribution: df_den = periods - df_num."""
    periods: int
    """Steps with at least one complete row: the clusters of the covariance."""


@dataclass(frozen=True)
class DoseFit:
    rho: float
    t: float
    p: float
    df: float
    n: int
    bin_means: tuple[float, ...]
    """Means of the non-empty bins, in bin order."""
    bin_counts: tuple[int, ...]


SlopeResult = SlopeFit | Unavailable
GrangerResult = GrangerFit | Unavailable
DoseResult = DoseFit | Unavailable


# --------------------------------------------------------------------------------------
# Input handling (shared)


def check_panel(
    x: np.ndarray, y: np.ndarray, strata: Sequence[str], segments: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and label counts; return float copies of x and y."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.ndim != 2 or ya.ndim != 2:
        raise ValueError(f"x and y must be 2-D (units, steps), got {xa.ndim}-D and {ya.ndim}-D")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y shapes differ: {xa.shape} vs {ya.shape}")
    if len(strata) != xa.shape[0] or len(segments) != xa.shape[0]:
        raise ValueError(
            f"need one stratum and one segment label per unit ({xa.shape[0]} units), "
            f"got {len(strata)} and {len(segments)}"
        )
    return xa, ya


def groups(labels: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Units per non-empty label value, in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab:
            out.setdefault(str(lab), []).append(i)
    return [(lab, np.asarray(rows, dtype=int)) for lab, rows in out.items()]


def has_label(labels: Sequence[str]) -> bool:
    return any(bool(lab) for lab in labels)


def no_variation(demeaned_ss: float, raw_ss: float) -> bool:
    """True when a demeaned series carries no variation relative to its raw scale."""
    return not demeaned_ss > (_VARIATION_RTOL**2) * raw_ss


def newey_west_lags(n: int) -> int:
    return int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


# --------------------------------------------------------------------------------------
# Test 1 machinery: exact (two-way) within transformation on the grid


@dataclass(frozen=True)
class Panel:
    mask: np.ndarray
    """(G, T) usable points of the kept units."""
    xz: np.ndarray
    yz: np.ndarray
    xd: np.ndarray
    """Demeaned X, zero where not usable."""
    yd: np.ndarray
    n: int
    two_way: bool


def prepare_panel(xz: np.ndarray, yz: np.ndarray, mask: np.ndarray, rows: np.ndarray) -> Panel | Unavailable:
    m = mask[rows]
    if m.shape[0] and m.shape[1] >= 2 and m.all():
        return _balanced_panel(xz, yz, m, rows)
    return _any_panel(xz, yz, m, rows)


def _any_panel(xz: np.ndarray, yz: np.ndarray, m: np.ndarray, rows: np.ndarray) -> Panel | Unavailable:
    n_all = int(m.sum())
    keep = m.sum(axis=1) >= 2
    if not keep.any():
        return Unavailable("no unit has two usable points", n_all)
    m = m[keep]
    sel = rows[keep]
    xs = xz[sel]
    ys = yz[sel]
    w = m.astype(float)
    two_way = sel.size >= 3
    z = np.stack([xs, ys])  # (2, G, T)
    n_u = w.sum(axis=1)
    if not two_way:
        zd = (z - (z.sum(axis=2) / n_u)[:, :, None]) * w
    elif m.all():
        # Balanced: the two-way within transformation in closed form (time means, then unit means).
        zt = z - z.mean(axis=1, keepdims=True)
        zd = zt - zt.mean(axis=2, keepdims=True)
    else:
        n_t = w.sum(axis=0)
        inv_t = np.divide(1.0, n_t, out=np.zeros_like(n_t), where=n_t > 0)
        zt = (z - (z.sum(axis=1) * inv_t)[:, None, :]) * w  # time-demeaned
        # Normal equations of the time-demeaned unit dummies (last unit as reference).
        a = np.diag(n_u) - (w * inv_t) @ w.T
        b = zt.sum(axis=2).T  # (G, 2)
        coef = np.zeros_like(b)
        coef[:-1] = np.linalg.lstsq(a[:-1, :-1], b[:-1], rcond=1e-10)[0]
        proj_t = (coef.T @ w) * inv_t  # (2, T)
        zd = zt - (coef.T[:, :, None] - proj_t[:, None, :]) * w
    return Panel(m, xs, ys, zd[0], zd[1], int(m.sum()), two_way)


def _balanced_panel(xz: np.ndarray, yz: np.ndarray, m: np.ndarray, rows: np.ndarray) -> Panel:
    """`prepare_panel` when every point of the rows is usable (the usual live panel): the same
    arithmetic without the weights, which are all 1 (tests/unit/test_causal.py holds the two
    equal bit for bit)."""
    units, steps = m.shape
    z = np.empty((2, units, steps))
    np.take(xz, rows, axis=0, out=z[0])
    np.take(yz, rows, axis=0, out=z[1])
    two_way = units >= 3
    if two_way:
        zt = z - z.mean(axis=1, keepdims=True)
        zd = zt - zt.mean(axis=2, keepdims=True)
    else:
        zd = z - (z.sum(axis=2) / float(steps))[:, :, None]
    return Panel(m, z[0], z[1], zd[0], zd[1], units * steps, two_way)
