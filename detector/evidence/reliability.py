"""Reliability models (framework §3.3): Weibull abandonment, loss aversion, chaining, drift.

Everything here is a pure function over numpy arrays or plain numbers.

Weibull abandonment
    ``S(t) = exp(-(t/lam)^k)``, ``F(t) = 1 - S(t)``, ``E[T] = lam * Gamma(1 + 1/k)``.

Fitting (`fit_weibull`)
    Maximum likelihood with right censoring (``events[i] = 1`` churned at ``durations[i]``,
    ``0`` still active at ``durations[i]``). For fixed k the MLE of lam is closed form,
    ``lam^k = sum(t^k) / D`` (D = number of events), so the fit reduces to the profile
    score equation in k, which is strictly increasing and is solved with `scipy.optimize.brentq`
    on log k. Confidence intervals are Wald intervals on (log lam, log k) from the observed
    information (the inverse of the negative analytic Hessian of the log-likelihood),
    transformed back with ``exp``; they are therefore always positive and asymmetric.
    Goodness of fit is a censoring-aware Kolmogorov-Smirnov test: each uncensored duration
    contributes ``F(t_i)``; each censored one contributes a draw from ``Uniform(F(t_i), 1)``
    (under the fitted model ``F(T)`` given ``T > t_i`` is uniform there), from a fixed-seed
    generator so the result is reproducible. Under the model all these values are
    Uniform(0, 1), which is what the test checks. Without censoring this is exactly the
    ordinary one-sample KS test of the durations against the fitted Weibull. Because the
    parameters are estimated from the same data, the p-value is conservative.
    A fit is rejected when the KS p-value is below 0.05 or the k interval contains 1
    (the data cannot tell the process apart from a memoryless one).

Loss aversion
    ``M(d) = 1 + alpha * ln(1 + d/7)``, applied per lost streak.

Double-Weibull (`chained_survival`)
    The viewer hazard is scaled by the share of creators lost so far:
    ``h(t) = h_v(t) * (1 + coupling * F_c(t))``, hence
    ``S(t) = S_v(t) * exp(-coupling * integral_0^t h_v(s) F_c(s) ds)``.

Drift
    A parameter moving by more than 25% (relative) against the previous period is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import integrate, optimize, special, stats

FloatArray = NDArray[np.float64]

KS_ALPHA = 0.05
"""KS p-values below this reject a fit."""
KS_SEED = 20240601
"""Seed of the generator that places censored observations inside their residual interval."""


def _check_params(lam: float, k: float) -> None:
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"Weibull scale lambda must be a positive finite number, got {lam!r}")
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"Weibull shape k must be a positive finite number, got {k!r}")


def _cum_hazard(t: ArrayLike, lam: float, k: float) -> FloatArray:
    _check_params(lam, k)
    arr = np.asarray(t, dtype=np.float64)
    return np.power(np.clip(arr, 0.0, None) / lam, k)


def weibull_survival(t: ArrayLike, lam: float, k: float) -> FloatArray:
    """``S(t) = exp(-(t/lam)^k)``; 1 for t <= 0. Vectorised over `t`."""
    return np.exp(-_cum_hazard(t, lam, k))


def weibull_cdf(t: ArrayLike, lam: float, k: float) -> FloatArray:
    """``F(t) = 1 - exp(-(t/lam)^k)`` (computed with expm1 for precision); 0 for t <= 0."""
    return -np.expm1(-_cum_hazard(t, lam, k))


def weibull_mean(lam: ArrayLike, k: ArrayLike) -> FloatArray:
    """Mean tolerance ``E[T] = lam * Gamma(1 + 1/k)``. Vectorised over both arguments."""
    lam_a = np.asarray(lam, dtype=np.float64)
    k_a = np.asarray(k, dtype=np.float64)
    if np.any(~(lam_a > 0)) or np.any(~(k_a > 0)):
        raise ValueError("Weibull lambda and k must be positive")
    return lam_a * special.gamma(1.0 + 1.0 / k_a)


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class WeibullFit:
    lam: float
    k: float
    lam_ci: tuple[float, float]
    k_ci: tuple[float, float]
    loglik: float
    n: int
    """Number of observations (churned + still active)."""
    events: int
    """Number of uncensored observations (churned)."""
    ks_statistic: float
    ks_p_value: float
    rejected: bool
    reason: str

    @property
    def ok(self) -> bool:
        return not self.rejected


_NAN_CI = (math.nan, math.nan)


def _failed_fit(n: int, events: int, reason: str) -> WeibullFit:
    return WeibullFit(
        math.nan, math.nan, _NAN_CI, _NAN_CI, math.nan, n, events, math.nan, math.nan, True, reason
    )


def _as_inputs(durations: ArrayLike, events: ArrayLike | None) -> tuple[FloatArray, FloatArray]:
    t = np.asarray(durations, dtype=np.float64).ravel()
    if events is None:
        d = np.ones_like(t)
    else:
        d = np.asarray(events, dtype=np.float64).ravel()
        if d.shape != t.shape:
            raise ValueError(f"durations and events differ in length ({t.size} vs {d.size})")
        if np.any((d != 0) & (d != 1)):
            raise ValueError("events must be 0 (still active) or 1 (churned)")
    if np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise ValueError("durations must be positive finite numbers")
    return t, d


def weibull_loglik(durations: ArrayLike, events: ArrayLike | None, lam: float, k: float) -> float:
    """Right-censored Weibull log-likelihood: sum d*log f(t) + (1-d)*log S(t)."""
    _check_params(lam, k)
    t, d = _as_inputs(durations, events)
    z = np.power(t / lam, k)
    log_f = math.log(k) - math.log(lam) + (k - 1.0) * np.log(t / lam)
    return float(np.sum(d * log_f) - np.sum(z))


def _log_weights(s: FloatArray, k: float) -> FloatArray:
    """Normalised weights proportional to t^k (s = log t), computed stably."""
    a = k * s
    w = np.exp(a - a.max())
    return w / w.sum()


def _profile_score(logk: float, s: FloatArray, mean_event_s: float) -> float:
    k = math.exp(logk)
    w = _log_weights(s, k)
    return float(np.dot(w, s) - 1.0 / k - mean_event_s)


def _hessian_log_params(s_rel: FloatArray, d: FloatArray, k: float) -> FloatArray:
    """Analytic Hessian of the log-likelihood in (u, v) = (log lam, log k) at given k.

    ``s_rel = log t - log lam``, ``z = exp(k s_rel)``.
    """
    z = np.exp(k * s_rel)
    n_events = d.sum()
    h_uu = -(k**2) * z.sum()
    h_uv = k * (z.sum() - n_events) + k**2 * np.dot(s_rel, z)
    h_vv = k * np.dot(d, s_rel) - k * np.dot(s_rel, z) - k**2 * np.dot(s_rel**2, z)
    return np.array([[h_uu, h_uv], [h_uv, h_vv]])


def _ks_uniform(t: FloatArray, d: FloatArray, lam: float, k: float) -> tuple[float, float]:
    u = weibull_cdf(t, lam, k)
    censored = d == 0
    if np.any(censored):
        rng = np.random.default_rng(KS_SEED)
        lo = u[censored]
        u = u.copy()
        u[censored] = lo + (1.0 - lo) * rng.random(lo.size)
    res = stats.kstest(u, "uniform")
    return float(res.statistic), float(res.pvalue)


def fit_weibull(
    durations: ArrayLike, events: ArrayLike | None = None, confidence: float = 0.95
) -> WeibullFit:
    """Fit (lam, k) by maximum likelihood with right censoring; see the module docstring.

    `events` defaults to all ones (no censoring). Invalid inputs (non-positive or
    non-finite durations, events not in {0, 1}, mismatched lengths) raise ValueError;
    data that cannot identify the parameters (fewer than two events, all event times
    equal to the largest duration) return a fit with NaN parameters, ``rejected=True``
    and the reason.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    t, d = _as_inputs(durations, events)
    n = int(t.size)
    n_events = int(d.sum())
    if n_events < 2:
        return _failed_fit(n, n_events, f"cannot fit: {n_events} churn event(s), need at least 2")
    s = np.log(t)
    mean_event_s = float(np.dot(d, s) / n_events)
    if s.max() - mean_event_s <= 1e-12 * max(1.0, abs(s.max())):
        return _failed_fit(
            n, n_events, "cannot fit: every churn happens at the longest duration (k unbounded)"
        )

    bracket = _bracket_log_k(s, mean_event_s)
    if bracket is None:
        return _failed_fit(n, n_events, "cannot fit: the likelihood has no interior maximum")
    lo, hi = bracket
    logk = float(optimize.brentq(_profile_score, lo, hi, args=(s, mean_event_s), xtol=1e-13, rtol=1e-13))
    k = math.exp(logk)
    a = k * s
    amax = float(a.max())
    lam = math.exp((amax + math.log(np.exp(a - amax).sum()) - math.log(n_events)) / k)
    loglik = weibull_loglik(t, d, lam, k)

    lam_ci, k_ci = _wald_intervals(s, d, lam, k, confidence)

    ks_stat, ks_p = _ks_uniform(t, d, lam, k)
    pct = f"{confidence:.0%}"
    reasons: list[str] = []
    if not math.isfinite(k_ci[0]):
        reasons.append("the information matrix is singular, no confidence interval")
    elif k_ci[0] <= 1.0 <= k_ci[1]:
        reasons.append(
            f"the {pct} interval for k [{k_ci[0]:.3g}, {k_ci[1]:.3g}] contains 1 "
            "(cannot be told apart from a memoryless process)"
        )
    if ks_p < KS_ALPHA:
        reasons.append(
            f"KS test rejects the fitted distribution (D = {ks_stat:.3g}, p = {ks_p:.3g} < {KS_ALPHA})"
        )
    rejected = bool(reasons)
    summary = f"lambda = {lam:.4g}, k = {k:.4g} from {n} observations ({n_events} churned)"
    reason = f"{summary}: " + "; ".join(reasons) if rejected else f"{summary}; KS p = {ks_p:.3g}"
    return WeibullFit(
        lam=lam,
        k=k,
        lam_ci=lam_ci,
        k_ci=k_ci,
        loglik=loglik,
        n=n,
        events=n_events,
        ks_statistic=ks_stat,
        ks_p_value=ks_p,
        rejected=rejected,
        reason=reason,
    )


def _bracket_log_k(s: np.ndarray, mean_event_s: float) -> tuple[float, float] | None:
    """A bracket (lo, hi) of log k around the root of the increasing profile score, or None."""
    lo, hi = -1.0, 1.0
    for _ in range(200):
        if _profile_score(lo, s, mean_event_s) < 0:
            break
        lo -= 1.0
    for _ in range(200):
        if _profile_score(hi, s, mean_event_s) > 0:
            break
        hi += 1.0
    f_lo = _profile_score(lo, s, mean_event_s)
    f_hi = _profile_score(hi, s, mean_event_s)
    if not (f_lo < 0 < f_hi):
        return None
    return lo, hi


def _wald_intervals(
    s: np.ndarray, d: np.ndarray, lam: float, k: float, confidence: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Confidence intervals of lambda and k from the observed information on the log scale
    (NaN intervals when it is singular)."""
    hess = _hessian_log_params(s - math.log(lam), d, k)
    info = -hess
    z_crit = float(stats.norm.ppf(0.5 + confidence / 2.0))
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.nan)
    var_u, var_v = float(cov[0, 0]), float(cov[1, 1])
    if not (var_u > 0 and var_v > 0 and math.isfinite(var_u) and math.isfinite(var_v)):
        return _NAN_CI, _NAN_CI
    se_u, se_v = math.sqrt(var_u), math.sqrt(var_v)
    lam_ci = (lam * math.exp(-z_crit * se_u), lam * math.exp(z_crit * se_u))
    k_ci = (k * math.exp(-z_crit * se_v), k * math.exp(z_crit * se_v))
    return lam_ci, k_ci


# --------------------------------------------------------------------------- loss aversion


def loss_aversion_multiplier(d: ArrayLike, alpha: float = 1.2) -> FloatArray:
    """``M(d) = 1 + alpha * ln(1 + d/7)`` for accumulated days d >= 0. Vectorised."""
    arr = np.asarray(d, dtype=np.float64)
    if np.any(arr < 0):
        raise ValueError("streak lengths must be non-negative")
    return 1.0 + alpha * np.log1p(arr / 7.0)


def bucket_representatives(upper_bounds: ArrayLike) -> FloatArray:
    """Representative value of each histogram bucket.

    Buckets are ``(previous bound, bound]`` with the first starting at 0: the
    representative is the midpoint; the ``+Inf`` bucket takes the last finite bound.
    Bounds must be sorted ascending.
    """
    b = np.asarray(upper_bounds, dtype=np.float64).ravel()
    finite = b[np.isfinite(b)]
    if finite.size == 0:
        raise ValueError("a histogram needs at least one finite bucket bound")
    lower = np.concatenate(([0.0], b[:-1]))
    rep = (lower + b) / 2.0
    inf = np.isposinf(b)
    rep[inf] = finite.max()
    return rep


def mean_multiplier_from_histogram(
    upper_bounds: ArrayLike, counts: ArrayLike, alpha: float = 1.2, *, cumulative: bool = False
) -> float:
    """Mean M(d) over lost streaks, each bucket's count weighted by M at its representative.

    `counts` are *per-bucket* (non-cumulative) by default; pass ``cumulative=True`` for
    Prometheus-style ``le`` counts (each bound counts everything at or below it).
    Buckets are sorted by bound first. Representatives: see `bucket_representatives`.
    Returns NaN when the histogram is empty (no lost streaks: nothing to average).
    """
    b = np.asarray(upper_bounds, dtype=np.float64).ravel()
    c = np.asarray(counts, dtype=np.float64).ravel()
    if b.shape != c.shape:
        raise ValueError(f"bounds and counts differ in length ({b.size} vs {c.size})")
    if b.size == 0:
        return math.nan
    if np.any(np.isnan(b)) or np.any(b < 0):
        raise ValueError("bucket bounds must be non-negative numbers")
    if np.any(~np.isfinite(c)):
        raise ValueError("bucket counts must be finite")
    order = np.argsort(b, kind="stable")
    b, c = b[order], c[order]
    if np.unique(b).size != b.size:
        raise ValueError("bucket bounds must be distinct")
    if cumulative:
        c = np.diff(np.concatenate(([0.0], c)))
    # Tiny negative per-bucket counts can come from rate() jitter; anything else is an error.
    tol = 1e-9 * max(1.0, float(np.abs(c).max()))
    if np.any(c < -tol):
        raise ValueError("per-bucket counts must be non-negative (cumulative counts must not decrease)")
    c = np.clip(c, 0.0, None)
    total = float(c.sum())
    if total <= 0:
        return math.nan
    m = loss_aversion_multiplier(bucket_representatives(b), alpha)
    return float(np.dot(c, m) / total)


# --------------------------------------------------------------------------- double Weibull


def chained_survival(
    t: ArrayLike,
    creator: tuple[float, float],
    viewer: tuple[float, float],
    coupling: float = 1.0,
) -> FloatArray:
    """Viewer survival when creator loss feeds viewer loss (double Weibull).

    The viewer hazard is ``h_v(t) * (1 + coupling * F_c(t))``: with no creators lost it
    is the plain viewer hazard; with all creators gone it is ``1 + coupling`` times it.
    Hence ``S_v(t) ** (1 + coupling) <= S(t) <= S_v(t)``. The extra cumulative hazard
    ``integral_0^t h_v(s) F_c(s) ds`` is computed after substituting ``u = H_v(s)``,
    which turns it into ``integral_0^{H_v(t)} F_c(lam_v u^(1/k_v)) du`` (bounded integrand).
    `creator` and `viewer` are (lambda, k) on the same time axis. Vectorised over `t`.
    """
    lam_c, k_c = creator
    lam_v, k_v = viewer
    _check_params(lam_c, k_c)
    _check_params(lam_v, k_v)
    if not (math.isfinite(coupling) and coupling >= 0):
        raise ValueError(f"coupling must be a non-negative finite number, got {coupling!r}")
    tt = np.asarray(t, dtype=np.float64)
    h_v = _cum_hazard(tt, lam_v, k_v)
    if coupling == 0:
        return np.exp(-h_v)

    def integrand(u: float) -> float:
        return float(weibull_cdf(lam_v * u ** (1.0 / k_v), lam_c, k_c))

    def extra(upper: float) -> float:
        if upper <= 0:
            return 0.0
        # Tell quad where the creator cliff sits (in u units) so it is not stepped over.
        points: Sequence[float] | None = None
        cliff = (lam_c / lam_v) ** k_v
        if 0 < cliff < upper:
            points = (cliff,)
        val, _err = integrate.quad(
            integrand, 0.0, upper, points=points, limit=200, epsabs=1e-13, epsrel=1e-11
        )
        return float(val)

    flat = h_v.ravel()
    extras = np.array([extra(float(u)) for u in flat], dtype=np.float64).reshape(h_v.shape)
    return np.exp(-(h_v + coupling * extras))


# --------------------------------------------------------------------------- drift


def drift_flags(
    previous: Mapping[str, float], current: Mapping[str, float], threshold: float = 0.25
) -> dict[str, float]:
    """Parameters whose relative change ``(current - previous) / |previous|`` exceeds threshold.

    Only names present in both mappings with finite values are compared. A parameter
    that moves away from exactly 0 is reported as +/-inf. The result keeps the signed
    relative change, in the order of `current`.
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a non-negative finite number, got {threshold!r}")
    out: dict[str, float] = {}
    for name, cur in current.items():
        if name not in previous:
            continue
        prev = float(previous[name])
        c = float(cur)
        if not (math.isfinite(prev) and math.isfinite(c)):
            continue
        if prev == 0.0:
            if c != 0.0:
                out[name] = math.copysign(math.inf, c)
            continue
        rel = (c - prev) / abs(prev)
        if abs(rel) > threshold:
            out[name] = rel
    return out


__all__ = [
    "KS_ALPHA",
    "WeibullFit",
    "bucket_representatives",
    "chained_survival",
    "drift_flags",
    "fit_weibull",
    "loss_aversion_multiplier",
    "mean_multiplier_from_histogram",
    "weibull_cdf",
    "weibull_loglik",
    "weibull_mean",
    "weibull_survival",
]
