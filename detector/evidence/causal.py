"""The five causal tests, the verdict and Rosenbaum sensitivity (framework.md §3.2).

Pure functions over a panel ``x[u, t]``, ``y[u, t]`` (units x steps, NaN = missing).
The caller orients the data so that *harm* is a positive slope (higher X -> higher Y).
This is the fast path: direct numpy linear algebra, one pass per panel, scipy only for
distribution tails. `tests.oracles.causal_reference` (a test oracle, not shipped) implements the same definitions with
statsmodels/scipy general APIs; tests hold the two equal.

Conventions (shared with the reference implementation)
------------------------------------------------------
* Usable point: a (unit, step) where both X and Y are finite. Tests 1-4 and the
  sensitivity use only units with >= 2 usable points; dose-response pools every usable
  point.
* Test 1 (within-unit), on a set of units: unit fixed effects, plus time fixed effects
  when the set has >= 3 units. The two-way within transformation on an unbalanced panel
  is exact (Frisch-Waugh-Lovell: time-demean, then partial out the time-demeaned unit
  dummies). Slope = OLS of demeaned Y on demeaned X without constant. Inference:
  * >= 2 units: CR1 cluster-robust SE by unit, correction ``G/(G-1) * (N-1)/(N-K)``
    with K = 1 (the demeaned regression's single regressor: absorbed fixed effects are
    not counted), t distribution with G-1 degrees of freedom (statsmodels
    ``cov_type='cluster', use_t=True``);
  * 1 unit: Newey-West HAC, Bartlett kernel, ``maxlags = floor(4 (N/100)^(2/9))``,
    correction N/(N-1), t distribution with N-1 degrees of freedom (statsmodels
    ``cov_type='HAC', use_correction=True, use_t=True``). Missing steps are skipped:
    the remaining points are treated as consecutive.
  p-values are two-sided; PASS also requires a positive slope.
* Test 4 (temporal precedence): the same within transformation on the whole panel,
  then per unit rows t with X and Y present at t, t-1, ..., t-L (lags never cross a
  unit boundary), pooled over units; regressors: a constant, L lags of the target and
  L lags of the other variable (k = 2L + 1). A robust Wald test of the L lags of the
  other variable, computed in three steps:

  1. pooled OLS; each unit's residual variance, shrunk towards the pooled one by k
     rows: ``v_u = (RSS_u + k s^2) / (n_u + k)``, ``s^2 = RSS / (N - k)``;
  2. weighted least squares with weights ``1 / v_u`` (per-unit scaling);
  3. covariance of the WLS coefficients clustered by *step*: at each step t the
     scores ``w_u z_ut e_ut`` are summed over units, CR1 correction
     ``P/(P-1) * (N-1)/(N-k)`` with P the steps having a complete row (statsmodels
     ``WLS(...).fit(cov_type='cluster', cov_kwds={'groups': step})``). With W the
     Wald statistic, ``F = W/L * (P-L)/(P-1)`` against F(L, P - L), the Hotelling
     small-sample form for P clusters. Fewer than L + 2 such steps: INCONCLUSIVE.

  The feedback rule compares these two robust F statistics (X->Y over Y->X).
  Why: ratio metrics have noise proportional to their level, and the noisiest Y
  units are often the noisiest X units; the homoskedastic F then rejects far too
  often (no effect, 9 units with levels 50x apart: X->Y "significant" in 46% of
  seeds, test 4 passing in 24%). Clustering by *unit* cannot fix it with 9 units:
  the L = 6 restrictions use 6 of the G - 1 = 8 dimensions of the cluster covariance,
  the Wald statistic is then a Hotelling T^2 with 8 df and rejected the null in
  80-100% of seeds against F(6, 8). Unit-wise HC or Newey-West within units still
  rejected in 8-15% because the time means, dominated by the noisiest unit, put
  that unit's noise into every unit at the same step (cross-unit dependence).
  Clustering by step handles heteroskedasticity and that dependence, with ~2,000
  clusters a week. Bartlett lags across steps (Driscoll-Kraay) were not needed (the
  scores of a dynamic model with enough own lags are serially uncorrelated) and
  inflated the size on short panels (12-16% at 120 steps). Per-unit scaling keeps
  the noisy units from drowning the rest: with a level-dependent true effect it
  raised the X->Y rejection rate from 42% to 60% at the same size (5%). Measured on
  seeded panels (`tests.synthetic.level_noise_null`, 9 x 2016, 500 seeds): false-pass
  rate of test 4 3.6% (was 23.6%); 9 x 576: 6.8% of 1,000 seeds.
* Test 5 (dose-response): bin edges are the pooled X quantiles (numpy's default linear
  interpolation); bin k holds edge_k < x <= edge_{k+1} (the first bin also holds the
  minimum), like ``pandas.qcut``. Empty bins are skipped; Spearman rho of bin index vs
  bin mean over the non-empty bins; Welch t-test top vs bottom non-empty bin,
  two-sided p, PASS also requires top mean > bottom mean.
* Sensitivity: on the panel adjusted as in test 1 (unit and, with >= 3 units, time
  fixed effects removed, so shared seasonality is not mistaken for an effect; the unit
  effects cancel in within-unit pairs anyway), within each unit sort its usable steps by
  adjusted X (stable, so ties keep time order): the lower floor(m/2) are the low-X steps
  and the upper floor(m/2) the high-X steps (the median step of an odd count is
  dropped); the k-th high step in time order is paired with the k-th low step in time
  order. d = Y_high - Y_low (adjusted Y); zero differences are dropped; Wilcoxon
  signed-rank with average ranks for ties. The Rosenbaum upper bound for
  treatment-assignment odds Gamma uses the normal approximation ``E = p+ sum(r)``,
  ``Var = p+ (1 - p+) sum(r^2)``, ``p+ = Gamma / (1 + Gamma)``, no continuity
  correction. Gamma* is where that one-sided upper p-value reaches alpha (1.0 when not
  significant at Gamma = 1; capped at GAMMA_MAX; None with fewer than MIN_PAIRS
  non-zero pairs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import linalg, special, stats

from detector.evidence.results import TEST_NAMES, CausalEvidence, TestOutcome, TestResult, Verdict
from detector.spec.pack import CausalSettings

GAMMA_MAX = 20.0
"""Sensitivity values above this are reported as GAMMA_MAX."""
MIN_PAIRS = 10
"""Fewer non-zero matched-pair differences than this: Gamma* is not computed."""
_VARIATION_RTOL = 1e-9
"""A demeaned series whose norm is below this share of the raw norm has no variation."""
_RHO_SLACK = 1e-9
"""Rounding slack on rho >= dose_min_rho (with 5 bins rho is a multiple of 0.1)."""
_PIVOT_RTOL = 1e-7
"""Cholesky pivot of the unit-norm lag Gram matrix (the sine of a column's angle to the
columns before it) below this: the lag matrix is singular."""
_COV_RTOL = 1e-10
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
# Public API


def run_causal_tests(
    x: np.ndarray,
    y: np.ndarray,
    strata: Sequence[str],
    segments: Sequence[str],
    settings: CausalSettings,
) -> CausalEvidence:
    """Run the five tests and the sensitivity analysis on an oriented panel.

    Degenerate data (all missing, one step, constant series) gives INCONCLUSIVE tests,
    never an exception; malformed arguments (shapes, label counts) raise ValueError.
    """
    xa, ya = check_panel(x, y, strata, segments)
    mask = np.isfinite(xa) & np.isfinite(ya)
    xz = np.where(mask, xa, 0.0)
    yz = np.where(mask, ya, 0.0)
    all_units = np.arange(xa.shape[0])

    panel = _prepare(xz, yz, mask, all_units)
    within = _slope(panel, settings.min_points)
    strat = [(lab, _slope(_prepare(xz, yz, mask, rows), settings.min_points)) for lab, rows in groups(strata)]
    segs = [
        (lab, _slope(_prepare(xz, yz, mask, rows), settings.min_points)) for lab, rows in groups(segments)
    ]
    granger = _granger(panel, settings.lags, settings.min_points)
    dose = _dose(xa[mask], ya[mask], settings.dose_bins, settings.min_points)

    tests = (
        judge_within(within, settings),
        judge_groups("stratification", strat, _has_label(strata), settings),
        judge_groups("segment_consistency", segs, _has_label(segments), settings),
        judge_precedence(granger, settings),
        judge_dose(dose, settings),
    )
    gamma = _gamma_from_pairs(_matched_differences(panel), settings.alpha)
    return assemble_evidence(tests, gamma, settings)


def sensitivity_gamma(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> float | None:
    """Rosenbaum sensitivity Gamma* of the within-unit matched-pairs signed-rank test."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.ndim != 2 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 2-D arrays of the same shape, got {xa.shape} and {ya.shape}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    mask = np.isfinite(xa) & np.isfinite(ya)
    panel = _prepare(np.where(mask, xa, 0.0), np.where(mask, ya, 0.0), mask, np.arange(xa.shape[0]))
    return _gamma_from_pairs(_matched_differences(panel), alpha)


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


def _has_label(labels: Sequence[str]) -> bool:
    return any(bool(lab) for lab in labels)


def no_variation(demeaned_ss: float, raw_ss: float) -> bool:
    """True when a demeaned series carries no variation relative to its raw scale."""
    return not demeaned_ss > (_VARIATION_RTOL**2) * raw_ss


def newey_west_lags(n: int) -> int:
    return int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


# --------------------------------------------------------------------------------------
# Test 1 machinery: exact (two-way) within transformation on the grid


@dataclass(frozen=True)
class _Panel:
    mask: np.ndarray
    """(G, T) usable points of the kept units."""
    xz: np.ndarray
    yz: np.ndarray
    xd: np.ndarray
    """Demeaned X, zero where not usable."""
    yd: np.ndarray
    n: int
    two_way: bool


def _prepare(xz: np.ndarray, yz: np.ndarray, mask: np.ndarray, rows: np.ndarray) -> _Panel | Unavailable:
    m = mask[rows]
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
    return _Panel(m, xs, ys, zd[0], zd[1], int(m.sum()), two_way)


def _slope(panel: _Panel | Unavailable, min_points: int) -> SlopeResult:
    if isinstance(panel, Unavailable):
        return panel
    n = panel.n
    if n < min_points:
        return Unavailable(f"only {n:,} usable points (< {min_points})", n)
    xd, yd, m = panel.xd, panel.yd, panel.mask
    sxx = float(np.sum(xd * xd))
    if no_variation(sxx, float(np.sum(panel.xz * panel.xz))):
        return Unavailable("X has no within-unit variation", n)
    if no_variation(float(np.sum(yd * yd)), float(np.sum(panel.yz * panel.yz))):
        return Unavailable("Y has no within-unit variation", n)
    slope = float(np.sum(xd * yd)) / sxx
    score = xd * (yd - slope * xd)  # zero where not usable
    g = m.shape[0]
    if g >= 2:
        s_u = score.sum(axis=1)
        var = float(s_u @ s_u) / sxx**2 * g / (g - 1.0)
        df = float(g - 1)
        lags = 0
    else:
        u = score[0][m[0]]
        lags = min(newey_west_lags(n), n - 1)
        s = float(u @ u)
        for lag in range(1, lags + 1):
            s += 2.0 * (1.0 - lag / (lags + 1.0)) * float(u[lag:] @ u[:-lag])
        var = max(s, 0.0) / sxx**2 * n / (n - 1.0)
        df = float(n - 1)
    se = math.sqrt(var)
    t, p = _t_test(slope, se, df)
    return SlopeFit(slope, se, t, p, n, g, df, panel.two_way, lags)


def _t_test(est: float, se: float, df: float) -> tuple[float, float]:
    if se > 0.0:
        t = est / se
        return t, float(2.0 * special.stdtr(df, -abs(t)))  # = stats.t.sf(|t|, df), without its overhead
    if est == 0.0:
        return 0.0, 1.0
    return math.copysign(math.inf, est), 0.0


# --------------------------------------------------------------------------------------
# Test 4: pooled panel Granger, both directions


def _granger(panel: _Panel | Unavailable, lags: int, min_points: int) -> GrangerResult:
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
    if m.shape[1] > lags:
        valid = sliding_window_view(m, lags + 1, axis=1).all(axis=2)  # row t = lags + j
    else:
        valid = np.zeros((m.shape[0], 0), dtype=bool)
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
    for lag in range(lags + 1):
        window = slice(lags - lag, lags - lag + width)
        np.multiply(yd[:, window], vf, out=cols[:, k if lag == 0 else lag])
        np.multiply(xd[:, window], vf, out=cols[:, k + 1 if lag == 0 else lags + lag])
    grams = cols @ cols.transpose(0, 2, 1)  # (units, k + 2, k + 2)
    raw = grams.sum(axis=0)
    norms = np.sqrt(np.diag(raw))
    if not np.all(norms > 0.0):
        return Unavailable("lag matrix is singular (a lag column is all zero)", n)
    gram = raw / np.outer(norms, norms)
    z = cols[:, :k]
    n_u = valid.sum(axis=1)
    correction = periods / (periods - 1.0) * (n - 1.0) / (n - k)
    own_y, own_x = list(range(1, lags + 1)), list(range(lags + 1, k))
    out: list[tuple[float, float]] = []
    for target, own, other in ((k, own_y, own_x), (k + 1, own_x, own_y)):
        order = [0, *own, *other, target]
        try:
            chol = np.linalg.cholesky(gram[np.ix_(order, order)])
        except np.linalg.LinAlgError:
            return Unavailable("lag matrix is singular or fits the series exactly", n)
        pivots = np.diag(chol)
        if np.any(pivots[:k] <= _PIVOT_RTOL):
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
        if not np.all(sd > 0.0) or np.linalg.eigvalsh(cov / np.outer(sd, sd))[0] <= _COV_RTOL:
            return Unavailable("robust covariance of the lag coefficients is singular", n)
        wald = float(est @ np.linalg.solve(cov, est))
        f = wald / lags * (periods - lags) / (periods - 1.0)
        p = float(special.fdtrc(lags, periods - lags, f))  # = stats.f.sf(f, lags, periods - lags)
        out.append((f, p))
    (f_xy, p_xy), (f_yx, p_yx) = out
    return GrangerFit(f_xy, p_xy, f_yx, p_yx, n, lags, periods - lags, periods)


# --------------------------------------------------------------------------------------
# Test 5: dose-response on pooled quantile bins


def _dose(xv: np.ndarray, yv: np.ndarray, bins: int, min_points: int) -> DoseResult:
    n = int(xv.size)
    if n < min_points:
        return Unavailable(f"only {n:,} usable points (< {min_points})", n)
    if bins < 3:
        return Unavailable(f"need at least 3 dose bins, got {bins}", n)
    if np.ptp(xv) == 0.0:
        return Unavailable("X is constant", n)
    if np.ptp(yv) == 0.0:
        return Unavailable("Y is constant", n)
    edges = np.quantile(xv, np.linspace(0.0, 1.0, bins + 1))
    idx = np.searchsorted(edges[1:-1], xv, side="left")
    counts = np.bincount(idx, minlength=bins)
    sums = np.bincount(idx, weights=yv, minlength=bins)
    filled = np.flatnonzero(counts)
    if filled.size < 3:
        return Unavailable(f"X has too few distinct values for {bins} bins ({filled.size} non-empty)", n)
    means = sums[filled] / counts[filled]
    lo, hi = int(filled[0]), int(filled[-1])
    y_lo, y_hi = yv[idx == lo], yv[idx == hi]
    if y_lo.size < 2 or y_hi.size < 2:
        return Unavailable("top or bottom bin has fewer than 2 points", n)
    v_lo = float(np.var(y_lo, ddof=1)) / y_lo.size
    v_hi = float(np.var(y_hi, ddof=1)) / y_hi.size
    se2 = v_lo + v_hi
    if not se2 > 0.0:
        return Unavailable("no variation of Y inside the top and bottom bins", n)
    diff = float(np.mean(y_hi) - np.mean(y_lo))
    df = se2**2 / (v_hi**2 / (y_hi.size - 1) + v_lo**2 / (y_lo.size - 1))
    t, p = _t_test(diff, math.sqrt(se2), df)
    ri = stats.rankdata(filled)
    rm = stats.rankdata(means)
    if np.ptp(rm) == 0.0:
        return Unavailable("all bin means are equal", n)
    k = filled.size
    if np.unique(rm).size == k:  # no ties: exact formula (so a perfect order gives exactly 1.0)
        rho = 1.0 - 6.0 * float(np.sum((ri - rm) ** 2)) / (k * (k * k - 1.0))
    else:
        rho = float(np.corrcoef(ri, rm)[0, 1])
    return DoseFit(rho, t, p, df, n, tuple(float(v) for v in means), tuple(int(c) for c in counts[filled]))


# --------------------------------------------------------------------------------------
# Sensitivity


def _matched_differences(panel: _Panel | Unavailable) -> np.ndarray:
    if isinstance(panel, Unavailable):
        return np.zeros(0)
    mask, xz, yz = panel.mask, panel.xd, panel.yd
    counts = mask.sum(axis=1)
    # Usable steps first, ordered by adjusted X; a stable sort keeps time order among ties
    # (the +inf fillers of unusable steps sort last).
    order = np.argsort(np.where(mask, xz, np.inf), axis=1, kind="stable")
    out: list[np.ndarray] = [np.zeros(0)] * mask.shape[0]
    for m in np.unique(counts):
        half = int(m) // 2
        if half == 0:
            continue
        rows = np.flatnonzero(counts == m)
        low = np.sort(order[rows, :half], axis=1)
        high = np.sort(order[rows, m - half : m], axis=1)
        d = np.take_along_axis(yz[rows], high, axis=1) - np.take_along_axis(yz[rows], low, axis=1)
        for r, u in enumerate(rows):
            out[u] = d[r]
    return np.concatenate(out) if out else np.zeros(0)


def _gamma_from_pairs(d: np.ndarray, alpha: float) -> float | None:
    d = d[d != 0.0]
    if d.size < MIN_PAIRS:
        return None
    r = stats.rankdata(np.abs(d))
    t_plus = float(r[d > 0.0].sum())
    s = float(r.sum())
    q = float(r @ r)
    z = float(-special.ndtri(alpha))  # = stats.norm.isf(alpha)
    if (t_plus - 0.5 * s) / math.sqrt(0.25 * q) <= z:
        return 1.0
    # Solve (T - p S)^2 = z^2 Q p (1 - p) for the root with T > p S (stable form).
    a = s * s + z * z * q
    b = 2.0 * t_plus * s + z * z * q
    c = t_plus * t_plus
    disc = max(b * b - 4.0 * a * c, 0.0)
    p_plus = 2.0 * c / (b + math.sqrt(disc))
    if p_plus >= GAMMA_MAX / (1.0 + GAMMA_MAX):
        return GAMMA_MAX
    return max(1.0, p_plus / (1.0 - p_plus))


# --------------------------------------------------------------------------------------
# Judging numbers into test results (shared with the reference implementation)


def fmt_p(p: float) -> str:
    if p == 0.0:
        return "0"
    text = f"{p:.2g}" if p >= 1e-3 else f"{p:.0e}"
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


def _slope_text(fit: SlopeFit) -> str:
    units = "1 unit" if fit.units == 1 else f"{fit.units} units"
    return f"{fit.slope:+.3g} per unit of X (p={fmt_p(fit.p)}, {units}, {fit.n:,} points)"


def _harm(fit: SlopeFit, alpha: float) -> bool:
    return fit.slope > 0.0 and fit.p < alpha


def _inconclusive(name: str, why: Unavailable) -> TestResult:
    return TestResult(name, "INCONCLUSIVE", None, None, why.n, why.reason)


def judge_within(fit: SlopeResult, settings: CausalSettings) -> TestResult:
    name = "within_unit"
    if isinstance(fit, Unavailable):
        return _inconclusive(name, fit)
    text = f"within-unit slope {_slope_text(fit)}"
    if _harm(fit, settings.alpha):
        outcome: TestOutcome = "PASS"
        text += ": harm direction"
    elif fit.slope > 0.0:
        outcome = "FAIL"
        text += f": harm direction but not significant at alpha={settings.alpha:g}"
    else:
        outcome = "FAIL"
        text += ": not in the harm direction"
    details = (
        ("slope", fit.slope),
        ("se", fit.se),
        ("t", fit.t),
        ("units", float(fit.units)),
        ("df", fit.df),
    )
    return TestResult(name, outcome, fit.t, fit.p, fit.n, text, details)


def judge_groups(
    name: str, fits: Sequence[tuple[str, SlopeResult]], labelled: bool, settings: CausalSettings
) -> TestResult:
    """Tests 2 (``stratification``) and 3 (``segment_consistency``) from per-group fits."""
    kind, kinds = ("stratum", "strata") if name == "stratification" else ("segment", "segments")
    if not labelled:
        return TestResult(name, "INCONCLUSIVE", None, None, 0, f"no {kind} label on this panel")
    n = sum(f.n for _, f in fits)
    if len(fits) < 2:
        return TestResult(
            name, "INCONCLUSIVE", None, None, n, f"only one {kind} ({fits[0][0]!r}) in the panel"
        )
    done = [(lab, f) for lab, f in fits if isinstance(f, SlopeFit)]
    missing = [(lab, f) for lab, f in fits if isinstance(f, Unavailable)]
    bad = [lab for lab, f in done if not _harm(f, settings.alpha)]
    details: list[tuple[str, float]] = []
    for lab, f in done:
        details += [
            (f"slope[{lab}]", f.slope),
            (f"t[{lab}]", f.t),
            (f"p[{lab}]", f.p),
            (f"n[{lab}]", float(f.n)),
        ]
    listing = "; ".join(f"{lab} {f.slope:+.3g} (p={fmt_p(f.p)})" for lab, f in done)
    stat = min(f.t for _, f in done) if done else None
    p_max = max(f.p for _, f in done) if done else None
    if not bad and missing:
        why = "; ".join(f"{kind} {lab!r}: {f.reason}" for lab, f in missing)
        return TestResult(name, "INCONCLUSIVE", stat, p_max, n, why, tuple(details))
    if bad:
        shown = len(done) - len(bad)
        text = f"harm-direction significant slope in only {shown} of {len(fits)} {kinds} ({listing})"
        if missing:
            text += f"; not computable: {', '.join(lab for lab, _ in missing)}"
        return TestResult(name, "FAIL", stat, p_max, n, text, tuple(details))
    if name == "stratification":
        return TestResult(
            name,
            "PASS",
            stat,
            p_max,
            n,
            f"harm-direction significant slope in every stratum ({listing})",
            tuple(details),
        )
    slopes = [f.slope for _, f in done]
    ratio = max(slopes) / min(slopes)
    details.append(("ratio", ratio))
    if ratio <= settings.segment_max_ratio:
        text = (
            f"every segment slope is harm-direction and significant, largest/smallest = {ratio:.3g} "
            f"(<= {settings.segment_max_ratio:g}) ({listing})"
        )
        return TestResult(name, "PASS", stat, p_max, n, text, tuple(details))
    text = (
        f"segment slopes differ too much: largest/smallest = {ratio:.3g} "
        f"(> {settings.segment_max_ratio:g}) ({listing})"
    )
    return TestResult(name, "FAIL", stat, p_max, n, text, tuple(details))


def judge_precedence(fit: GrangerResult, settings: CausalSettings) -> TestResult:
    name = "temporal_precedence"
    if isinstance(fit, Unavailable):
        return _inconclusive(name, fit)
    a = settings.alpha
    ratio = fit.f_xy / fit.f_yx if fit.f_yx > 0.0 else math.inf
    xy = f"X->Y F={fit.f_xy:.3g} (p={fmt_p(fit.p_xy)})"
    yx = f"Y->X F={fit.f_yx:.3g} (p={fmt_p(fit.p_yx)})"
    rows = f"{fit.n:,} steps, {fit.df_num} lags (robust F)"
    outcome: TestOutcome
    if fit.p_xy < a and fit.p_yx >= a:
        outcome, text = "PASS", f"X precedes Y: {xy}, no reverse link: {yx}, {rows}"
    elif fit.p_xy < a and ratio >= settings.feedback_f_ratio:
        outcome = "PASS"
        text = (
            f"X precedes Y: {xy} is {ratio:.3g}x the reverse {yx} (>= {settings.feedback_f_ratio:g}), {rows}"
        )
    elif fit.p_xy < a:
        outcome = "FAIL"
        text = (
            f"feedback loop: {xy} and {yx} are both significant, "
            f"ratio {ratio:.3g} < {settings.feedback_f_ratio:g}, {rows}"
        )
    elif fit.p_yx < a:
        outcome, text = (
            "FAIL",
            f"reverse causality: Y precedes X ({yx}) but X does not precede Y ({xy}), {rows}",
        )
    else:
        outcome, text = "FAIL", f"no temporal precedence: {xy}, {yx}, {rows}"
    details = (
        ("f_yx", fit.f_yx),
        ("p_yx", fit.p_yx),
        ("f_ratio", ratio),
        ("df_num", float(fit.df_num)),
        ("df_den", float(fit.df_den)),
    )
    return TestResult(name, outcome, fit.f_xy, fit.p_xy, fit.n, text, details)


def judge_dose(fit: DoseResult, settings: CausalSettings) -> TestResult:
    name = "dose_response"
    if isinstance(fit, Unavailable):
        return _inconclusive(name, fit)
    lo, hi = fit.bin_means[0], fit.bin_means[-1]
    nums = (
        f"Spearman rho {fit.rho:.3g} over {len(fit.bin_means)} bins, top-bin mean {hi:.4g} vs bottom {lo:.4g} "
        f"(Welch p={fmt_p(fit.p)}, {fit.n:,} points)"
    )
    monotone = fit.rho >= settings.dose_min_rho - _RHO_SLACK
    higher = hi > lo and fit.p < settings.alpha
    outcome: TestOutcome = "PASS" if monotone and higher else "FAIL"
    if outcome == "PASS":
        text = f"dose-response in the harm direction: {nums}"
    elif not monotone:
        text = f"bin means not monotone (rho < {settings.dose_min_rho:g}): {nums}"
    else:
        text = f"top bin not significantly above bottom bin: {nums}"
    details = [("t", fit.t), ("df", fit.df)]
    details += [(f"bin_mean[{i}]", v) for i, v in enumerate(fit.bin_means)]
    return TestResult(name, outcome, fit.rho, fit.p, fit.n, text, tuple(details))


def assemble_evidence(
    tests: Sequence[TestResult], gamma: float | None, settings: CausalSettings
) -> CausalEvidence:
    """Verdict from the five test results (in TEST_NAMES order) and the sensitivity."""
    names = tuple(t.name for t in tests)
    if names != TEST_NAMES:
        raise ValueError(f"tests must be in TEST_NAMES order {TEST_NAMES}, got {names}")
    passed = sum(t.result == "PASS" for t in tests)
    inconclusive = [t.name for t in tests if t.result == "INCONCLUSIVE"]
    failed = [t.name for t in tests if t.result == "FAIL"]
    total = len(tests)
    failed_text = f"; failed: {', '.join(failed)}" if failed else ""
    verdict: Verdict
    if passed >= settings.pass_required:
        verdict = "causal"
        reason = f"causal: {passed} of {total} tests pass{failed_text}"
    elif len(inconclusive) <= 1:
        verdict = "proxy"
        reason = (
            f"proxy: only {passed} of {total} tests pass (needs {settings.pass_required}){failed_text}; "
            "investigate the confounder the failed tests point to"
        )
        if inconclusive:
            reason += f" (inconclusive: {inconclusive[0]})"
    else:
        verdict = "insufficient_data"
        reason = (
            f"insufficient data: {len(inconclusive)} tests inconclusive ({', '.join(inconclusive)}), "
            f"{passed} pass{failed_text}"
        )
    if gamma is not None:
        label = (
            "fragile"
            if gamma < settings.fragile_gamma
            else "robust"
            if gamma >= settings.robust_gamma
            else "moderate"
        )
        shown = f">={GAMMA_MAX:g}" if gamma >= GAMMA_MAX else f"{gamma:.3g}"
        reason += f"; sensitivity Gamma*={shown} ({label})"
    return CausalEvidence(verdict, passed, len(inconclusive), tuple(tests), gamma, reason)


__all__ = [
    "GAMMA_MAX",
    "MIN_PAIRS",
    "DoseFit",
    "GrangerFit",
    "SlopeFit",
    "Unavailable",
    "assemble_evidence",
    "check_panel",
    "groups",
    "judge_dose",
    "judge_groups",
    "judge_precedence",
    "judge_within",
    "newey_west_lags",
    "no_variation",
    "run_causal_tests",
    "sensitivity_gamma",
]
