"""Causal battery: the fast path against the statsmodels/scipy reference, side by side.

The project's five tests plus the Rosenbaum sensitivity for one constraint
(`detector.evidence.causal.run_causal_tests`) against `tests.oracles.causal_reference.run_causal_tests_reference`
on the seeded panels of tests/synthetic.py (a true lagged effect, seed 0). Reports the
CPU-time ratio and the largest relative difference of every statistic, p-value, detail
figure and Gamma*.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.common import Measurement, time_calls

PANELS: dict[str, tuple[tuple[int, int], ...]] = {
    "smoke": ((9, 288),),
    "quick": ((9, 2016), (36, 2016)),
    "full": ((9, 2016), (36, 2016), (9, 8064)),
}
REPEATS = {"smoke": 3, "quick": 10, "full": 20}
REFERENCE_REPEATS = {"smoke": 1, "quick": 1, "full": 3}
SPEED_TARGET = 10.0
P_TARGET = 1e-6
_TINY = 1e-300
"""Two numbers both below this in magnitude count as equal (p-values underflowing to 0)."""


def relative_difference(a: float | None, b: float | None) -> float:
    """|a - b| / |b|; 0 for equal numbers (infinities, NaNs and None included), inf for a mismatch in kind."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    if a == b:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return math.inf
    if abs(a) < _TINY and abs(b) < _TINY:
        return 0.0
    return abs(a - b) / max(abs(b), _TINY)


def compare_evidence(fast: Any, ref: Any) -> dict[str, Any]:
    """Largest relative differences between two `CausalEvidence` (statistics, p-values, details, Gamma*).

    Also checks that verdicts and test outcomes agree.
    """
    stats: list[tuple[str, float]] = []
    pvals: list[tuple[str, float]] = []
    details: list[tuple[str, float]] = []
    same_outcomes = fast.verdict == ref.verdict
    for tf, tr in zip(fast.tests, ref.tests, strict=True):
        same_outcomes &= tf.name == tr.name and tf.result == tr.result and tf.n == tr.n
        stats.append((f"{tf.name}.statistic", relative_difference(tf.statistic, tr.statistic)))
        pvals.append((f"{tf.name}.p_value", relative_difference(tf.p_value, tr.p_value)))
        dr = dict(tr.details)
        for key, value in tf.details:
            target = pvals if key.startswith("p") and (key.startswith("p[") or key.startswith("p_")) else details
            target.append((f"{tf.name}.{key}", relative_difference(value, dr.get(key))))
        same_outcomes &= {k for k, _ in tf.details} == set(dr)
    gamma = relative_difference(fast.gamma, ref.gamma)

    def worst(items: list[tuple[str, float]]) -> tuple[str, float]:
        return max(items, key=lambda kv: kv[1]) if items else ("", 0.0)

    ws, wp, wd = worst(stats), worst(pvals), worst(details)
    return {
        "same_outcomes": bool(same_outcomes),
        "max_rel_statistic": ws[1],
        "worst_statistic": ws[0],
        "max_rel_p_value": wp[1],
        "worst_p_value": wp[0],
        "max_rel_detail": wd[1],
        "worst_detail": wd[0],
        "rel_gamma": gamma,
        "compared": len(stats) + len(pvals) + len(details) + 1,
    }


def run(size: str) -> list[Measurement]:
    from detector.evidence.causal import run_causal_tests
    from detector.spec.pack import CausalSettings
    from tests import synthetic
    from tests.oracles.causal_reference import run_causal_tests_reference

    settings = CausalSettings()
    out: list[Measurement] = []
    for units, steps in PANELS[size]:
        panel = synthetic.true_effect(units=units, steps=steps, seed=0)
        args = (panel.x, panel.y, panel.strata, panel.segments, settings)
        fast_t = time_calls(lambda a=args: run_causal_tests(*a), REPEATS[size])
        ref_t = time_calls(lambda a=args: run_causal_tests_reference(*a), REFERENCE_REPEATS[size], warmup=0)
        cmp = compare_evidence(run_causal_tests(*args), run_causal_tests_reference(*args))
        ratio = ref_t.cpu_median / fast_t.cpu_median
        label = f"{units} x {steps}"
        extra = {
            "units": units,
            "steps": steps,
            "fast_cpu_s": list(fast_t.cpu),
            "fast_wall_s": list(fast_t.wall),
            "reference_cpu_s": list(ref_t.cpu),
            "reference_wall_s": list(ref_t.wall),
            **cmp,
        }
        bench = "causal"
        out.append(Measurement(bench, f"fast path {label}", fast_t.cpu_median, "s", extra=extra))
        out.append(Measurement(bench, f"reference {label}", ref_t.cpu_median, "s"))
        out.append(
            Measurement(bench, f"speed-up {label}", ratio, "x", f">= {SPEED_TARGET:g}x", ratio >= SPEED_TARGET)
        )
        p_ok = cmp["max_rel_p_value"] <= P_TARGET and cmp["same_outcomes"]
        out.append(
            Measurement(
                bench,
                f"max rel. diff p-values {label}",
                cmp["max_rel_p_value"],
                "ratio",
                f"<= {P_TARGET:g}",
                p_ok,
                note=f"worst: {cmp['worst_p_value']}; outcomes {'agree' if cmp['same_outcomes'] else 'DIFFER'}",
            )
        )
        worst_other = max(cmp["max_rel_statistic"], cmp["max_rel_detail"], cmp["rel_gamma"])
        out.append(
            Measurement(
                bench,
                f"max rel. diff statistics {label}",
                worst_other,
                "ratio",
                note=(
                    f"statistic {cmp['max_rel_statistic']:.2g} ({cmp['worst_statistic']}), "
                    f"detail {cmp['max_rel_detail']:.2g} ({cmp['worst_detail']}), Gamma* {cmp['rel_gamma']:.2g}"
                ),
            )
        )
    return out
