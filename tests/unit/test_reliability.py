"""Reliability models: framework §3.3 and the reference figures of §6."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from detector.evidence.reliability import (
    bucket_representatives,
    chained_survival,
    drift_flags,
    fit_weibull,
    loss_aversion_multiplier,
    mean_multiplier_from_histogram,
    weibull_cdf,
    weibull_loglik,
    weibull_mean,
    weibull_survival,
)

VIEWER = (3.39, 2.28)
CREATOR = (90.0, 4.5)


# ----------------------------------------------------------------- reference figures (§6)


@pytest.mark.parametrize(
    ("t", "percent", "digits"),
    [(0.300, 0.3964, 4), (0.370, 0.6386, 4), (0.100, 0.0324, 4), (2.0, 25.94, 2)],
)
def test_viewer_abandonment_reference(t: float, percent: float, digits: int) -> None:
    assert round(float(weibull_cdf(t, *VIEWER)) * 100, digits) == percent


def test_viewer_mean_tolerance_reference() -> None:
    assert round(float(weibull_mean(*VIEWER)), 3) == 3.003


@pytest.mark.parametrize(("t", "percent"), [(30, 0.71), (60, 14.89), (90, 63.21), (120, 97.40)])
def test_creator_abandonment_reference(t: float, percent: float) -> None:
    assert round(float(weibull_cdf(t, *CREATOR)) * 100, 2) == percent


@pytest.mark.parametrize(("d", "m"), [(1, 1.16), (7, 1.83), (10, 2.06), (16, 2.43), (30, 3.00)])
def test_loss_aversion_reference(d: float, m: float) -> None:
    assert round(float(loss_aversion_multiplier(d)), 2) == m


# ----------------------------------------------------------------- Weibull functions


def test_weibull_functions_match_scipy_and_are_vectorised() -> None:
    t = np.array([[0.05, 0.3, 1.0], [2.0, 5.0, 12.0]])
    ref = stats.weibull_min(VIEWER[1], scale=VIEWER[0])
    cdf = weibull_cdf(t, *VIEWER)
    assert cdf.shape == t.shape
    np.testing.assert_allclose(cdf, ref.cdf(t), rtol=1e-12)
    np.testing.assert_allclose(weibull_survival(t, *VIEWER), ref.sf(t), rtol=1e-12)
    np.testing.assert_allclose(cdf + weibull_survival(t, *VIEWER), 1.0, rtol=1e-14)
    # t <= 0: nobody has abandoned yet
    np.testing.assert_array_equal(weibull_cdf(np.array([-1.0, 0.0]), *VIEWER), [0.0, 0.0])


def test_weibull_mean_equals_integral_of_survival() -> None:
    for lam, k in [VIEWER, CREATOR, (2.0, 0.7), (1.0, 1.0)]:
        area, _ = integrate.quad(lambda s, lam=lam, k=k: float(weibull_survival(s, lam, k)), 0, np.inf)
        assert float(weibull_mean(lam, k)) == pytest.approx(area, rel=1e-7)
    np.testing.assert_allclose(weibull_mean(np.array([1.0, 2.0]), 1.0), [1.0, 2.0])


@pytest.mark.parametrize(
    ("lam", "k"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (math.nan, 1.0), (1.0, math.inf)]
)
def test_invalid_weibull_parameters_raise(lam: float, k: float) -> None:
    with pytest.raises(ValueError):
        weibull_cdf(1.0, lam, k)


# ----------------------------------------------------------------- fitting


def test_fit_matches_scipy_on_uncensored_data() -> None:
    rng = np.random.default_rng(11)
    t = VIEWER[0] * rng.weibull(VIEWER[1], 800)
    fit = fit_weibull(t)
    k_ref, loc, lam_ref = stats.weibull_min.fit(t, floc=0)
    assert loc == 0
    assert fit.lam == pytest.approx(lam_ref, rel=1e-4)
    assert fit.k == pytest.approx(k_ref, rel=1e-4)
    assert fit.n == fit.events == 800
    # the MLE maximises the likelihood: scipy's point is not better, nearby points are worse
    assert fit.loglik >= weibull_loglik(t, None, lam_ref, k_ref) - 1e-9
    for dl, dk in [(1.01, 1.0), (0.99, 1.0), (1.0, 1.01), (1.0, 0.99)]:
        assert fit.loglik > weibull_loglik(t, None, fit.lam * dl, fit.k * dk)
    # with no censoring the KS test is the ordinary one against the fitted distribution
    ks = stats.kstest(t, stats.weibull_min(fit.k, scale=fit.lam).cdf)
    assert fit.ks_statistic == pytest.approx(float(ks.statistic), rel=1e-10)
    assert fit.ks_p_value == pytest.approx(float(ks.pvalue), rel=1e-8)
    assert not fit.rejected


def _censored_sample(rng: np.random.Generator, n: int, lam: float, k: float, horizon: float):
    t = lam * rng.weibull(k, n)
    c = rng.uniform(0, horizon, n)
    return np.minimum(t, c), (t <= c).astype(float)


def test_fit_recovers_known_parameters_under_censoring() -> None:
    rng = np.random.default_rng(20240601)
    t, d = _censored_sample(rng, 3000, *VIEWER, horizon=5.0)
    assert 0.3 < 1 - d.mean() < 0.8  # substantial censoring
    fit = fit_weibull(t, d)
    assert fit.lam_ci[0] < VIEWER[0] < fit.lam_ci[1]
    assert fit.k_ci[0] < VIEWER[1] < fit.k_ci[1]
    assert fit.lam_ci[0] < fit.lam < fit.lam_ci[1]
    assert fit.events == int(d.sum()) and fit.n == 3000
    assert not fit.rejected, fit.reason
    # ignoring censoring would bias the fit badly: the naive uncensored fit misses lambda
    k_naive, _, lam_naive = stats.weibull_min.fit(t[d == 1], floc=0)
    assert not fit.lam_ci[0] < lam_naive < fit.lam_ci[1]


def test_confidence_intervals_match_numerical_information() -> None:
    rng = np.random.default_rng(5)
    t, d = _censored_sample(rng, 400, *CREATOR, horizon=150.0)
    fit = fit_weibull(t, d, confidence=0.9)

    def ll(u: float, v: float) -> float:
        return weibull_loglik(t, d, math.exp(u), math.exp(v))

    u0, v0, h = math.log(fit.lam), math.log(fit.k), 1e-4
    huu = (ll(u0 + h, v0) - 2 * ll(u0, v0) + ll(u0 - h, v0)) / h**2
    hvv = (ll(u0, v0 + h) - 2 * ll(u0, v0) + ll(u0, v0 - h)) / h**2
    huv = (ll(u0 + h, v0 + h) - ll(u0 + h, v0 - h) - ll(u0 - h, v0 + h) + ll(u0 - h, v0 - h)) / (4 * h * h)
    cov = np.linalg.inv(-np.array([[huu, huv], [huv, hvv]]))
    z = stats.norm.ppf(0.95)
    assert fit.lam_ci[1] == pytest.approx(fit.lam * math.exp(z * math.sqrt(cov[0, 0])), rel=1e-4)
    assert fit.k_ci[0] == pytest.approx(fit.k * math.exp(-z * math.sqrt(cov[1, 1])), rel=1e-4)


def test_confidence_interval_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(99)
    reps, hits_k, hits_lam = 300, 0, 0
    for _ in range(reps):
        t, d = _censored_sample(rng, 150, 2.0, 1.8, horizon=4.0)
        fit = fit_weibull(t, d)
        hits_k += fit.k_ci[0] < 1.8 < fit.k_ci[1]
        hits_lam += fit.lam_ci[0] < 2.0 < fit.lam_ci[1]
    assert 0.91 <= hits_k / reps <= 0.985
    assert 0.91 <= hits_lam / reps <= 0.985


def test_exponential_sample_is_rejected_as_memoryless() -> None:
    rng = np.random.default_rng(3)
    fit = fit_weibull(rng.exponential(2.0, 300))
    assert fit.k_ci[0] < 1.0 < fit.k_ci[1]
    assert fit.rejected
    assert "contains 1" in fit.reason


def test_non_weibull_sample_is_rejected_by_ks() -> None:
    rng = np.random.default_rng(8)
    t = np.concatenate([rng.normal(1.0, 0.05, 500), rng.normal(6.0, 0.2, 500)])
    fit = fit_weibull(t)
    assert fit.ks_p_value < 0.05
    assert fit.rejected and "KS test rejects" in fit.reason


def test_censoring_aware_ks_accepts_a_correct_model_naive_ks_would_reject() -> None:
    rng = np.random.default_rng(17)
    t, d = _censored_sample(rng, 2000, *VIEWER, horizon=4.0)
    fit = fit_weibull(t, d)
    naive = stats.kstest(t[d == 1], stats.weibull_min(fit.k, scale=fit.lam).cdf)
    assert naive.pvalue < 1e-6
    assert fit.ks_p_value > 0.05
    assert not fit.rejected


def test_fit_cannot_compute_is_typed() -> None:
    one_event = fit_weibull([1.0, 2.0, 3.0], [1, 0, 0])
    assert one_event.rejected and math.isnan(one_event.lam) and "need at least 2" in one_event.reason
    at_max = fit_weibull([1.0, 3.0, 3.0], [0, 1, 1])
    assert at_max.rejected and math.isnan(at_max.k)


@pytest.mark.parametrize(
    ("t", "d"),
    [([1.0, -2.0], [1, 1]), ([1.0, math.nan], [1, 1]), ([1.0, 2.0], [1, 2]), ([1.0, 2.0], [1])],
)
def test_fit_invalid_inputs_raise(t: list[float], d: list[int]) -> None:
    with pytest.raises(ValueError):
        fit_weibull(t, d)


# ----------------------------------------------------------------- loss aversion


def test_mean_multiplier_is_per_streak_not_of_average_streak() -> None:
    bounds = np.array([1.0, 7.0, 30.0, np.inf])
    counts = np.array([50.0, 30.0, 15.0, 5.0])
    # representatives: 0.5, 4, 18.5, and 30 for +Inf
    expected = (
        sum(c * (1 + 1.2 * math.log(1 + r / 7)) for c, r in zip(counts, [0.5, 4, 18.5, 30], strict=True))
        / 100
    )
    got = mean_multiplier_from_histogram(bounds, counts)
    assert got == pytest.approx(expected, rel=1e-12)
    mean_d = float(np.dot(counts, [0.5, 4, 18.5, 30]) / 100)
    assert got < float(loss_aversion_multiplier(mean_d))  # M is concave: the average streak overstates
    np.testing.assert_allclose(bucket_representatives(bounds), [0.5, 4.0, 18.5, 30.0])


def test_mean_multiplier_cumulative_and_order_and_alpha() -> None:
    bounds = np.array([7.0, 1.0, np.inf, 30.0])
    counts = np.array([30.0, 50.0, 5.0, 15.0])
    per_bucket = mean_multiplier_from_histogram(bounds, counts)
    cumulative = mean_multiplier_from_histogram(
        [1.0, 7.0, 30.0, np.inf], [50.0, 80.0, 95.0, 100.0], cumulative=True
    )
    assert per_bucket == pytest.approx(cumulative, rel=1e-12)
    # one bucket whose midpoint is 10 days gives M(10) exactly, for any alpha
    assert mean_multiplier_from_histogram([5.0, 15.0], [0.0, 4.0], alpha=2.0) == pytest.approx(
        1 + 2 * math.log(17 / 7)
    )


def test_mean_multiplier_edge_cases() -> None:
    assert math.isnan(mean_multiplier_from_histogram([1.0, np.inf], [0.0, 0.0]))
    with pytest.raises(ValueError):
        mean_multiplier_from_histogram([1.0, 7.0], [5.0, 3.0], cumulative=True)  # cumulative must not drop
    with pytest.raises(ValueError):
        mean_multiplier_from_histogram([1.0, 7.0], [5.0])
    with pytest.raises(ValueError):
        loss_aversion_multiplier(-1.0)


# ----------------------------------------------------------------- double Weibull


def test_chained_survival_without_creator_loss_is_viewer_survival() -> None:
    t = np.linspace(0, 10, 21)
    s_v = weibull_survival(t, *VIEWER)
    np.testing.assert_allclose(chained_survival(t, CREATOR, VIEWER, coupling=0.0), s_v, rtol=1e-14)
    # creators that essentially never leave on this time axis
    np.testing.assert_allclose(chained_survival(t, (1e9, 2.0), VIEWER, coupling=3.0), s_v, rtol=1e-9)
    # creators that all leave at once: full coupling from the start
    np.testing.assert_allclose(chained_survival(t, (1e-6, 2.0), VIEWER, coupling=0.5), s_v**1.5, rtol=1e-9)


def test_chained_survival_exponential_closed_form() -> None:
    lc, lv, c = 2.0, 5.0, 0.7
    t = np.array([0.0, 0.5, 1.0, 3.0, 8.0])
    extra = t / lv - (lc / lv) * (1 - np.exp(-t / lc))
    expected = np.exp(-t / lv - c * extra)
    np.testing.assert_allclose(chained_survival(t, (lc, 1.0), (lv, 1.0), coupling=c), expected, rtol=1e-9)


def test_chained_survival_bounds_and_monotone() -> None:
    t = np.linspace(0, 8, 33)
    s_v = weibull_survival(t, *VIEWER)
    s1 = chained_survival(t, (2.0, 4.5), VIEWER, coupling=1.0)
    s2 = chained_survival(t, (2.0, 4.5), VIEWER, coupling=2.0)
    assert s1.shape == t.shape
    assert np.all(np.diff(s1) <= 0)
    assert np.all(s1 <= s_v + 1e-15) and np.all(s1 >= s_v**2 - 1e-15)
    assert np.all(s2 <= s1 + 1e-15) and np.any(s2 < s1 - 1e-3)
    with pytest.raises(ValueError):
        chained_survival(t, CREATOR, VIEWER, coupling=-1.0)


# ----------------------------------------------------------------- drift


def test_drift_flags_threshold_edges() -> None:
    prev = {"lam": 4.0, "k": 2.0, "alpha": 1.2, "zero": 0.0, "gone": 1.0}
    cur = {"lam": 5.0, "k": 1.4, "alpha": 1.5001, "zero": 0.1, "new": 9.0}
    flags = drift_flags(prev, cur)
    assert "lam" not in flags  # exactly +25% is not "more than 25%"
    assert flags["k"] == pytest.approx(-0.3)
    assert flags["alpha"] == pytest.approx(0.0001 / 1.2 + 0.25)  # just above 25%
    assert flags["zero"] == math.inf
    assert "gone" not in flags and "new" not in flags
    assert drift_flags(prev, cur, threshold=0.1)["lam"] == pytest.approx(0.25)
    assert drift_flags({"k": 2.0}, {"k": math.nan}) == {}
