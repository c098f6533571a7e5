"""Test 4 of the causal battery: pooled panel Granger in both directions with a robust Wald F
(the three steps and why are in `detector.evidence.causal`'s docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, special

from detector.evidence.panel import (
    COV_RTOL,
    PIVOT_RTOL,
    GrangerFit,
    GrangerResult,
    Panel,
    Unavailable,
    no_variation,
)

# --------------------------------------------------------------------------------------
# Test 4: pooled panel Granger, both directions


def granger_fit(panel: Panel | Unavailable, lags: int, min_points: int) -> GrangerResult:
    if isinstance(panel, Unavailable):
        return panel
    if lags < 1:
        return Unavailable(f"lags must be >= 1, got {lags}", 0)
    m, xd, yd = panel.mask, panel.xd, panel.yd
    k = 2 * lags + 1
    if no_variation(float(np.sum(xd * xd)), float(np.sum(panel.xz * panel.xz))):
        return Unavailable("X has no within-unit variation", panel.n)
    if no_variation(float(np.sum(yd * yd)), float(np.sum(panel.yz * panel.yz))):
        return Unavailable("Y has no within-unit variation", panel.n)
    valid = _complete_windows(m, lags + 1)  # column j: step lags + j and its lags are usable
    n = int(valid.sum())
    if n < max(min_points, k + 1):
        return Unavailable(f"only {n:,} steps with {lags} complete lags (< {max(min_points, k + 1)})", n)
    periods = int(valid.any(axis=0).sum())
    if periods < lags + 2:
        return Unavailable(f"only {periods} time steps with {lags} complete lags (< {lags + 2})", n)
    # Per unit, the columns constant, y lags 1..L, x lags 1..L, y_t, x_t on the step grid,
    # zero where a row is incomplete (so sums over units or steps are plain axis sums),
    # and their Gram matrices.
    units, width = valid.shape
    vf = valid.astype(float)
    cols = np.empty((units, k + 2, width))
    cols[:, 0] = vf
    complete = bool(valid.all())  # then multiplying by vf (all 1.0) would copy: copy
    for lag in range(lags + 1):
        window = slice(lags - lag, lags - lag + width)
        for series, col in ((yd, k if lag == 0 else lag), (xd, k + 1 if lag == 0 else lags + lag)):
            if complete:
                cols[:, col] = series[:, window]
            else:
                np.multiply(series[:, window], vf, out=cols[:, col])
    grams = cols @ cols.transpose(0, 2, 1)  # (units, k + 2, k + 2)
    raw = grams.sum(axis=0)
    norms = np.sqrt(np.diag(raw))
    if not np.all(norms > 0.0):
        return Unavailable("lag matrix is singular (a lag column is all zero)", n)
    lagged = _Lagged(cols, grams, raw / np.outer(norms, norms), norms, valid.sum(axis=1), n, k, lags, periods)
    own_y, own_x = list(range(1, lags + 1)), list(range(lags + 1, k))
    out: list[tuple[float, float]] = []
    for target, own, other in ((k, own_y, own_x), (k + 1, own_x, own_y)):
        tested = _robust_wald(lagged, target, own, other)
        if isinstance(tested, Unavailable):
            return tested
        out.append(tested)
    (f_xy, p_xy), (f_yx, p_yx) = out
    return GrangerFit(f_xy, p_xy, f_yx, p_yx, n, lags, periods - lags, periods)


def _complete_windows(m: np.ndarray, width: int) -> np.ndarray:
    """(G, T - width + 1) booleans: window [j, j + width) of row g is all True.

    Counted with a running sum of the unusable steps (a window is complete when it holds none),
    ~15x faster than ``sliding_window_view(m, width, axis=1).all(axis=2)``, which it equals.
    """
    units, steps = m.shape
    if steps < width:
        return np.zeros((units, 0), dtype=bool)
    gaps = np.zeros((units, steps + 1), dtype=np.int64)
    np.cumsum(~m, axis=1, out=gaps[:, 1:])
    return gaps[:, width:] == gaps[:, : steps + 1 - width]


@dataclass(frozen=True)
class _Lagged:
    """The lag design of one panel: per-unit columns (constant, y lags, x lags, y_t, x_t), their
    Gram matrices, the pooled unit-norm Gram matrix and the column norms."""

    cols: np.ndarray
    grams: np.ndarray
    gram: np.ndarray
    norms: np.ndarray
    n_u: np.ndarray
    n: int
    k: int
    lags: int
    periods: int


def _robust_wald(d: _Lagged, target: int, own: list[int], other: list[int]) -> tuple[float, float] | Unavailable:
    """(F, p) of the lags of `other` in the regression of column `target` (one direction)."""
    cols, grams, gram, norms, n_u, n, k, lags, periods = (
        d.cols, d.grams, d.gram, d.norms, d.n_u, d.n, d.k, d.lags, d.periods
    )
    z = cols[:, :k]
    correction = periods / (periods - 1.0) * (n - 1.0) / (n - k)
    order = [0, *own, *other, target]
    try:
        chol = np.linalg.cholesky(gram[np.ix_(order, order)])
    except np.linalg.LinAlgError:
        return Unavailable("lag matrix is singular or fits the series exactly", n)
    pivots = np.diag(chol)
    if np.any(pivots[:k] <= PIVOT_RTOL):
        return Unavailable("lag matrix is singular (collinear lags)", n)
    if not pivots[k] > 0.0:  # the residual norm (scaled): the last Cholesky pivot
        return Unavailable("lags fit the series exactly", n)
    # 1. Pooled OLS (from the Cholesky factor), for each unit's residual variance.
    coef = np.zeros(k)
    coef[order[:k]] = linalg.solve_triangular(
        chol[:k, :k], chol[k, :k], trans="T", lower=True, check_finite=False
    )
    resid = cols[:, target] - (coef * (norms[target] / norms[:k])) @ z
    rss_u = np.einsum("ut,ut->u", resid, resid)
    pooled = float(rss_u.sum()) / (n - k)
    if not pooled > 0.0:
        return Unavailable("lags fit the series exactly", n)
    weight = (n_u + k) / (rss_u + k * pooled)  # 1 / shrunken unit variance
    # 2. Weighted least squares with those unit weights (normalised columns).
    wgram = np.tensordot(weight, grams, axes=1)
    scale = np.sqrt(np.diag(wgram)[:k])
    try:
        factor = linalg.cho_factor(wgram[:k, :k] / np.outer(scale, scale), lower=True, check_finite=False)
    except linalg.LinAlgError:
        return Unavailable("lag matrix is singular (collinear lags)", n)
    coef_w = linalg.cho_solve(factor, wgram[:k, target] / scale, check_finite=False)
    resid_w = cols[:, target] - (coef_w / scale) @ z
    # 3. Covariance clustered by step: each step's scores summed over units.
    h = np.einsum("uct,ut->ct", z, resid_w * weight[:, None]) / scale[:, None]
    meat = h @ h.T
    bread = linalg.cho_solve(factor, np.eye(k), check_finite=False)[other]
    cov = bread @ meat @ bread.T * correction
    est = coef_w[other]
    sd = np.sqrt(np.diag(cov))
    if not np.all(sd > 0.0) or np.linalg.eigvalsh(cov / np.outer(sd, sd))[0] <= COV_RTOL:
        return Unavailable("robust covariance of the lag coefficients is singular", n)
    wald = float(est @ np.linalg.solve(cov, est))
    f = wald / lags * (periods - lags) / (periods - 1.0)
    p = float(special.fdtrc(lags, periods - lags, f))  # = stats.f.sf(f, lags, periods - lags)
    return f, p
