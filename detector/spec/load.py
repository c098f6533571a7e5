"""Strict loader for constraint packs (``apiVersion: csf/v1``).

The YAML is read as nodes with positions (`detector.spec.yamlnodes`, shared with the
service configuration); the loader walks the node tree and builds the frozen model of
`detector.spec.pack` (signals: `detector.spec.load_signal`; constraints:
`detector.spec.load_constraint`). Nothing is guessed: unknown keys, wrong types, missing fields,
bad durations, unknown names, dangling references, duplicate keys and dependency
cycles are all errors. Every error is collected, so one run reports them all as
`PackIssue` rows (``FILE:LINE:COL: field.path: message``) inside one `PackError`.

Schema (every section but ``apiVersion``, ``kind``, ``metadata`` and
``constraints`` is optional and defaults to the values in `detector.spec.pack`)::

    apiVersion: csf/v1
    kind: ConstraintPack
    metadata: {name, version, description}
    windows: {step, lookback, status_window, sustained_window, sustained_fraction, staleness, min_coverage}
    hysteresis: {enter_after, exit_after, dead_band}
    causal: {alpha, lags, pass_required, segment_max_ratio, feedback_f_ratio, dose_bins,
             dose_min_rho, min_points, fragile_gamma, robust_gamma}
    economics: {arpu_day, roi_features, base_theta, fragile_theta, composite_band,
                strategic_min_projected_roi, strategic_min_scale_factor,
                strategic_min_lead_time_months, drift_threshold}
    organisation: {runway_months, projected_dau, dau: SIGNAL, dau_tiers, analysis_hours,
                   capacity_hours, meta_overhead_limit}
    constraints:
      - name, layer, kind (signal | meta), description, predecessors, signal: SIGNAL,
        outcome: SIGNAL, target, direction, outcome_direction, units, stratum, segment,
        inputs: {NAME: SIGNAL}, guards: [GUARD], economics: ECONOMICS, exceptions, runbook

A SIGNAL is a mapping with exactly one kind key (``gauge``, ``rate``, ``increase``,
``histogram_quantile``, ``histogram_mean`` whose value is the metric name, or
``ratio`` whose value is ``{numerator: SIGNAL, denominator: SIGNAL}``) plus the
options ``by``, ``range``, ``pin_range``, ``quantile``, ``matchers``, ``agg``, ``scale``
and ``promql`` where they apply. ``range`` is a floor: csf widens it to four sample
intervals of the data (see `detector.source.frame.effective_range`) unless ``pin_range: true``
asks for exactly that window. ``matchers`` is ``{label: value}`` for equality or
``{label: {regex: "5..", not: "200", not_regex: "2..|3..", equal: "x"}}`` (one operator
per label): PromQL's ``=~``/``!=``/``!~``, fully anchored, RE2 syntax (what RE2 lacks, such
as backreferences and lookaround, is refused). A ratio's ``by``, ``range`` and ``pin_range`` are inherited
by the children that do not set their own; its output labels are the numerator's, and
the denominator may group by fewer labels (``group_left`` join).

An ECONOMICS mapping has ``model`` (weibull | creator_weibull | loss_aversion | none)
and the keys that model uses: ``affected`` names an input; ``streak_histogram`` is
the base name of a histogram metric (its bucket rates by ``le`` feed M(d)).

A GUARD is ``{protocol_floor: {share, label, floors, tail_share, headroom, mode}}``
or ``{applicability: {numerator, denominator, min_ratio}}`` (numerator and
denominator name inputs).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from yaml.nodes import Node

from detector.errors import SpecError
from detector.spec.load_constraint import read_constraints
from detector.spec.load_signal import signal_field
from detector.spec.pack import (
    CausalSettings,
    EconomicConstants,
    Hysteresis,
    Organisation,
    Pack,
    Windows,
)
from detector.spec.yamlnodes import (
    AT_LEAST_ONE,
    AT_LEAST_TWO,
    FRACTION,
    HALF_OPEN_UNIT,
    NON_NEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    UNIT,
    Collector,
    Fields,
    Issue,
    Parser,
    compose,
    did_you_mean,
    duration_field,
    number_field,
    read_list,
    read_mapping,
    read_number,
    read_section,
    read_string,
    string_field,
)

API_VERSION = "csf/v1"
PACK_KIND = "ConstraintPack"

__all__ = [
    "API_VERSION",
    "PACK_KIND",
    "PackError",
    "PackIssue",
    "default_pack",
    "default_pack_path",
    "load_pack",
    "load_pack_text",
    "builtin_pack_text",
]


# --------------------------------------------------------------------------- errors


PackIssue = Issue
"""One problem in a pack file (`detector.spec.yamlnodes.Issue`)."""


class PackError(SpecError):
    """A pack failed validation; `issues` lists every problem found, in file order."""

    def __init__(self, issues: Sequence[PackIssue]) -> None:
        self.issues: list[PackIssue] = list(issues)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


_PACK_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


# --------------------------------------------------------------------------- pack sections

_WINDOW_FIELDS: dict[str, Parser] = {
    "step": duration_field(),
    "lookback": duration_field(),
    "status_window": duration_field(),
    "sustained_window": duration_field(),
    "sustained_fraction": number_field(FRACTION),
    "staleness": duration_field(),
    "min_coverage": number_field(UNIT),
}
_HYSTERESIS_FIELDS: dict[str, Parser] = {
    "enter_after": number_field(AT_LEAST_ONE, integer=True),
    "exit_after": number_field(AT_LEAST_ONE, integer=True),
    "dead_band": number_field(HALF_OPEN_UNIT),
}
_CAUSAL_FIELDS: dict[str, Parser] = {
    "alpha": number_field(OPEN_UNIT),
    "lags": number_field(AT_LEAST_ONE, integer=True),
    "pass_required": number_field((lambda v: 1 <= v <= 5, "must be between 1 and 5"), integer=True),
    "segment_max_ratio": number_field(AT_LEAST_ONE),
    "feedback_f_ratio": number_field(POSITIVE),
    "dose_bins": number_field(AT_LEAST_TWO, integer=True),
    "dose_min_rho": number_field(FRACTION),
    "min_points": number_field(AT_LEAST_ONE, integer=True),
    "fragile_gamma": number_field(AT_LEAST_ONE),
    "robust_gamma": number_field(AT_LEAST_ONE),
}
_ECONOMIC_FIELDS: dict[str, Parser] = {
    "arpu_day": number_field(POSITIVE),
    "roi_features": number_field(NON_NEGATIVE),
    "base_theta": number_field(POSITIVE),
    "fragile_theta": number_field(POSITIVE),
    "composite_band": number_field(HALF_OPEN_UNIT),
    "strategic_min_projected_roi": number_field(NON_NEGATIVE),
    "strategic_min_scale_factor": number_field(NON_NEGATIVE),
    "strategic_min_lead_time_months": number_field(NON_NEGATIVE),
    "drift_threshold": number_field(POSITIVE),
}


def _dau_tiers(ctx: Collector, node: Node, path: str) -> Any:
    items = read_list(ctx, node, path)
    if items is None:
        return None
    start = ctx.count
    tiers: list[float] = []
    for i, item in enumerate(items):
        v = read_number(ctx, item, f"{path}[{i}]", POSITIVE)
        if v is None:
            continue
        if tiers and v <= tiers[-1]:
            ctx.error(item, f"{path}[{i}]", f"tiers must increase, got {v:g} after {tiers[-1]:g}")
            continue
        tiers.append(float(v))
    return None if ctx.count > start else tuple(tiers)


_ORGANISATION_FIELDS: dict[str, Parser] = {
    "runway_months": number_field(POSITIVE),
    "projected_dau": number_field(POSITIVE),
    "dau": signal_field,
    "dau_tiers": _dau_tiers,
    "analysis_hours": number_field(NON_NEGATIVE, nullable=True),
    "capacity_hours": number_field(POSITIVE, nullable=True),
    "meta_overhead_limit": number_field(POSITIVE),
}


def _order_check(ctx: Collector, m: Fields, kwargs: dict[str, Any], low: str, high: str, defaults: Any) -> None:
    """Report `high` < `low` (at whichever of the two the file sets)."""
    lo = kwargs.get(low, getattr(defaults, low))
    hi = kwargs.get(high, getattr(defaults, high))
    if hi < lo:
        key = high if high in m else low
        ctx.error(m.values[key], m.sub(key), f"{high} ({hi:g}) must be >= {low} ({lo:g})")


def _windows(ctx: Collector, node: Node) -> Windows:
    parsed = read_section(ctx, node, "windows", _WINDOW_FIELDS)
    if parsed is None:
        return Windows()
    kwargs, m = parsed
    for low, high in (("step", "status_window"), ("status_window", "sustained_window"), ("step", "lookback")):
        if (low in m or high in m) and all(k in kwargs or k not in m for k in (low, high)):
            _order_check(ctx, m, kwargs, low, high, Windows)
    return Windows(**kwargs)


def _causal(ctx: Collector, node: Node) -> CausalSettings:
    parsed = read_section(ctx, node, "causal", _CAUSAL_FIELDS)
    if parsed is None:
        return CausalSettings()
    kwargs, m = parsed
    if ("fragile_gamma" in m or "robust_gamma" in m) and all(
        k in kwargs or k not in m for k in ("fragile_gamma", "robust_gamma")
    ):
        _order_check(ctx, m, kwargs, "fragile_gamma", "robust_gamma", CausalSettings)
    return CausalSettings(**kwargs)


def _simple_section(ctx: Collector, node: Node, path: str, fields: dict[str, Parser], cls: Any) -> Any:
    parsed = read_section(ctx, node, path, fields)
    return cls() if parsed is None else cls(**parsed[0])


def _pack(ctx: Collector, root: Node) -> Pack | None:
    top_keys = (
        "apiVersion",
        "kind",
        "metadata",
        "windows",
        "hysteresis",
        "causal",
        "economics",
        "organisation",
        "constraints",
    )
    m = read_mapping(ctx, root, "", top_keys, ("apiVersion", "kind", "metadata", "constraints"))
    if m is None:
        return None
    if "apiVersion" in m:
        api = read_string(ctx, m.values["apiVersion"], "apiVersion")
        if api is not None and api != API_VERSION:
            ctx.error(
                m.values["apiVersion"],
                "apiVersion",
                f"unsupported apiVersion {api!r}; expected {API_VERSION!r}",
            )
    if "kind" in m:
        kind = read_string(ctx, m.values["kind"], "kind")
        if kind is not None and kind != PACK_KIND:
            ctx.error(m.values["kind"], "kind", f"unsupported kind {kind!r}; expected {PACK_KIND!r}")
    meta: dict[str, Any] = {}
    if "metadata" in m:
        mm = read_mapping(
            ctx, m.values["metadata"], "metadata", ("name", "version", "description"), ("name", "version")
        )
        if mm is not None:
            for key, parser in (
                ("name", string_field(_PACK_NAME, "pack name (lower-case letters, digits, '.', '_', '-')")),
                ("version", string_field()),
                ("description", string_field()),
            ):
                if key in mm:
                    meta[key] = parser(ctx, mm.values[key], mm.sub(key))

    windows = _windows(ctx, m.values["windows"]) if "windows" in m else Windows()
    hysteresis = (
        _simple_section(ctx, m.values["hysteresis"], "hysteresis", _HYSTERESIS_FIELDS, Hysteresis)
        if "hysteresis" in m
        else Hysteresis()
    )
    causal = _causal(ctx, m.values["causal"]) if "causal" in m else CausalSettings()
    economics = (
        _simple_section(ctx, m.values["economics"], "economics", _ECONOMIC_FIELDS, EconomicConstants)
        if "economics" in m
        else EconomicConstants()
    )
    organisation = (
        _simple_section(ctx, m.values["organisation"], "organisation", _ORGANISATION_FIELDS, Organisation)
        if "organisation" in m
        else Organisation()
    )

    constraints = (
        read_constraints(ctx, m.values["constraints"], organisation.meta_overhead_limit)
        if "constraints" in m
        else None
    )
    if ctx.issues or constraints is None:
        return None
    return Pack(
        api_version=API_VERSION,
        name=meta["name"],
        version=meta["version"],
        description=meta.get("description", ""),
        windows=windows,
        hysteresis=hysteresis,
        causal=causal,
        economics=economics,
        organisation=organisation,
        constraints=tuple(constraints),
        source=ctx.source,
    )


# --------------------------------------------------------------------------- public API


def load_pack_text(text: str, source: str = "<string>") -> Pack:
    """Parse pack YAML; raises `PackError` listing every problem found."""
    ctx = Collector(source)
    root, syntax = compose(text, source)
    if syntax is not None:
        raise PackError([syntax])
    if root is None:
        raise PackError(
            [PackIssue(source, 1, 1, "", "empty pack: expected a mapping with apiVersion: csf/v1")]
        )
    pack = _pack(ctx, root)
    if pack is None or ctx.issues:
        issues = sorted(ctx.issues, key=lambda i: (i.line, i.column))
        raise PackError(issues)
    return pack


def load_pack(path: str | Path) -> Pack:
    """Load a pack file; `PackError` on invalid content, `OSError` when unreadable."""
    p = Path(path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError([PackIssue(str(path), 1, 1, "", f"not UTF-8 text: {exc.reason}")]) from None
    return load_pack_text(text, source=str(path))


def _default_resource() -> Any:
    return resources.files("detector.spec").joinpath("packs", "default.yaml")


def default_pack_path() -> Path:
    """Filesystem path of the built-in platform pack."""
    return Path(str(_default_resource()))


@functools.lru_cache(maxsize=1)
def default_pack() -> Pack:
    """The built-in microlearning video platform pack (parsed once, then shared; it is frozen)."""
    text = _default_resource().read_text(encoding="utf-8")
    return load_pack_text(text, source=str(default_pack_path()))


BUILTIN_PACKS: dict[str, str] = {"microlearning-video": "default.yaml", "web-shop": "web-shop.yaml"}
"""Built-in packs by name (the file under detector/spec/packs/); ``default`` is the video pack."""


def _builtin_resource(name: str) -> Any:
    key = "microlearning-video" if name == "default" else name
    if key not in BUILTIN_PACKS:
        close = did_you_mean(name, [*BUILTIN_PACKS, "default"])
        raise PackError([PackIssue("<built-in>", 0, 0, "pack", f"no built-in pack {name!r}{close}; built-in: {', '.join(BUILTIN_PACKS)}")])
    return resources.files("detector.spec").joinpath("packs", BUILTIN_PACKS[key])


@functools.lru_cache(maxsize=8)
def builtin_pack(name: str) -> Pack:
    """A built-in pack by name (``default`` or ``microlearning-video``, ``web-shop``)."""
    if name in ("default", "microlearning-video"):
        return default_pack()
    res = _builtin_resource(name)
    return load_pack_text(res.read_text(encoding="utf-8"), source=str(res))


def resolve_pack(ref: str | None) -> Pack:
    """`--pack` values: a built-in pack's name, or a file (None: the default pack)."""
    if ref is None:
        return default_pack()
    if ref in BUILTIN_PACKS or ref == "default":
        return builtin_pack(ref)
    return load_pack(ref)


def builtin_pack_text(name: str) -> str:
    """A built-in pack's YAML as shipped, comments included (`PackError` for an unknown name)."""
    return str(_builtin_resource(name).read_text(encoding="utf-8"))
