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

import numpy as np
from scipy import special

from detector.evidence.granger import granger_fit
from detector.evidence.panel import (
    DoseFit,
    DoseResult,
    GrangerResult,
    Panel,
    SlopeFit,
    SlopeResult,
    Unavailable,
    check_panel,
    groups,
    has_label,
    newey_west_lags,
    no_variation,
    prepare_panel,
)
from detector.evidence.results import TEST_NAMES, CausalEvidence, TestOutcome, TestResult, Verdict
from detector.spec.pack import CausalSettings

GAMMA_MAX = 20.0
"""Sensitivity values above this are reported as GAMMA_MAX."""
MIN_PAIRS = 10
"""Fewer non-zero matched-pair differences than this: Gamma* is not computed."""
_RHO_SLACK = 1e-9
"""Rounding slack on rho >= dose_min_rho (with 5 bins rho is a multiple of 0.1)."""
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

    panel = prepare_panel(xz, yz, mask, all_units)
    within = _slope(panel, settings.min_points)
    strat = [(lab, _slope(prepare_panel(xz, yz, mask, rows), settings.min_points)) for lab, rows in groups(strata)]
    segs = [
        (lab, _slope(prepare_panel(xz, yz, mask, rows), settings.min_points)) for lab, rows in groups(segments)
    ]
    granger = granger_fit(panel, settings.lags, settings.min_points)
    balanced = bool(mask.all())  # every point usable: the boolean selections are the flat arrays
    dose = _dose(
        xa.ravel() if balanced else xa[mask], ya.ravel() if balanced else ya[mask], settings.dose_bins, settings.min_points
    )

    tests = (
        judge_within(within, settings),
        judge_groups("stratification", strat, has_label(strata), settings),
        judge_groups("segment_consistency", segs, has_label(segments), settings),
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
    panel = prepare_panel(np.where(mask, xa, 0.0), np.where(mask, ya, 0.0), mask, np.arange(xa.shape[0]))
    return _gamma_from_pairs(_matched_differences(panel), alpha)


def _slope(panel: Panel | Unavailable, min_points: int) -> SlopeResult:
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
    # bin = number of inner edges below the value: searchsorted(edges[1:-1], xv, side="left"),
    # by a few whole-array comparisons (5x faster than a binary search per value)
    idx = np.zeros(n, dtype=np.intp)
    for edge in edges[1:-1].tolist():
        idx += xv > edge
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
    ri = np.arange(1.0, filled.size + 1.0)  # `filled` is increasing: its ranks
    rm = average_ranks(means)
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


def _matched_differences(panel: Panel | Unavailable) -> np.ndarray:
    """Per unit, Y of the upper half of its usable steps ranked by adjusted X minus Y of the
    lower half, both halves in time order (ties of X ranked by time, as a stable sort would).

    The halves are selected, not sorted: the X values at ranks half-1 and m-half (np.partition)
    split each unit's steps, and only the steps tied with a split value are picked in time
    order (tests/equivalence/test_fast_equals_reference.py holds this equal to a per-unit
    stable sort).
    """
    if isinstance(panel, Unavailable):
        return np.zeros(0)
    mask, xz, yz = panel.mask, panel.xd, panel.yd
    counts = mask.sum(axis=1)
    keyed = np.where(mask, xz, np.inf)  # unusable steps rank last
    out: list[np.ndarray] = [np.zeros(0)] * mask.shape[0]
    for m in np.unique(counts).tolist():
        half = m // 2
        if half == 0:
            continue
        rows = np.flatnonzero(counts == m)
        kx, usable, yr = keyed[rows], mask[rows], yz[rows]
        split = np.partition(kx, (half - 1, m - half), axis=1)
        lo_split, hi_split = split[:, half - 1, None], split[:, m - half, None]
        low = kx < lo_split
        ties = kx == lo_split  # the earliest of these complete the lower half
        low |= ties & (np.cumsum(ties, axis=1) <= (half - low.sum(axis=1))[:, None])
        high = (kx > hi_split) & usable
        ties = kx == hi_split  # the latest of these complete the upper half
        high |= ties & (np.cumsum(ties[:, ::-1], axis=1)[:, ::-1] <= (half - high.sum(axis=1))[:, None])
        d = yr[high].reshape(rows.size, half) - yr[low].reshape(rows.size, half)
        for r, u in enumerate(rows.tolist()):
            out[u] = d[r]
    return np.concatenate(out) if out else np.zeros(0)


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array of finite values, ties given their mean rank: the result of
    ``scipy.stats.rankdata(a)`` (tests hold them equal) without its per-call overhead, which
    is most of the cost on the few values of the dose bins."""
    order = np.argsort(a)  # any order among ties: tied values get the same mean rank
    s = a[order]
    first = np.empty(s.size, dtype=bool)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    dense = np.cumsum(first)
    bounds = np.append(np.flatnonzero(first), s.size)
    out = np.empty(s.size)
    out[order] = 0.5 * (bounds[dense - 1] + bounds[dense] + 1)
    return out


def _gamma_from_pairs(d: np.ndarray, alpha: float) -> float | None:
    d = d[d != 0.0]
    if d.size < MIN_PAIRS:
        return None
    r = average_ranks(np.abs(d))
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
    "assemble_evidence",
    "judge_dose",
    "judge_groups",
    "judge_precedence",
    "judge_within",
    "run_causal_tests",
    "sensitivity_gamma",
]
