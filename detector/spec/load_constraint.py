"""Reading the ``constraints:`` list of a pack: each constraint, its guards, economics and
exceptions, then the cross-checks (unique names, known references, no cycles) and the order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from detector.spec.load_signal import LABEL_NAME, METRIC_NAME, read_signal, signal_field
from detector.spec.pack import (
    LAYERS,
    OBSERVABILITY,
    ApplicabilityGuard,
    Constraint,
    EconomicsSpec,
    ExceptionSpec,
    Guard,
    ProtocolFloorGuard,
)
from detector.spec.signals import Signal
from detector.spec.yamlnodes import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    STR_TAG,
    UNIT,
    Collector,
    Fields,
    Parser,
    describe,
    did_you_mean,
    enum_field,
    join_path,
    number_field,
    number_value,
    read_bool,
    read_duration,
    read_enum,
    read_list,
    read_mapping,
    read_names,
    read_number,
    read_section,
    read_string,
    string_field,
)
from detector.timefmt import parse_duration

CONSTRAINT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def read_target(ctx: Collector, node: Node, path: str) -> float | None:
    """A target: a number in the signal's unit, or a duration ('300ms', '30s') for a time signal."""
    if number_value(node) is None and isinstance(node, ScalarNode) and node.tag == STR_TAG:
        try:
            parse_duration(node.value)
        except ValueError:
            ctx.error(
                node,
                path,
                f"expected a number, or a duration such as '300ms' or '30s' for a time signal, "
                f"got a string ({node.value!r})",
            )
            return None
        return read_duration(ctx, node, path, POSITIVE)
    return number_field(POSITIVE)(ctx, node, path)



# Keys that only a kind: signal constraint may have.
_SIGNAL_KEYS: tuple[str, ...] = (
    "signal",
    "outcome",
    "outcome_direction",
    "units",
    "stratum",
    "segment",
    "inputs",
    "guards",
    "economics",
)
CONSTRAINT_KEYS: tuple[str, ...] = (
    "name",
    "layer",
    "kind",
    "description",
    "predecessors",
    "signal",
    "outcome",
    "target",
    "direction",
    "outcome_direction",
    "units",
    "stratum",
    "segment",
    "inputs",
    "guards",
    "economics",
    "exceptions",
    "runbook",
)
_DIRECTIONS: tuple[str, ...] = ("lower_is_better", "higher_is_better")
_CONSTRAINT_KINDS: tuple[str, ...] = ("signal", "meta")
_GUARD_MODES: tuple[str, ...] = ("needs_headroom", "needs_exhausted")
_MODELS: tuple[str, ...] = ("weibull", "creator_weibull", "loss_aversion", "none")

_ECON_KEYS: tuple[str, ...] = (
    "model",
    "affected",
    "lambda",
    "k",
    "baseline",
    "learner_days_per_creator",
    "alpha",
    "churn_per_incident",
    "streak_histogram",
    "effectiveness",
    "reach",
    "cost_per_year",
    "support_savings_per_year",
)
_ROI_KEYS = ("effectiveness", "reach", "cost_per_year", "support_savings_per_year")
_MODEL_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # model: (required, optional)
    "weibull": (("affected", "lambda", "k", "cost_per_year"), ("baseline", *_ROI_KEYS)),
    "creator_weibull": (
        ("affected", "lambda", "k", "learner_days_per_creator", "cost_per_year"),
        ("baseline", *_ROI_KEYS),
    ),
    "loss_aversion": (
        ("affected", "churn_per_incident", "streak_histogram", "cost_per_year"),
        ("alpha", *_ROI_KEYS),
    ),
    "none": ((), ()),
}
# YAML key -> EconomicsSpec field, and how to parse it
_ECON_FIELDS: dict[str, tuple[str, Parser]] = {
    "lambda": ("weibull_lambda", number_field(POSITIVE)),
    "k": ("weibull_k", number_field(POSITIVE)),
    "baseline": ("baseline", number_field()),
    "learner_days_per_creator": ("learner_days_per_creator", number_field(POSITIVE)),
    "alpha": ("loss_aversion_alpha", number_field(NON_NEGATIVE)),
    "churn_per_incident": ("churn_per_incident", number_field(UNIT)),
    "effectiveness": ("effectiveness", number_field(UNIT)),
    "reach": ("reach", number_field(UNIT)),
    "cost_per_year": ("cost_per_year", number_field(POSITIVE)),
    "support_savings_per_year": ("support_savings_per_year", number_field(NON_NEGATIVE)),
}
_EXCEPTION_FIELDS: dict[str, Parser] = {
    "existence": read_bool,
    "one_way_door_months": number_field(POSITIVE, nullable=True),
    "lead_time_months": number_field(POSITIVE, nullable=True),
}


def _input_ref(ctx: Collector, node: Node, path: str, inputs: dict[str, Node]) -> str | None:
    name = read_string(ctx, node, path, LABEL_NAME, "input name")
    if name is None:
        return None
    if name not in inputs:
        known = ", ".join(inputs) or "none declared"
        ctx.error(node, path, f"refers to unknown input {name!r}; inputs: {known}")
        return None
    return name


def _economics(ctx: Collector, node: Node, path: str, inputs: dict[str, Node]) -> EconomicsSpec | None:
    start = ctx.count
    m = read_mapping(ctx, node, path, _ECON_KEYS, ("model",))
    if m is None or "model" not in m:
        return None
    model = read_enum(ctx, m.values["model"], m.sub("model"), _MODELS, "economic model")
    if model is None:
        return None
    required, optional = _MODEL_KEYS[model]
    for key in m.values:
        if key != "model" and key not in required and key not in optional:
            ctx.error(m.keys[key], m.sub(key), f"{key!r} does not apply to economic model {model!r}")
    for key in required:
        if key not in m:
            ctx.error(node, m.sub(key), f"missing required field {key!r} for economic model {model!r}")
    kwargs: dict[str, Any] = {"model": model}
    if "affected" in m and "affected" in required:
        kwargs["affected"] = _input_ref(ctx, m.values["affected"], m.sub("affected"), inputs)
    if "streak_histogram" in m and "streak_histogram" in required:
        # The base name of a classic histogram; the evaluator reads its `_bucket` rates by `le`.
        kwargs["streak_histogram"] = read_string(
            ctx, m.values["streak_histogram"], m.sub("streak_histogram"), METRIC_NAME, "metric name"
        )
    for key, (attr, parser) in _ECON_FIELDS.items():
        if key in m and (key in required or key in optional):
            kwargs[attr] = parser(ctx, m.values[key], m.sub(key))
    if ctx.count > start:
        return None
    return EconomicsSpec(**kwargs)


def _exceptions(ctx: Collector, node: Node, path: str) -> tuple[ExceptionSpec | None, list[tuple[str, Node]]]:
    start = ctx.count
    fields: dict[str, Parser] = dict(_EXCEPTION_FIELDS)
    fields["enables"] = lambda c, n, p: read_names(c, n, p, CONSTRAINT_NAME, "constraint name")
    parsed = read_section(ctx, node, path, fields)
    if parsed is None:
        return None, []
    kwargs, _ = parsed
    enables: list[tuple[str, Node]] = kwargs.pop("enables", [])
    if ctx.count > start:
        return None, enables
    return ExceptionSpec(enables=tuple(n for n, _ in enables), **kwargs), enables


def _guard(ctx: Collector, node: Node, path: str, inputs: dict[str, Node]) -> Guard | None:
    start = ctx.count
    m = read_mapping(ctx, node, path, ("protocol_floor", "applicability"))
    if m is None:
        return None
    types = list(m.values)
    if len(types) != 1:
        if not types and not m.unknown:
            ctx.error(node, path, "a guard has exactly one type: protocol_floor or applicability")
        elif len(types) > 1:
            ctx.error(m.keys[types[1]], m.sub(types[1]), "a guard has exactly one type; write two guards")
        return None
    gtype = types[0]
    body = m.values[gtype]
    gpath = m.sub(gtype)
    if gtype == "applicability":
        return _applicability(ctx, body, gpath, inputs, start)

    keys = ("share", "label", "floors", "tail_share", "headroom", "mode")
    g = read_mapping(ctx, body, gpath, keys, ("share", "label", "floors", "mode"))
    if g is None:
        return None
    share = read_signal(ctx, g.values["share"], g.sub("share")) if "share" in g else None
    label = (
        read_string(ctx, g.values["label"], g.sub("label"), LABEL_NAME, "label name") if "label" in g else None
    )
    if share is not None and label is not None and label not in share.by:
        ctx.error(
            g.values["label"],
            g.sub("label"),
            f"refers to missing label {label!r}: the share signal groups by ({', '.join(share.by)})",
        )
    floors = _floors(ctx, g, label)
    tail_share = headroom = None
    if "tail_share" in g:
        tail_share = read_number(ctx, g.values["tail_share"], g.sub("tail_share"), FRACTION)
    if "headroom" in g:
        headroom = read_number(ctx, g.values["headroom"], g.sub("headroom"), NON_NEGATIVE)
    mode = (
        read_enum(ctx, g.values["mode"], g.sub("mode"), _GUARD_MODES, "guard mode") if "mode" in g else None
    )
    if ctx.count > start or share is None or label is None or mode is None:
        return None
    guard = ProtocolFloorGuard(share=share, label=label, floors=tuple(floors), mode=mode)  # type: ignore[arg-type]
    if tail_share is not None:
        guard = replace(guard, tail_share=float(tail_share))
    if headroom is not None:
        guard = replace(guard, headroom=float(headroom))
    return guard


def _applicability(
    ctx: Collector, body: Node, gpath: str, inputs: dict[str, Node], start: int
) -> ApplicabilityGuard | None:
    """``applicability: {numerator, denominator, min_ratio}``; numerator and denominator name inputs."""
    app_keys = ("numerator", "denominator", "min_ratio")
    g = read_mapping(ctx, body, gpath, app_keys, app_keys)
    if g is None:
        return None
    num = _input_ref(ctx, g.values["numerator"], g.sub("numerator"), inputs) if "numerator" in g else None
    den = (
        _input_ref(ctx, g.values["denominator"], g.sub("denominator"), inputs)
        if "denominator" in g
        else None
    )
    ratio = (
        read_number(ctx, g.values["min_ratio"], g.sub("min_ratio"), NON_NEGATIVE)
        if "min_ratio" in g
        else None
    )
    if ctx.count > start or num is None or den is None or ratio is None:
        return None
    return ApplicabilityGuard(numerator=num, denominator=den, min_ratio=float(ratio))


def _floors(ctx: Collector, g: Fields, label: str | None) -> list[tuple[str, float]]:
    """A protocol floor's ``floors: {label value: seconds}``."""
    floors: list[tuple[str, float]] = []
    if "floors" not in g:
        return floors
    fnode = g.values["floors"]
    if not isinstance(fnode, MappingNode) or not fnode.value:
        ctx.error(fnode, g.sub("floors"), f"expected a non-empty mapping of {label or 'label'} value: seconds")
        return floors
    seen: set[str] = set()
    for knode, vnode in fnode.value:
        key = read_string(ctx, knode, g.sub("floors"))
        if key is None:
            continue
        if key in seen:
            ctx.error(knode, join_path(g.sub("floors"), key), f"duplicate key {key!r}")
            continue
        seen.add(key)
        v = read_number(ctx, vnode, join_path(g.sub("floors"), key), NON_NEGATIVE)
        if v is not None:
            floors.append((key, float(v)))
    return floors


@dataclass
class _Entry:
    """One constraint as parsed, with the nodes the cross-checks point at."""

    index: int
    path: str
    node: Node
    name: str | None = None
    name_node: Node | None = None
    preds: list[tuple[str, Node]] = field(default_factory=list)
    enables: list[tuple[str, Node]] = field(default_factory=list)
    constraint: Constraint | None = None


def _by_only(node: Node | None) -> Signal | None:
    """A stand-in signal holding only the `by` labels of a signal node that did not parse
    (None when its `by` is not a plain list of strings)."""
    if not isinstance(node, MappingNode):
        return None
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == "by" and isinstance(vnode, SequenceNode):
            labels = [v.value for v in vnode.value if isinstance(v, ScalarNode) and v.tag == STR_TAG]
            if len(labels) == len(vnode.value):
                return Signal(kind="gauge", metric="unparsed", by=tuple(labels))
    return None


def _check_labels(
    ctx: Collector,
    m: Fields,
    units: list[tuple[str, Node]],
    signal: Signal,
    outcome: Signal,
    labels: dict[str, str | None],
) -> None:
    def missing(label: str) -> str | None:
        for what, sig in (("signal", signal), ("outcome", outcome)):
            if label not in sig.by:
                return (
                    f"refers to missing label {label!r}{did_you_mean(label, sig.by)}: "
                    f"the {what} groups by ({', '.join(sig.by)})"
                )
        return None

    for i, (label, node) in enumerate(units):
        msg = missing(label)
        if msg:
            ctx.error(node, f"{m.sub('units')}[{i}]", msg)
    unit_names = [u for u, _ in units]
    for key in ("stratum", "segment"):
        value, node = labels.get(key), m.get(key)
        if value is None or node is None:
            continue
        msg = missing(value)
        if msg is None and value not in unit_names:
            msg = f"{key} {value!r} is not one of the units{did_you_mean(value, unit_names)} ({', '.join(unit_names)})"
        if msg:
            ctx.error(node, m.sub(key), msg)


def _entry_path(node: Node, index: int) -> str:
    """``constraints.NAME`` when the name reads well, else ``constraints[INDEX]``."""
    if isinstance(node, MappingNode):
        for knode, vnode in node.value:
            if (
                isinstance(knode, ScalarNode)
                and knode.value == "name"
                and isinstance(vnode, ScalarNode)
                and vnode.tag == STR_TAG
                and CONSTRAINT_NAME.fullmatch(vnode.value)
            ):
                return f"constraints.{vnode.value}"
    return f"constraints[{index}]"


def _field(ctx: Collector, m: Fields, key: str, parser: Parser) -> Any:
    return parser(ctx, m.values[key], m.sub(key)) if key in m else None


def _identity(ctx: Collector, m: Fields, entry: _Entry) -> tuple[Any, Any, Any]:
    """(name, kind, layer) of a constraint, each None when invalid; fills the entry's name and
    predecessors for the cross-checks."""
    name = _field(ctx, m, "name", string_field(CONSTRAINT_NAME, "constraint name (use lower_snake_case)"))
    if name == OBSERVABILITY:
        ctx.error(
            m.values["name"], m.sub("name"), f"{OBSERVABILITY!r} is implicit and precedes every constraint"
        )
        name = None
    if name is not None:
        entry.name, entry.name_node = name, m.values["name"]
    kind: Any = _field(ctx, m, "kind", enum_field(_CONSTRAINT_KINDS, "constraint kind")) if "kind" in m else "signal"
    layer = _field(ctx, m, "layer", enum_field(LAYERS, "layer"))
    if layer is not None and kind is not None and (layer == "meta") != (kind == "meta"):
        ctx.error(
            m.values["layer"],
            m.sub("layer"),
            "layer 'meta' is for kind: meta constraints only"
            if layer == "meta"
            else "a kind: meta constraint must have layer: meta",
        )
    if "predecessors" in m:
        preds = read_names(ctx, m.values["predecessors"], m.sub("predecessors"), CONSTRAINT_NAME, "constraint name")
        entry.preds = preds or []
    return name, kind, layer


def _constraint(ctx: Collector, node: Node, index: int, meta_target: float) -> _Entry:
    path = _entry_path(node, index)
    entry = _Entry(index=index, path=path, node=node)
    start = ctx.count
    m = read_mapping(ctx, node, path, CONSTRAINT_KEYS, ("name", "layer"))
    if m is None:
        return entry
    name, kind, layer = _identity(ctx, m, entry)
    kwargs: dict[str, Any] = {}
    for key, parser in (
        ("description", string_field()),
        ("runbook", string_field(nullable=True)),
        ("direction", enum_field(_DIRECTIONS, "direction")),
    ):
        value = _field(ctx, m, key, parser)
        if value is not None:
            kwargs[key] = value
    if "target" in m:
        kwargs["target"] = _field(ctx, m, "target", read_target)
    elif kind == "meta":
        kwargs["target"] = meta_target
    if "exceptions" in m:
        kwargs["exceptions"], entry.enables = _exceptions(ctx, m.values["exceptions"], m.sub("exceptions"))
    if kind == "meta":
        for key in _SIGNAL_KEYS:
            if key in m:
                ctx.error(m.keys[key], m.sub(key), f"{key!r} does not apply to a meta constraint")
    elif kind == "signal":
        _signal_fields(ctx, m, node, kwargs)
    if ctx.count == start and name is not None and layer is not None and kind is not None:
        entry.constraint = Constraint(
            name=name,
            layer=layer,
            kind=kind,
            predecessors=tuple(p for p, _ in entry.preds),
            **{k: v for k, v in kwargs.items() if v is not None},
        )
    return entry


def _signal_fields(ctx: Collector, m: Fields, node: Node, kwargs: dict[str, Any]) -> None:
    """The fields of a ``kind: signal`` constraint, into `kwargs`."""
    for key in ("signal", "outcome", "target", "units"):
        if key not in m:
            ctx.error(node, m.sub(key), f"missing required field {key!r}")
    signal = _field(ctx, m, "signal", signal_field)
    outcome = _field(ctx, m, "outcome", signal_field)
    kwargs["signal"], kwargs["outcome"] = signal, outcome
    kwargs["outcome_direction"] = _field(ctx, m, "outcome_direction", enum_field(_DIRECTIONS, "direction"))
    units = None
    if "units" in m:
        units = read_names(ctx, m.values["units"], m.sub("units"), LABEL_NAME, "label name")
        if units is not None:
            kwargs["units"] = tuple(u for u, _ in units)
    kwargs["stratum"] = _field(ctx, m, "stratum", string_field(LABEL_NAME, "label name"))
    kwargs["segment"] = _field(ctx, m, "segment", string_field(LABEL_NAME, "label name"))
    # a signal that failed to parse still has its `by`: check the labels against it in
    # the same pass, so one `csf pack validate` reports every problem
    sig_for_labels = signal if signal is not None else _by_only(m.get("signal"))
    out_for_labels = outcome if outcome is not None else _by_only(m.get("outcome"))
    if units is not None and sig_for_labels is not None and out_for_labels is not None:
        _check_labels(
            ctx, m, units, sig_for_labels, out_for_labels, {k: kwargs[k] for k in ("stratum", "segment")}
        )
    input_nodes, inputs = _inputs(ctx, m)
    kwargs["inputs"] = tuple(inputs)
    if "guards" in m:
        items = read_list(ctx, m.values["guards"], m.sub("guards"))
        guards = [_guard(ctx, g, f"{m.sub('guards')}[{i}]", input_nodes) for i, g in enumerate(items or [])]
        kwargs["guards"] = tuple(g for g in guards if g is not None)
    if "economics" in m:
        kwargs["economics"] = _economics(ctx, m.values["economics"], m.sub("economics"), input_nodes)


def _inputs(ctx: Collector, m: Fields) -> tuple[dict[str, Node], list[tuple[str, Signal]]]:
    """The ``inputs:`` mapping: (name -> key node, for references) and the parsed signals."""
    input_nodes: dict[str, Node] = {}
    inputs: list[tuple[str, Signal]] = []
    if "inputs" not in m:
        return input_nodes, inputs
    inode = m.values["inputs"]
    if not isinstance(inode, MappingNode):
        ctx.error(inode, m.sub("inputs"), f"expected a mapping of name: signal, got {describe(inode)}")
        return input_nodes, inputs
    for knode, vnode in inode.value:
        iname = read_string(ctx, knode, m.sub("inputs"), LABEL_NAME, "input name")
        if iname is None:
            continue
        ipath = join_path(m.sub("inputs"), iname)
        if iname in input_nodes:
            first = input_nodes[iname].start_mark.line + 1
            ctx.error(knode, ipath, f"duplicate key {iname!r} (first at line {first})")
            continue
        input_nodes[iname] = knode
        sig = read_signal(ctx, vnode, ipath)
        if sig is not None:
            inputs.append((iname, sig))
    return input_nodes, inputs


def _check_references(ctx: Collector, entries: list[_Entry]) -> dict[str, _Entry]:
    """Duplicate names and references to unknown constraints; returns name -> entry."""
    by_name: dict[str, _Entry] = {}
    for e in entries:
        if e.name is None or e.name_node is None:
            continue
        if e.name in by_name:
            first = by_name[e.name].name_node
            line = first.start_mark.line + 1 if first is not None else 0
            ctx.error(
                e.name_node,
                f"constraints[{e.index}].name",
                f"duplicate constraint name {e.name!r} (first at line {line})",
            )
            continue
        by_name[e.name] = e
    known = ", ".join(by_name)
    for e in entries:
        for field_name, refs in (("predecessors", e.preds), ("exceptions.enables", e.enables)):
            for i, (ref, node) in enumerate(refs):
                if ref in by_name:
                    continue
                path = f"{e.path}.{field_name}[{i}]"
                if ref == OBSERVABILITY:
                    ctx.error(
                        node, path, f"{OBSERVABILITY!r} precedes every constraint implicitly; do not list it"
                    )
                else:
                    ctx.error(node, path, f"unknown constraint {ref!r}{did_you_mean(ref, by_name)}; known: {known}")
    return by_name


def _topological(ctx: Collector, entries: list[_Entry], by_name: dict[str, _Entry]) -> list[str]:
    """Stable topological order (file order among independent constraints); reports cycles."""
    order = [e.name for e in entries if e.name is not None and by_name.get(e.name) is e]
    preds = {n: [p for p, _ in by_name[n].preds if p in by_name] for n in order}
    placed: list[str] = []
    done: set[str] = set()
    remaining = list(order)
    progress = True
    while remaining and progress:
        progress = False
        for n in remaining:
            if all(p in done for p in preds[n]):
                placed.append(n)
                done.add(n)
                remaining.remove(n)
                progress = True
                break
    # What is left contains at least one cycle. Report each strongly connected component
    # that is cyclic (two or more members, or a self-loop), once, as a path through its
    # first member in file order, written in precedence order ("a -> b" = a precedes b).
    left = set(remaining)
    succs = {n: [s for s in remaining if n in preds[s]] for n in remaining}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            for nxt in succs[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    reachable = {n: reach(n) for n in remaining}
    covered: set[str] = set()
    for first in remaining:
        if first in covered or first not in reachable[first]:
            continue
        component = {n for n in left if n in reachable[first] and first in reachable[n]}
        covered |= component
        # Shortest path first -> ... -> first inside the component (breadth first).
        parent: dict[str, str] = {}
        frontier = [first]
        closing: str | None = None
        while frontier and closing is None:
            nxt_frontier = []
            for n in frontier:
                for s2 in succs[n]:
                    if s2 == first:
                        closing = n
                        break
                    if s2 in component and s2 not in parent:
                        parent[s2] = n
                        nxt_frontier.append(s2)
                if closing is not None:
                    break
            frontier = nxt_frontier
        if closing is None:  # pragma: no cover - first is in its own reach set
            continue
        path = [closing]
        while path[-1] != first:
            path.append(parent[path[-1]])
        cycle = [*reversed(path), first]
        entry = by_name[first]
        node, j = next((nd, k) for k, (p, nd) in enumerate(entry.preds) if p == closing)
        ctx.error(node, f"{entry.path}.predecessors[{j}]", "dependency cycle: " + " -> ".join(cycle))
    return placed


def read_constraints(ctx: Collector, node: Node, meta_target: float) -> list[Constraint] | None:
    """The ``constraints:`` list in dependency order (file order among independent ones), or
    None when any constraint or cross-check recorded an issue."""
    entries: list[_Entry] = []
    items = read_list(ctx, node, "constraints")
    if items is not None and not items:
        ctx.error(node, "constraints", "a pack needs at least one constraint")
    for i, item in enumerate(items or []):
        entries.append(_constraint(ctx, item, i, meta_target))
    by_name = _check_references(ctx, entries)
    order = _topological(ctx, entries, by_name)
    if ctx.issues:
        return None
    constraints = []
    for n in order:
        c = by_name[n].constraint
        if c is None:  # pragma: no cover - every failure above records an issue
            return None
        constraints.append(c)
    return constraints
