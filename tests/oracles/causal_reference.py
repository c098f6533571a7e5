"""Reference implementation of the five causal tests and the sensitivity analysis.

Same definitions as `detector.evidence.causal` (read its module docstring for the conventions),
written the straightforward way: long-format points, an alternating-projections
within transformation, statsmodels OLS with ``cov_type='cluster'`` / ``'HAC'`` for
test 1, for test 4 an OLS fit for the unit variances then ``WLS(...).fit(
cov_type='cluster', cov_kwds={'groups': step})`` and ``wald_test(R, use_f=True)``,
``scipy.stats.spearmanr`` / ``ttest_ind`` for test 5 and bisection (``brentq``) on the
Rosenbaum bound for Gamma*. It is slow and exists to check the fast path; the judging
of numbers into PASS/FAIL/INCONCLUSIVE and the verdict are shared with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from scipy import optimize, stats

from detector.evidence.causal import (
    GAMMA_MAX,
    MIN_PAIRS,
    assemble_evidence,
    judge_dose,
    judge_groups,
    judge_precedence,
    judge_within,
)
from detector.evidence.panel import (
    COV_RTOL,
    DoseFit,
    GrangerFit,
    SlopeFit,
    Unavailable,
    check_panel,
    groups,
    newey_west_lags,
    no_variation,
)
from detector.evidence.results import CausalEvidence
from detector.spec.pack import CausalSettings

_MAX_SWEEPS = 10_000


@dataclass(frozen=True)
class _Points:
    """Usable points of units with >= 2 of them, in (unit, time) order."""

    unit: np.ndarray
    time: np.ndarray
    x: np.ndarray
    y: np.ndarray
    xd: np.ndarray
    yd: np.ndarray
    units: int
    two_way: bool


def _demean(values: np.ndarray, unit: np.ndarray, time: np.ndarray, two_way: bool) -> np.ndarray:
    """Residual of `values` on unit (and time) dummies by alternating projections."""

    def sweep(v: np.ndarray, key: np.ndarray) -> np.ndarray:
        _, inv = np.unique(key, return_inverse=True)
        means = np.bincount(inv, weights=v) / np.bincount(inv)
        return v - means[inv]

    out = sweep(values.astype(float), unit)
    if not two_way:
        return out
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    for _ in range(_MAX_SWEEPS):
        new = sweep(sweep(out, time), unit)
        change = float(np.max(np.abs(new - out)))
        out = new
        if change <= 1e-14 * scale:
            break
    return out


def _points(x: np.ndarray, y: np.ndarray, rows: Sequence[int]) -> _Points | Unavailable:
    unit_l: list[int] = []
    time_l: list[int] = []
    for u in rows:
        steps = [t for t in range(x.shape[1]) if np.isfinite(x[u, t]) and np.isfinite(y[u, t])]
        if len(steps) >= 2:
            unit_l += [u] * len(steps)
            time_l += steps
    if not unit_l:
        total = sum(int(np.sum(np.isfinite(x[u]) & np.isfinite(y[u]))) for u in rows)
        return Unavailable("no unit has two usable points", total)
    unit = np.asarray(unit_l)
    time = np.asarray(time_l)
    units = len(set(unit_l))
    two_way = units >= 3
    xv, yv = x[unit, time], y[unit, time]
    return _Points(
        unit, time, xv, yv, _demean(xv, unit, time, two_way), _demean(yv, unit, time, two_way), units, two_way
    )


def _slope(pts: _Points | Unavailable, min_points: int) -> SlopeFit | Unavailable:
    if isinstance(pts, Unavailable):
        return pts
    n = pts.unit.size
    if n < min_points:
        return Unavailable(f"only {n:,} usable points (< {min_points})", n)
    if no_variation(float(pts.xd @ pts.xd), float(pts.x @ pts.x)):
        return Unavailable("X has no within-unit variation", n)
    if no_variation(float(pts.yd @ pts.yd), float(pts.y @ pts.y)):
        return Unavailable("Y has no within-unit variation", n)
    model = sm.OLS(pts.yd, pts.xd[:, None])
    if pts.units >= 2:
        res = model.fit(cov_type="cluster", cov_kwds={"groups": pts.unit}, use_t=True)
        df, lags = float(pts.units - 1), 0
    else:
        lags = min(newey_west_lags(n), n - 1)
        res = model.fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True}, use_t=True)
        df = float(n - 1)
    return SlopeFit(
        float(res.params[0]),
        float(res.bse[0]),
        float(res.tvalues[0]),
        float(res.pvalues[0]),
        n,
        pts.units,
        df,
        pts.two_way,
        lags,
    )


def _granger(pts: _Points | Unavailable, lags: int, min_points: int) -> GrangerFit | Unavailable:
    if isinstance(pts, Unavailable):
        return pts
    if lags < 1:
        return Unavailable(f"lags must be >= 1, got {lags}", 0)
    n_points = pts.unit.size
    if no_variation(float(pts.xd @ pts.xd), float(pts.x @ pts.x)):
        return Unavailable("X has no within-unit variation", n_points)
    if no_variation(float(pts.yd @ pts.yd), float(pts.y @ pts.y)):
        return Unavailable("Y has no within-unit variation", n_points)
    value = {
        (int(u), int(t)): (xv, yv) for u, t, xv, yv in zip(pts.unit, pts.time, pts.xd, pts.yd, strict=True)
    }
    rows_x: list[list[float]] = []
    rows_y: list[list[float]] = []
    row_unit: list[int] = []
    row_time: list[int] = []
    for u, t in value:
        if all((u, t - lag) in value for lag in range(1, lags + 1)):
            rows_x.append([value[(u, t - lag)][0] for lag in range(lags + 1)])
            rows_y.append([value[(u, t - lag)][1] for lag in range(lags + 1)])
            row_unit.append(u)
            row_time.append(t)
    n = len(rows_x)
    k = 2 * lags + 1
    if n < max(min_points, k + 1):
        return Unavailable(f"only {n:,} steps with {lags} complete lags (< {max(min_points, k + 1)})", n)
    periods = len(set(row_time))
    if periods < lags + 2:
        return Unavailable(f"only {periods} time steps with {lags} complete lags (< {lags + 2})", n)
    ax, ay = np.asarray(rows_x), np.asarray(rows_y)
    unit = np.unique(np.asarray(row_unit), return_inverse=True)[1]
    time = np.asarray(row_time)
    restriction = np.hstack([np.zeros((lags, lags + 1)), np.eye(lags)])
    out: list[tuple[float, float]] = []
    for target, own, other in ((ay[:, 0], ay[:, 1:], ax[:, 1:]), (ax[:, 0], ax[:, 1:], ay[:, 1:])):
        exog = sm.add_constant(np.hstack([own, other]), has_constant="add")
        ols = sm.OLS(target, exog).fit()
        if ols.df_model < k - 1:
            return Unavailable("lag matrix is singular (collinear lags)", n)
        if not ols.ssr > 0.0:
            return Unavailable("lags fit the series exactly", n)
        # Unit variances of the OLS residuals, shrunk towards the pooled one by k rows.
        rss_u = np.bincount(unit, weights=ols.resid**2)
        var_u = (rss_u + k * ols.ssr / ols.df_resid) / (np.bincount(unit) + k)
        wls = sm.WLS(target, exog, weights=1.0 / var_u[unit]).fit(
            cov_type="cluster", cov_kwds={"groups": time}
        )
        cov = restriction @ wls.cov_params() @ restriction.T
        sd = np.sqrt(np.diag(cov))
        if not np.all(sd > 0.0) or np.linalg.eigvalsh(cov / np.outer(sd, sd))[0] <= COV_RTOL:
            return Unavailable("robust covariance of the lag coefficients is singular", n)
        wald = wls.wald_test(restriction, use_f=True, scalar=True)  # F = W / L, CR1 by step
        f = float(wald.fvalue) * (periods - lags) / (periods - 1.0)
        out.append((f, float(stats.f.sf(f, lags, periods - lags))))
    (f_xy, p_xy), (f_yx, p_yx) = out
    return GrangerFit(f_xy, p_xy, f_yx, p_yx, n, lags, periods - lags, periods)


def _dose(x: np.ndarray, y: np.ndarray, bins: int, min_points: int) -> DoseFit | Unavailable:
    ok = np.isfinite(x) & np.isfinite(y)
    xv, yv = x[ok], y[ok]
    n = int(xv.size)
    if n < min_points:
        return Unavailable(f"only {n:,} usable points (< {min_points})", n)
    if bins < 3:
        return Unavailable(f"need at least 3 dose bins, got {bins}", n)
    if xv.min() == xv.max():
        return Unavailable("X is constant", n)
    if yv.min() == yv.max():
        return Unavailable("Y is constant", n)
    edges = np.quantile(xv, np.linspace(0.0, 1.0, bins + 1))
    which = np.digitize(xv, edges[1:-1], right=True)  # edges[i-1] < x <= edges[i]
    members = [yv[which == b] for b in range(bins)]
    filled = [b for b in range(bins) if members[b].size > 0]
    if len(filled) < 3:
        return Unavailable(f"X has too few distinct values for {bins} bins ({len(filled)} non-empty)", n)
    means = [float(np.mean(members[b])) for b in filled]
    low, high = members[filled[0]], members[filled[-1]]
    if low.size < 2 or high.size < 2:
        return Unavailable("top or bottom bin has fewer than 2 points", n)
    if np.var(low) == 0.0 and np.var(high) == 0.0:
        return Unavailable("no variation of Y inside the top and bottom bins", n)
    if len(set(means)) == 1:
        return Unavailable("all bin means are equal", n)
    welch = stats.ttest_ind(high, low, equal_var=False)
    rho = float(stats.spearmanr(filled, means).statistic)
    return DoseFit(
        rho,
        float(welch.statistic),
        float(welch.pvalue),
        float(welch.df),
        n,
        tuple(means),
        tuple(int(members[b].size) for b in filled),
    )


def _pairs(pts: _Points | Unavailable) -> np.ndarray:
    if isinstance(pts, Unavailable):
        return np.zeros(0)
    diffs: list[float] = []
    for u in np.unique(pts.unit):
        sel = pts.unit == u
        steps, xs, ys = pts.time[sel], pts.xd[sel], pts.yd[sel]
        ranked = sorted(range(steps.size), key=lambda i: (xs[i], steps[i]))
        half = steps.size // 2
        low = sorted(ranked[:half], key=lambda i: steps[i])
        high = sorted(ranked[steps.size - half :], key=lambda i: steps[i])
        diffs += [float(ys[h] - ys[lo]) for h, lo in zip(high, low, strict=True)]
    return np.asarray(diffs)


def _gamma(d: np.ndarray, alpha: float) -> float | None:
    d = d[d != 0.0]
    if d.size < MIN_PAIRS:
        return None
    ranks = stats.rankdata(np.abs(d))
    t_plus = ranks[d > 0].sum()

    def upper_p(gamma: float) -> float:
        p_plus = gamma / (1.0 + gamma)
        mean = p_plus * ranks.sum()
        var = p_plus * (1.0 - p_plus) * np.sum(ranks**2)
        return float(stats.norm.sf((t_plus - mean) / np.sqrt(var)))

    if upper_p(1.0) > alpha:
        return 1.0
    if upper_p(GAMMA_MAX) <= alpha:
        return GAMMA_MAX
    return float(optimize.brentq(lambda g: upper_p(g) - alpha, 1.0, GAMMA_MAX, xtol=1e-13, rtol=1e-14))


def run_causal_tests_reference(
    x: np.ndarray,
    y: np.ndarray,
    strata: Sequence[str],
    segments: Sequence[str],
    settings: CausalSettings,
) -> CausalEvidence:
    """Slow, straightforward twin of `detector.evidence.causal.run_causal_tests`."""
    xa, ya = check_panel(x, y, strata, segments)
    everyone = _points(xa, ya, range(xa.shape[0]))
    strat = [
        (lab, _slope(_points(xa, ya, rows.tolist()), settings.min_points)) for lab, rows in groups(strata)
    ]
    segs = [
        (lab, _slope(_points(xa, ya, rows.tolist()), settings.min_points)) for lab, rows in groups(segments)
    ]
    tests = (
        judge_within(_slope(everyone, settings.min_points), settings),
        judge_groups("stratification", strat, any(strata), settings),
        judge_groups("segment_consistency", segs, any(segments), settings),
        judge_precedence(_granger(everyone, settings.lags, settings.min_points), settings),
        judge_dose(_dose(xa, ya, settings.dose_bins, settings.min_points), settings),
    )
    return assemble_evidence(tests, _gamma(_pairs(everyone), settings.alpha), settings)


def sensitivity_gamma_reference(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> float | None:
    """Slow twin of `detector.evidence.causal.sensitivity_gamma`."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.ndim != 2 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 2-D arrays of the same shape, got {xa.shape} and {ya.shape}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return _gamma(_pairs(_points(xa, ya, range(xa.shape[0]))), alpha)


__all__ = ["run_causal_tests_reference", "sensitivity_gamma_reference"]
