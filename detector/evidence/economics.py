"""Economics (framework §3.4): revenue at risk, ROI, the invest threshold and its exceptions.

Pure functions over pack dataclasses and plain numbers; the result is an `EconomicsResult`.

* Universal revenue law: ``revenue/yr = affected_users_per_day * dF * ARPU_day * 365``.
* ``ROI = (revenue + support_savings) * effectiveness * reach / cost_per_year``.
* ``theta = max(roi_features, base_theta)``, raised to ``fragile_theta`` when the causal
  sensitivity Gamma* is below ``fragile_gamma`` (fragile evidence never lowers theta).
* Exceptions that allow investing below theta, checked in this order, first match wins,
  and only when the ROI does not already clear theta:

  - ``existence``: declared in the pack; invest regardless of ROI.
  - ``strategic_headroom``: ``1 <= ROI < theta``; ROI scales linearly with DAU, so the
    ROI at ``organisation.projected_dau`` is ``ROI * projected_dau / current_dau`` and the
    scale factor is ``projected_dau / current_dau``; needs projected ROI > 5, scale
    factor > 2.5 and a declared lead time > 6 months (all from `EconomicConstants`).
  - ``enabling_infrastructure``: ``ROI < 1`` (or no direct revenue model at all) and the
    combined ROI of the constraints it enables is >= theta. The combined ROI is the
    *sum* of their ROIs (each return is unlocked only by this infrastructure); unknown
    ROIs count as 0.

* One-way door: when the pack declares a migration of M months and the runway is
  below ``2 * M`` the result is ``one_way_door_blocked=True`` — never start it,
  whatever the ROI or exception says.
* Composite: two ROIs within ``band`` of each other (larger / smaller <= 1 + band).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from detector.evidence.reliability import mean_multiplier_from_histogram, weibull_cdf
from detector.evidence.results import EconomicsResult
from detector.spec.pack import CausalSettings, EconomicConstants, EconomicsSpec, ExceptionSpec, Organisation

DAYS_PER_YEAR = 365.0
Details = tuple[tuple[str, float], ...]
Histogram = tuple[np.ndarray, np.ndarray]
"""(upper bounds, per-bucket counts) of a streak-length histogram; see `mean_multiplier_from_histogram`."""

_FRAGILE_GAMMA_DEFAULT: float = CausalSettings().fragile_gamma


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(float(v))


def annual_revenue_at_risk(affected_per_day: float, delta_f: float, arpu_day: float) -> float:
    """The universal revenue law: ``affected_per_day * delta_f * arpu_day * 365``."""
    return float(affected_per_day) * float(delta_f) * float(arpu_day) * DAYS_PER_YEAR


def _need(value: float | None, what: str, model: str) -> float:
    if value is None or not math.isfinite(value):
        raise ValueError(f"economics model {model!r} needs {what}")
    return float(value)


def _input(inputs: Mapping[str, float], name: str | None, model: str) -> float | None:
    if name is None:
        raise ValueError(
            f"economics model {model!r} needs 'affected' (the input naming the affected population)"
        )
    v = inputs.get(name)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def revenue_at_risk(
    spec: EconomicsSpec,
    x: float,
    target: float,
    inputs: Mapping[str, float],
    histograms: Mapping[str, Histogram],
    arpu_day: float,
) -> tuple[float | None, Details]:
    """Annual revenue at risk for one constraint, with the intermediate figures.

    Returns ``(None, details_so_far)`` when a needed value (x, the affected input, the
    streak histogram) is missing, NaN or empty: "cannot compute", not an error.
    A spec that lacks a parameter its model needs (e.g. ``weibull_lambda``) is a pack
    error and raises ValueError. Model ``none`` returns ``(None, ())``.
    Details names: ``x``, ``baseline``, ``f_x``, ``f_baseline``, ``delta_f``,
    ``affected_per_day`` (weibull); ``active_creators``, ``creators_lost_per_year``
    (creator_weibull); ``incidents_per_day``, ``incidents_per_year``, ``mean_multiplier``,
    ``lost_streaks`` (loss_aversion).
    """
    model = spec.model
    if model == "none":
        return None, ()
    if model in ("weibull", "creator_weibull"):
        lam = _need(spec.weibull_lambda, "weibull_lambda", model)
        k = _need(spec.weibull_k, "weibull_k", model)
        baseline = float(spec.baseline) if spec.baseline is not None else float(target)
        affected = _input(inputs, spec.affected, model)
        per_creator = (
            _need(spec.learner_days_per_creator, "learner_days_per_creator", model)
            if model == "creator_weibull"
            else math.nan
        )
        if not _finite(x):
            return None, (("baseline", baseline),)
        f_x = float(weibull_cdf(float(x), lam, k))
        f_b = float(weibull_cdf(baseline, lam, k))
        delta_f = max(f_x - f_b, 0.0)
        details: list[tuple[str, float]] = [
            ("x", float(x)),
            ("baseline", baseline),
            ("f_x", f_x),
            ("f_baseline", f_b),
            ("delta_f", delta_f),
        ]
        if affected is None:
            return None, tuple(details)
        if model == "weibull":
            details.append(("affected_per_day", affected))
            return annual_revenue_at_risk(affected, delta_f, arpu_day), tuple(details)
        lost = affected * delta_f
        details += [("active_creators", affected), ("creators_lost_per_year", lost)]
        return lost * per_creator * float(arpu_day), tuple(details)
    if model == "loss_aversion":
        churn = _need(spec.churn_per_incident, "churn_per_incident", model)
        if spec.streak_histogram is None:
            raise ValueError("economics model 'loss_aversion' needs streak_histogram")
        per_day = _input(inputs, spec.affected, model)
        if per_day is None:
            return None, ()
        per_year = per_day * DAYS_PER_YEAR
        details = [("incidents_per_day", per_day), ("incidents_per_year", per_year)]
        hist = histograms.get(spec.streak_histogram)
        if hist is None:
            return None, tuple(details)
        bounds, counts = hist
        try:
            mean_m = mean_multiplier_from_histogram(bounds, counts, spec.loss_aversion_alpha)
        except ValueError:
            # A malformed histogram from the source is "cannot compute", not a crash.
            return None, tuple(details)
        if not math.isfinite(mean_m):
            return None, tuple(details)
        details += [("mean_multiplier", mean_m), ("lost_streaks", float(np.sum(counts)))]
        return per_year * mean_m * churn * float(arpu_day) * DAYS_PER_YEAR, tuple(details)
    raise ValueError(f"unknown economics model {model!r}")


def roi(revenue: float | None, spec: EconomicsSpec) -> float | None:
    """``(revenue + support_savings) * effectiveness * reach / cost_per_year``; None when
    revenue is unknown or the fix has no positive cost."""
    if revenue is None or not math.isfinite(revenue) or not spec.cost_per_year > 0:
        return None
    return (revenue + spec.support_savings_per_year) * spec.effectiveness * spec.reach / spec.cost_per_year


def theta(
    constants: EconomicConstants, gamma: float | None, fragile_gamma: float = _FRAGILE_GAMMA_DEFAULT
) -> float:
    """Invest threshold: ``max(roi_features, base_theta)``; at least ``fragile_theta``
    when the sensitivity Gamma* is known and below `fragile_gamma`."""
    base = max(constants.roi_features, constants.base_theta)
    if gamma is not None and math.isfinite(gamma) and gamma < fragile_gamma:
        return max(base, constants.fragile_theta)
    return base


def combined_roi(names: tuple[str, ...], roi_of: Mapping[str, float | None]) -> tuple[float, tuple[str, ...]]:
    """Sum of the known ROIs of `names`, and the names whose ROI is unknown."""
    total = 0.0
    unknown: list[str] = []
    for n in names:
        v = roi_of.get(n)
        if v is None or not math.isfinite(v):
            unknown.append(n)
        else:
            total += float(v)
    return total, tuple(unknown)


def _fmt_money(v: float) -> str:
    if abs(v) >= 1e6:
        return f"${v / 1e6:.2f}M"
    if abs(v) >= 1e3:
        return f"${v / 1e3:.0f}K"
    return f"${v:.0f}"


def _fmt_count(v: float) -> str:
    return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v:g}"


def _strategic(
    r: float | None,
    th: float,
    exceptions: ExceptionSpec,
    constants: EconomicConstants,
    organisation: Organisation,
    current_dau: float | None,
) -> tuple[bool, str]:
    if r is None:
        return False, "strategic headroom needs a current ROI"
    if not 1.0 <= r < th:
        return False, f"strategic headroom needs 1 <= ROI < {th:.2f}, ROI is {r:.2f}x"
    if not (_finite(current_dau) and current_dau is not None and current_dau > 0):
        return False, "strategic headroom needs the current DAU"
    scale = organisation.projected_dau / current_dau
    projected = r * scale
    lead = exceptions.lead_time_months
    fails: list[str] = []
    if not projected > constants.strategic_min_projected_roi:
        fails.append(
            f"projected ROI {projected:.2f}x is not above {constants.strategic_min_projected_roi:g}x"
        )
    if not scale > constants.strategic_min_scale_factor:
        fails.append(f"scale factor {scale:.2f} is not above {constants.strategic_min_scale_factor:g}")
    if lead is None or not lead > constants.strategic_min_lead_time_months:
        shown = "undeclared" if lead is None else f"{lead:g} months"
        fails.append(f"lead time {shown} is not above {constants.strategic_min_lead_time_months:g} months")
    if fails:
        return False, "no strategic headroom: " + ", ".join(fails)
    return True, (
        f"strategic headroom: ROI {r:.2f}x is below theta {th:.2f} but reaches {projected:.2f}x at "
        f"{_fmt_count(organisation.projected_dau)} DAU (scale factor {scale:.2f} > "
        f"{constants.strategic_min_scale_factor:g}) with a {lead:g}-month lead time "
        f"(> {constants.strategic_min_lead_time_months:g})"
    )


def _enabling(
    r: float | None,
    spec: EconomicsSpec,
    th: float,
    exceptions: ExceptionSpec,
    roi_of: Mapping[str, float | None],
) -> tuple[bool, str]:
    if not exceptions.enables:
        return False, ""
    own = "no direct revenue" if r is None else f"ROI {r:.2f}x"
    if r is None and spec.model != "none":
        return False, "enabling infrastructure needs the constraint's own ROI"
    if r is not None and not r < 1.0:
        return False, f"not enabling infrastructure: {own} is not below 1"
    total, unknown = combined_roi(exceptions.enables, roi_of)
    names = ", ".join(exceptions.enables)
    missing = f" ({', '.join(unknown)} unknown, counted as 0)" if unknown else ""
    if total >= th:
        return True, (
            f"enabling infrastructure: {own}, but it unlocks {names} with combined ROI "
            f"{total:.2f}x >= theta {th:.2f}{missing}"
        )
    return False, f"not enabling infrastructure: {names} combine to {total:.2f}x < theta {th:.2f}{missing}"


def assess(
    name: str,
    spec: EconomicsSpec,
    exceptions: ExceptionSpec,
    constants: EconomicConstants,
    organisation: Organisation,
    x: float,
    target: float,
    inputs: Mapping[str, float],
    histograms: Mapping[str, Histogram],
    gamma: float | None,
    current_dau: float | None,
    roi_of: Mapping[str, float | None],
    *,
    causal_settings: CausalSettings | None = None,
) -> EconomicsResult:
    """Revenue at risk, ROI, theta and the exceptions for constraint `name`.

    `gamma` is the causal sensitivity Gamma* (None when unknown), `current_dau` the
    platform DAU now, `roi_of` the ROIs of the other constraints (for enabling
    infrastructure), `causal_settings` the pack's `CausalSettings` (its `fragile_gamma`
    decides whether the evidence is fragile; defaults to `CausalSettings()`).
    Details carry the revenue figures plus ``roi``, ``theta`` and, when applicable,
    ``projected_roi``, ``scale_factor``, ``combined_enabled_roi``, ``runway_months``,
    ``one_way_door_months``.
    """
    revenue, rev_details = revenue_at_risk(spec, x, target, inputs, histograms, constants.arpu_day)
    r = roi(revenue, spec)
    fragile_gamma = (causal_settings or CausalSettings()).fragile_gamma
    th = theta(constants, gamma, fragile_gamma)
    details: list[tuple[str, float]] = list(rev_details)
    if r is not None:
        details.append(("roi", r))
    details.append(("theta", th))
    if _finite(current_dau) and current_dau is not None and current_dau > 0:
        scale = organisation.projected_dau / current_dau
        details.append(("scale_factor", scale))
        if r is not None:
            details.append(("projected_roi", r * scale))
    if exceptions.enables:
        details.append(("combined_enabled_roi", combined_roi(exceptions.enables, roi_of)[0]))
    money = "" if revenue is None else f" (revenue at risk {_fmt_money(revenue)}/yr)"
    exception, sentences = _exception(
        name, spec, exceptions, constants, organisation, r, th, current_dau, roi_of, money
    )
    blocked = False
    months = exceptions.one_way_door_months
    if months is not None:
        details += [("runway_months", organisation.runway_months), ("one_way_door_months", months)]
        needed = 2.0 * months
        if organisation.runway_months < needed:
            blocked = True
            sentences.append(
                f"one-way door: the {months:g}-month migration needs a runway of at least {needed:g} "
                f"months and the runway is {organisation.runway_months:g}, so do not start it"
            )
    reason = "; ".join(sentences)
    reason = reason[0].upper() + reason[1:] + "."
    return EconomicsResult(
        revenue_at_risk=revenue,
        roi=r,
        theta=th,
        cost_per_year=spec.cost_per_year,
        exception=exception,
        exception_reason=reason,
        one_way_door_blocked=blocked,
        details=tuple(details),
    )


def _exception(
    name: str,
    spec: EconomicsSpec,
    exceptions: ExceptionSpec,
    constants: EconomicConstants,
    organisation: Organisation,
    r: float | None,
    th: float,
    current_dau: float | None,
    roi_of: Mapping[str, float | None],
    money: str,
) -> tuple[str | None, list[str]]:
    """(the exception that funds `name` below theta, or None; the sentences explaining it)."""
    if r is not None and r >= th:
        return None, [f"ROI of {name} is {r:.2f}x, at or above theta {th:.2f}{money}"]
    if exceptions.existence:
        shown = "unknown" if r is None else f"{r:.2f}x"
        return "existence", [
            f"existence constraint: below its target the platform cannot exist, so {name} is funded "
            f"regardless of ROI ({shown} against theta {th:.2f}){money}"
        ]
    ok_s, why_s = _strategic(r, th, exceptions, constants, organisation, current_dau)
    ok_e, why_e = (False, "") if ok_s else _enabling(r, spec, th, exceptions, roi_of)
    if ok_s:
        return "strategic_headroom", [why_s + money]
    if ok_e:
        return "enabling_infrastructure", [why_e + money]
    if r is not None:
        return None, [
            f"no exception applies to {name}: ROI {r:.2f}x is below theta {th:.2f}{money}",
            *(w for w in (why_s, why_e) if w),
        ]
    if spec.model == "none":
        return None, [f"{name} has no revenue model and no exception applies"]
    return None, [f"ROI of {name} cannot be computed: an economics input is missing"]


def composite_pairs(rois: Mapping[str, float | None], band: float = 0.2) -> tuple[tuple[str, str], ...]:
    """Pairs of constraints whose ROIs are within `band` of each other.

    Two positive finite ROIs a <= b form a pair when ``b <= a * (1 + band)`` (with a
    1e-12 relative tolerance so that 3.0 vs 3.6 counts at band 0.2). Unknown, NaN and
    non-positive ROIs never pair. Pairs follow the mapping's order.
    """
    if not (math.isfinite(band) and band >= 0):
        raise ValueError(f"band must be a non-negative finite number, got {band!r}")
    items = [(n, float(v)) for n, v in rois.items() if v is not None and math.isfinite(v) and v > 0]
    out: list[tuple[str, str]] = []
    for i, (a_name, a) in enumerate(items):
        for b_name, b in items[i + 1 :]:
            lo, hi = min(a, b), max(a, b)
            if hi <= lo * (1.0 + band) * (1.0 + 1e-12):
                out.append((a_name, b_name))
    return tuple(out)


__all__ = [
    "DAYS_PER_YEAR",
    "annual_revenue_at_risk",
    "assess",
    "combined_roi",
    "composite_pairs",
    "revenue_at_risk",
    "roi",
    "theta",
]
