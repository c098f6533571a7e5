"""The five causal tests, the verdict and the Rosenbaum sensitivity (framework.md §3.2)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from detector.evidence.causal import (
    GAMMA_MAX,
    assemble_evidence,
    run_causal_tests,
    sensitivity_gamma,
)
from detector.evidence.panel import Panel, _any_panel, _balanced_panel
from detector.evidence.results import TEST_NAMES, CausalEvidence, TestResult
from detector.spec.pack import CausalSettings
from tests import synthetic as syn
from tests.oracles.causal_reference import run_causal_tests_reference, sensitivity_gamma_reference

SETTINGS = CausalSettings()


def run(panel: syn.Panel, settings: CausalSettings = SETTINGS) -> CausalEvidence:
    return run_causal_tests(panel.x, panel.y, panel.strata, panel.segments, settings)


def outcomes(ev: CausalEvidence) -> dict[str, str]:
    return {t.name: t.result for t in ev.tests}


def details(ev: CausalEvidence, name: str) -> dict[str, float]:
    return dict(ev.test(name).details)


# --------------------------------------------------------------------------------------
# Known answers on seeded panels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_lagged_effect_passes_all_five(seed: int) -> None:
    ev = run(syn.true_effect(seed=seed))
    assert outcomes(ev) == dict.fromkeys(TEST_NAMES, "PASS")
    assert ev.verdict == "causal" and ev.passed == 5 and ev.inconclusive == 0
    assert [t.name for t in ev.tests] == list(TEST_NAMES)
    assert details(ev, "within_unit")["slope"] > 0
    assert ev.test("within_unit").n == 9 * 2016
    assert ev.gamma is not None and ev.gamma >= SETTINGS.robust_gamma
    assert "within-unit slope +" in ev.test("within_unit").reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_between_unit_confounder_passes_only_dose_response(seed: int) -> None:
    ev = run(syn.between_unit_confounder(seed=seed))
    assert outcomes(ev) == {
        "within_unit": "FAIL",
        "stratification": "FAIL",
        "segment_consistency": "FAIL",
        "temporal_precedence": "FAIL",
        "dose_response": "PASS",
    }
    assert ev.verdict == "proxy"
    for name in ev.failed:
        assert name in ev.reason
    assert ev.gamma is not None and ev.gamma < 1.2


def test_reverse_causality_fails_temporal_precedence() -> None:
    ev = run(syn.reverse_causality(seed=0))
    test = ev.test("temporal_precedence")
    assert test.result == "FAIL"
    assert test.reason.startswith("reverse causality")
    d = dict(test.details)
    assert d["p_yx"] < 1e-10 and test.p_value is not None and test.p_value > SETTINGS.alpha
    assert "temporal_precedence" in ev.reason


def test_feedback_loop_fails_temporal_precedence_as_feedback() -> None:
    ev = run(syn.feedback_loop(seed=0))
    test = ev.test("temporal_precedence")
    assert test.result == "FAIL"
    assert test.reason.startswith("feedback loop")
    d = dict(test.details)
    assert test.p_value is not None and test.p_value < SETTINGS.alpha and d["p_yx"] < SETTINGS.alpha
    assert d["f_ratio"] < SETTINGS.feedback_f_ratio


def test_feedback_ratio_setting_decides_one_way_dominance() -> None:
    # A weak reverse link: with ratio 10 the forward link dominates, with an absurd ratio it does not.
    panel = syn.feedback_loop(seed=1, coupling=0.4)
    forward = panel.y.copy()
    forward[:, 1:] += 0.05 * (panel.x[:, :-1] - panel.x.mean(axis=1, keepdims=True))
    strong = syn.Panel(panel.x, forward, panel.strata, panel.segments)
    ev = run(strong)
    d = dict(ev.test("temporal_precedence").details)
    assert d["p_yx"] < SETTINGS.alpha
    assert d["f_ratio"] >= SETTINGS.feedback_f_ratio
    assert ev.test("temporal_precedence").result == "PASS"
    strict = run(strong, replace(SETTINGS, feedback_f_ratio=d["f_ratio"] * 2))
    assert strict.test("temporal_precedence").result == "FAIL"


def test_too_few_points_is_inconclusive_never_fail() -> None:
    ev = run(syn.too_few_points())
    assert all(t.result == "INCONCLUSIVE" for t in ev.tests)
    assert ev.verdict == "insufficient_data"
    assert ev.gamma is None
    assert ev.test("within_unit").n == 27
    assert "27 usable points" in ev.test("within_unit").reason


def test_segment_ratio_above_limit_fails() -> None:
    panel = syn.true_effect(seed=0)
    y = panel.y.copy()
    eu = [i for i, s in enumerate(panel.segments) if s == "eu"]
    y[eu] = y[eu] * 8.0  # eu slope 8x larger, still harm-direction and significant
    ev = run(syn.Panel(panel.x, y, panel.strata, panel.segments))
    seg = ev.test("segment_consistency")
    assert seg.result == "FAIL"
    assert dict(seg.details)["ratio"] > SETTINGS.segment_max_ratio
    assert "differ too much" in seg.reason
    loose = run(
        syn.Panel(panel.x, y, panel.strata, panel.segments), replace(SETTINGS, segment_max_ratio=50.0)
    )
    assert loose.test("segment_consistency").result == "PASS"


def test_stratification_fails_when_only_some_strata_show_harm() -> None:
    effect = syn.true_effect(seed=4)
    null = syn.between_unit_confounder(seed=4)
    low = [i for i, s in enumerate(effect.strata) if s == "low"]
    x, y = null.x.copy(), null.y.copy()
    x[low], y[low] = effect.x[low], effect.y[low]
    ev = run(syn.Panel(x, y, effect.strata, effect.segments))
    strat = ev.test("stratification")
    assert strat.result == "FAIL"
    assert "only 1 of 3 strata" in strat.reason
    assert dict(strat.details)["p[low]"] < SETTINGS.alpha


def test_two_pass_two_inconclusive_is_insufficient_data() -> None:
    # Without labels tests 2 and 3 cannot run; reverse causality (seed 2) then passes
    # within_unit and dose_response and fails temporal_precedence: 2 PASS + 2 INCONCLUSIVE.
    panel = syn.reverse_causality(seed=2)
    ev = run_causal_tests(panel.x, panel.y, [""] * 9, [""] * 9, SETTINGS)
    assert outcomes(ev) == {
        "within_unit": "PASS",
        "stratification": "INCONCLUSIVE",
        "segment_consistency": "INCONCLUSIVE",
        "temporal_precedence": "FAIL",
        "dose_response": "PASS",
    }
    assert ev.verdict == "insufficient_data"
    assert "no stratum label" in ev.test("stratification").reason
    assert "temporal_precedence" in ev.reason
    # One stratum only is inconclusive too (nothing to compare).
    single = run_causal_tests(panel.x, panel.y, ["low"] * 9, panel.segments, SETTINGS)
    assert single.test("stratification").result == "INCONCLUSIVE"
    assert "only one stratum" in single.test("stratification").reason


# --------------------------------------------------------------------------------------
# Degenerate input: INCONCLUSIVE, no exception


def _labels(units: int) -> tuple[list[str], list[str]]:
    return syn.labels(units)


@pytest.mark.parametrize(
    "case",
    ["all_nan", "one_step", "constant_x", "constant_y", "no_units", "single_point_units"],
)
def test_degenerate_panels_are_inconclusive(case: str) -> None:
    base = syn.true_effect(units=9, steps=200, seed=3)
    x, y = base.x.copy(), base.y.copy()
    if case == "all_nan":
        x[:] = np.nan
    elif case == "one_step":
        x, y = x[:, :1], y[:, :1]
    elif case == "constant_x":
        x[:] = 0.3
    elif case == "constant_y":
        y[:] = 0.004
    elif case == "no_units":
        x, y = x[:0], y[:0]
    elif case == "single_point_units":
        x[:, 1:] = np.inf
    strata, segments = _labels(x.shape[0])
    ev = run_causal_tests(x, y, strata, segments, SETTINGS)
    assert [t.name for t in ev.tests] == list(TEST_NAMES)
    assert ev.test("within_unit").result == "INCONCLUSIVE"
    assert ev.test("temporal_precedence").result == "INCONCLUSIVE"
    assert all(t.result != "FAIL" for t in ev.tests)
    assert ev.verdict == "insufficient_data"
    assert ev.to_dict()["verdict"] == "insufficient_data"
    if case in ("constant_x", "constant_y"):
        assert ev.test("dose_response").result == "INCONCLUSIVE"
        assert "constant" in ev.test("dose_response").reason


def test_malformed_arguments_raise() -> None:
    x = np.zeros((3, 10))
    with pytest.raises(ValueError, match="shapes differ"):
        run_causal_tests(x, np.zeros((3, 11)), ["a"] * 3, ["b"] * 3, SETTINGS)
    with pytest.raises(ValueError, match="2-D"):
        run_causal_tests(np.zeros(10), np.zeros(10), ["a"], ["b"], SETTINGS)
    with pytest.raises(ValueError, match="one stratum and one segment label per unit"):
        run_causal_tests(x, x, ["a"] * 2, ["b"] * 3, SETTINGS)
    with pytest.raises(ValueError):
        sensitivity_gamma(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="alpha"):
        sensitivity_gamma(x, x, alpha=1.5)


# --------------------------------------------------------------------------------------
# Verdict rules


def _result(name: str, outcome: str) -> TestResult:
    return TestResult(name, outcome, 1.0, 0.01, 100, f"{name} {outcome}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcomes_", "verdict"),
    [
        ("PPPPP", "causal"),
        ("PPPFF", "causal"),
        ("PPPII", "causal"),
        ("PPFFF", "proxy"),
        ("PPIFF", "proxy"),
        ("FFFFP", "proxy"),
        ("FFFFF", "proxy"),
        ("PPIIF", "insufficient_data"),
        ("IPPIP", "causal"),
        ("IIIII", "insufficient_data"),
        ("FFIIF", "insufficient_data"),
    ],
)
def test_verdict_rules(outcomes_: str, verdict: str) -> None:
    word = {"P": "PASS", "F": "FAIL", "I": "INCONCLUSIVE"}
    tests = [_result(n, word[c]) for n, c in zip(TEST_NAMES, outcomes_, strict=True)]
    ev = assemble_evidence(tests, 1.7, SETTINGS)
    assert ev.verdict == verdict
    assert ev.passed == outcomes_.count("P")
    assert ev.inconclusive == outcomes_.count("I")
    failed = [n for n, c in zip(TEST_NAMES, outcomes_, strict=True) if c == "F"]
    assert ev.failed == tuple(failed)
    for name in failed:
        assert name in ev.reason
    assert ev.reason.startswith(
        verdict.replace("_", " ") if verdict != "insufficient_data" else "insufficient data"
    )
    assert "Gamma*=1.7 (moderate)" in ev.reason


def test_verdict_uses_pass_required_and_checks_order() -> None:
    tests = [_result(n, c) for n, c in zip(TEST_NAMES, ["PASS", "PASS", "FAIL", "FAIL", "FAIL"], strict=True)]
    assert assemble_evidence(tests, None, replace(SETTINGS, pass_required=2)).verdict == "causal"
    with pytest.raises(ValueError, match="TEST_NAMES order"):
        assemble_evidence(list(reversed(tests)), None, SETTINGS)


# --------------------------------------------------------------------------------------
# Test 1 against statsmodels directly (independent of both implementations' demeaning)


def _small_unbalanced(units: int, steps: int, seed: int) -> syn.Panel:
    return syn.with_missing(syn.true_effect(units=units, steps=steps, seed=seed), 0.2, seed=seed + 10)


def test_within_slope_and_se_match_statsmodels_dummy_regression() -> None:
    panel = _small_unbalanced(9, 60, seed=5)
    ev = run(panel)
    d = details(ev, "within_unit")
    ok = np.isfinite(panel.x) & np.isfinite(panel.y)
    unit, time = np.nonzero(ok)
    xv, yv = panel.x[ok], panel.y[ok]
    dummies = np.column_stack(
        [(unit == u).astype(float) for u in range(9)]
        + [(time == t).astype(float) for t in np.unique(time)[1:]]
    )
    full = sm.OLS(yv, np.column_stack([xv, dummies])).fit()
    assert d["slope"] == pytest.approx(full.params[0], rel=1e-9)
    # Same slope from the FWL residuals; SE clustered by unit with use_t (G-1 df).
    xr = sm.OLS(xv, dummies).fit().resid
    yr = sm.OLS(yv, dummies).fit().resid
    res = sm.OLS(yr, xr[:, None]).fit(cov_type="cluster", cov_kwds={"groups": unit}, use_t=True)
    assert d["se"] == pytest.approx(res.bse[0], rel=1e-8)
    assert ev.test("within_unit").p_value == pytest.approx(res.pvalues[0], rel=1e-8)
    assert d["df"] == 8
    assert ev.test("within_unit").n == int(ok.sum())


def test_within_single_unit_uses_newey_west() -> None:
    panel = _small_unbalanced(1, 400, seed=6)
    ev = run(panel)
    d = details(ev, "within_unit")
    ok = np.isfinite(panel.x[0]) & np.isfinite(panel.y[0])
    xv = panel.x[0, ok] - panel.x[0, ok].mean()
    yv = panel.y[0, ok] - panel.y[0, ok].mean()
    n = int(ok.sum())
    lags = int(np.floor(4 * (n / 100) ** (2 / 9)))
    res = sm.OLS(yv, xv[:, None]).fit(
        cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True}, use_t=True
    )
    assert d["slope"] == pytest.approx(res.params[0], rel=1e-9)
    assert d["se"] == pytest.approx(res.bse[0], rel=1e-8)
    assert ev.test("within_unit").p_value == pytest.approx(res.pvalues[0], rel=1e-8)
    assert d["units"] == 1


def test_within_two_units_has_no_time_effects() -> None:
    panel = _small_unbalanced(2, 120, seed=7)
    d = details(run(panel), "within_unit")
    ok = np.isfinite(panel.x) & np.isfinite(panel.y)
    unit, _ = np.nonzero(ok)
    dummies = np.column_stack([(unit == u).astype(float) for u in range(2)])
    full = sm.OLS(panel.y[ok], np.column_stack([panel.x[ok], dummies])).fit()
    assert d["slope"] == pytest.approx(full.params[0], rel=1e-9)
    assert d["df"] == 1


def test_within_null_rejection_rate_is_near_alpha() -> None:
    # Within-unit Y is independent of X: test 1 should pass for about alpha of the seeds.
    passes = 0
    seeds = range(60)
    for seed in seeds:
        ev = run(syn.between_unit_confounder(steps=288, seed=100 + seed))
        passes += ev.test("within_unit").result == "PASS"
    assert passes / len(seeds) <= 0.12


# --------------------------------------------------------------------------------------
# Test 4 under level-dependent noise, and against statsmodels directly


def _lag_rows(panel: syn.Panel, lags: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a balanced panel, two-way demeaned in closed form: (x lags 0..L, y lags 0..L, unit, step)."""
    xd = panel.x - panel.x.mean(axis=1, keepdims=True) - panel.x.mean(axis=0) + panel.x.mean()
    yd = panel.y - panel.y.mean(axis=1, keepdims=True) - panel.y.mean(axis=0) + panel.y.mean()
    units, steps = xd.shape
    lx = np.stack([xd[:, lags - j : steps - j] for j in range(lags + 1)], axis=-1).reshape(-1, lags + 1)
    ly = np.stack([yd[:, lags - j : steps - j] for j in range(lags + 1)], axis=-1).reshape(-1, lags + 1)
    unit = np.repeat(np.arange(units), steps - lags)
    step = np.tile(np.arange(lags, steps), units)
    return lx, ly, unit, step


def _classical_f_rejects(panel: syn.Panel, lags: int) -> bool:
    """The homoskedastic pooled Granger F-test of X -> Y (the definition test 4 replaced)."""
    lx, ly, _, _ = _lag_rows(panel, lags)
    own = sm.add_constant(ly[:, 1:])
    full = sm.OLS(ly[:, 0], np.hstack([own, lx[:, 1:]])).fit()
    return bool(full.compare_f_test(sm.OLS(ly[:, 0], own).fit())[1] < SETTINGS.alpha)


def test_level_dependent_noise_keeps_the_size_of_temporal_precedence() -> None:
    # No effect either way; noise sd proportional to unit levels 50x apart. The classical
    # F-test calls X -> Y significant in about 45% of such panels; the robust test must
    # keep test 4's false-pass rate near alpha.
    seeds = range(40)
    passes = rejects = classical = 0
    for seed in seeds:
        panel = syn.level_noise_null(steps=576, seed=seed)
        test = run(panel).test("temporal_precedence")
        passes += test.result == "PASS"
        rejects += test.p_value is not None and test.p_value < SETTINGS.alpha
        classical += _classical_f_rejects(panel, SETTINGS.lags)
    assert classical >= 12  # the null is a hard one: >= 30% false rejections without robustness
    assert passes <= 4 and rejects <= 4  # <= 10%


def test_level_dependent_noise_null_has_level_dependent_noise() -> None:
    panel = syn.level_noise_null(seed=3)
    level = panel.y.mean(axis=1)
    sd = np.diff(panel.y, axis=1).std(axis=1)
    assert level.max() / level.min() > 20
    assert stats.spearmanr(level, sd).statistic > 0.9
    assert stats.spearmanr(level, panel.x.mean(axis=1)).statistic > 0.9


def test_temporal_precedence_matches_statsmodels_on_a_balanced_panel() -> None:
    # Independent of both implementations' demeaning and lag bookkeeping: closed-form
    # two-way demeaning, OLS unit variances, WLS with step-clustered covariance.
    panel = syn.level_noise_null(units=5, steps=90, seed=21)
    lags = 3
    settings = replace(SETTINGS, lags=lags)
    test = run(panel, settings).test("temporal_precedence")
    lx, ly, unit, step = _lag_rows(panel, lags)
    k, periods = 2 * lags + 1, 90 - lags
    got = []
    for target, own, other in ((ly[:, 0], ly[:, 1:], lx[:, 1:]), (lx[:, 0], lx[:, 1:], ly[:, 1:])):
        exog = sm.add_constant(np.hstack([own, other]))
        ols = sm.OLS(target, exog).fit()
        var = np.array([ols.resid[unit == u] @ ols.resid[unit == u] for u in range(5)])
        var = (var + k * ols.scale) / ((unit == 0).sum() + k)
        wls = sm.WLS(target, exog, weights=1.0 / var[unit]).fit(cov_type="cluster", cov_kwds={"groups": step})
        r = np.hstack([np.zeros((lags, lags + 1)), np.eye(lags)])
        b = r @ wls.params
        wald = float(b @ np.linalg.solve(r @ wls.cov_params() @ r.T, b))
        f = wald / lags * (periods - lags) / (periods - 1)
        got.append((f, stats.f.sf(f, lags, periods - lags)))
    d = details(run(panel, settings), "temporal_precedence")
    assert test.statistic == pytest.approx(got[0][0], rel=1e-9)
    assert test.p_value == pytest.approx(got[0][1], rel=1e-8)
    assert d["f_yx"] == pytest.approx(got[1][0], rel=1e-9)
    assert d["p_yx"] == pytest.approx(got[1][1], rel=1e-8)
    assert (d["df_num"], d["df_den"]) == (lags, periods - lags)
    assert test.n == 5 * periods


def test_temporal_precedence_needs_enough_steps() -> None:
    # 40 units x 10 steps: 160 complete rows but only 4 steps to cluster on.
    panel = syn.true_effect(units=40, steps=10, seed=22)
    test = run(panel).test("temporal_precedence")
    assert test.result == "INCONCLUSIVE"
    assert test.n == 160
    assert test.reason == "only 4 time steps with 6 complete lags (< 8)"


# --------------------------------------------------------------------------------------
# Sensitivity


def test_larger_effect_gives_larger_gamma() -> None:
    gammas = []
    for effect in (0.0008, 0.0016, 0.0032):
        p = syn.true_effect(steps=300, seed=8, effect=effect)
        gammas.append(sensitivity_gamma(p.x, p.y))
    assert all(g is not None for g in gammas)
    g1, g2, g3 = (float(g) for g in gammas if g is not None)
    assert 1.0 < g1 < g2 < g3 < GAMMA_MAX


def test_no_effect_gives_gamma_one() -> None:
    rng = np.random.default_rng(9)
    values = []
    for _ in range(5):
        x = rng.normal(size=(9, 300))
        y = rng.normal(size=(9, 300))
        values.append(sensitivity_gamma(x, y))
    assert all(v is not None and v < 1.2 for v in values)
    assert sum(v == 1.0 for v in values) >= 4


def test_gamma_one_iff_wilcoxon_not_significant() -> None:
    # One unit, 2 steps per pair: pairing is explicit, so the signed-rank p at Gamma=1
    # can be checked against scipy's Wilcoxon (normal approximation, no continuity correction).
    rng = np.random.default_rng(10)
    for shift in (0.0, 0.05, 0.3):
        lo_x = rng.normal(0.0, 0.1, 40)
        hi_x = lo_x + 5.0  # every high step is above every low step
        lo_y = rng.normal(0.0, 1.0, 40)
        hi_y = lo_y + shift + rng.normal(0.0, 1.0, 40)
        x = np.concatenate([lo_x, hi_x])[None, :]
        y = np.concatenate([lo_y, hi_y])[None, :]
        p1 = stats.wilcoxon(hi_y - lo_y, alternative="greater", method="approx", correction=False).pvalue
        gamma = sensitivity_gamma(x, y)
        assert gamma is not None
        assert (gamma == 1.0) == (p1 > 0.05)
        assert gamma == pytest.approx(sensitivity_gamma_reference(x, y), rel=1e-9)


def test_gamma_none_when_too_few_pairs_and_capped() -> None:
    assert sensitivity_gamma(np.full((9, 20), np.nan), np.full((9, 20), np.nan)) is None
    assert sensitivity_gamma(np.arange(6.0)[None, :], np.arange(6.0)[None, :]) is None
    x = np.arange(400.0)[None, :]
    assert sensitivity_gamma(x, 2.0 * x) == GAMMA_MAX  # perfect dose, every pair positive


# --------------------------------------------------------------------------------------
# Fast path == reference implementation


def _rel(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if a == b or (math.isinf(a) and a == b):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


PANELS = {
    "effect_balanced": lambda: syn.true_effect(steps=240, seed=11),
    "effect_unbalanced": lambda: syn.with_missing(syn.true_effect(steps=240, seed=12), 0.15, seed=1),
    "confounder_unbalanced": lambda: syn.with_missing(
        syn.between_unit_confounder(steps=240, seed=13), 0.1, seed=2
    ),
    "reverse": lambda: syn.reverse_causality(steps=240, seed=14),
    "feedback_unbalanced": lambda: syn.with_missing(syn.feedback_loop(steps=240, seed=15), 0.05, seed=3),
    "two_units": lambda: syn.with_missing(syn.true_effect(units=2, steps=300, seed=16), 0.1, seed=4),
    "one_unit": lambda: syn.with_missing(syn.true_effect(units=1, steps=400, seed=17), 0.1, seed=5),
    "sparse_unit": lambda: _sparse_unit(),
    "disconnected": lambda: _disconnected(),
    "short": lambda: syn.true_effect(units=9, steps=5, seed=19),
    "wide_short": lambda: syn.true_effect(units=40, steps=12, seed=23),
    "level_noise_unbalanced": lambda: syn.with_missing(syn.level_noise_null(steps=300, seed=24), 0.1, seed=6),
}


def _disconnected() -> syn.Panel:
    # Units 0-2 only in the first half, 3-5 only in the second: two-way FE with an extra
    # collinearity between the unit and time dummies.
    p = syn.true_effect(units=6, steps=200, seed=20)
    x = p.x.copy()
    x[:3, 100:] = np.nan
    x[3:, :100] = np.nan
    return syn.Panel(x, p.y, p.strata, p.segments)


def _sparse_unit() -> syn.Panel:
    p = syn.true_effect(units=6, steps=200, seed=18)
    x = p.x.copy()
    x[0, 50:] = np.nan  # one unit present only at the start
    x[1, ::2] = np.nan  # one unit every other step: never complete lags
    return syn.Panel(x, p.y, p.strata, p.segments)


@pytest.mark.parametrize("name", sorted(PANELS))
def test_fast_matches_reference(name: str) -> None:
    panel = PANELS[name]()
    fast = run(panel)
    ref = run_causal_tests_reference(panel.x, panel.y, panel.strata, panel.segments, SETTINGS)
    assert fast.verdict == ref.verdict
    assert _rel(fast.gamma, ref.gamma) < 1e-6
    computed = 0
    for a, b in zip(fast.tests, ref.tests, strict=True):
        assert (a.name, a.result, a.n) == (b.name, b.result, b.n)
        if a.result == "INCONCLUSIVE":
            assert a.reason == b.reason
        assert _rel(a.statistic, b.statistic) < 1e-6, a.name
        assert _rel(a.p_value, b.p_value) < 1e-6, a.name
        assert [k for k, _ in a.details] == [k for k, _ in b.details]
        for (key, va), (_, vb) in zip(a.details, b.details, strict=True):
            assert _rel(va, vb) < 1e-6, (a.name, key)
        computed += a.statistic is not None
    if name != "short":
        assert computed >= 3  # the comparison is not vacuous
    assert sensitivity_gamma(panel.x, panel.y) == pytest.approx(
        sensitivity_gamma_reference(panel.x, panel.y), rel=1e-6
    )


@pytest.mark.parametrize("rows", [[0], [1, 4], [0, 2, 5], [0, 1, 2, 3, 4, 5]])
def test_balanced_panel_is_the_general_transformation_bit_for_bit(rows: list[int]) -> None:
    rng = np.random.default_rng(len(rows))
    x = rng.normal(size=(6, 500)) * 10.0 ** rng.integers(-3, 4, size=(6, 1))
    y = rng.normal(size=(6, 500))
    mask = np.ones(x.shape, dtype=bool)
    idx = np.array(rows)
    fast = _balanced_panel(x, y, mask[idx], idx)
    slow = _any_panel(x, y, mask[idx], idx)
    assert isinstance(slow, Panel)
    assert (fast.n, fast.two_way) == (slow.n, slow.two_way) == (len(rows) * 500, len(rows) >= 3)
    for name in ("mask", "xz", "yz", "xd", "yd"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8)), name
