"""Runbooks for a pack's constraints: which are missing, and skeletons to start from.

Every generated alert about a constraint links a runbook: the constraint's own
``runbook:`` field, or ``constraint-<name>.md`` under the runbook base URL. A new pack's
constraints have no such file yet, and an on-call engineer who follows the link finds
nothing. `missing_runbooks` lists them (``csf rules generate`` warns about each one) and
`runbook_skeleton` writes a start from what the pack already says: the signal and
outcome as PromQL, the target, the units, the economics; the human parts (what to do,
whom to call) are marked TODO.
"""

from __future__ import annotations

from pathlib import Path

from detector.source.promql import compile_promql
from detector.spec.pack import Constraint, Pack
from exporters.alerts import constraint_runbook_file

TODO = "TODO"


def runbook_file(c: Constraint) -> str | None:
    """The file a constraint's alerts link under the runbook base (None: an absolute URL)."""
    if c.runbook:
        return None if "://" in c.runbook else c.runbook.lstrip("/")
    return constraint_runbook_file(c.name)


def missing_runbooks(pack: Pack, runbook_dir: Path) -> list[Constraint]:
    """Constraints whose linked runbook file (``runbook:`` or ``constraint-<name>.md``) is not in `runbook_dir`."""
    out = []
    for c in pack.constraints:
        name = runbook_file(c)
        if name is not None and not (runbook_dir / name).is_file():
            out.append(c)
    return out


def _promql(c: Constraint, which: str) -> str:
    sig = c.signal if which == "signal" else c.outcome
    return compile_promql(sig) if sig is not None else "(none)"


def runbook_skeleton(pack: Pack, c: Constraint) -> str:
    """A runbook to complete for `c`, with every fact the pack states filled in."""
    if c.kind == "meta":
        facts = (
            f"**Signal:** csf's own analysis overhead (`csf_meta_overhead_ratio`); binding above "
            f"{pack.organisation.meta_overhead_limit:g}."
        )
    else:
        units = " x ".join(f"`{u}`" for u in c.units) or "the platform"
        strata = []
        if c.stratum:
            strata.append(f"**Stratum:** `{c.stratum}`")
        if c.segment:
            strata.append(f"**segment:** `{c.segment}`")
        facts = (
            f"**Signal** per {units}: `{_promql(c, 'signal')}`, recorded as `csf:{c.name}:signal`. "
            f"**Target:** {c.target:g}, {c.direction.replace('_', ' ')}.\n"
            f"**Outcome:** `{_promql(c, 'outcome')}` (`csf:{c.name}:outcome`). " + "; ".join(strata)
        )
    econ = c.economics
    economics = (
        "The pack gives no revenue model (`economics: none`): a proven binding constraint is "
        "`investigate` and pages; say here what it costs the platform."
        if econ.model == "none"
        else f"Model `{econ.model}`, cost ${econ.cost_per_year:,.0f}/year, effectiveness {econ.effectiveness:g}, "
        f"reach {econ.reach:g}. {TODO}: say in words what the revenue at risk means for this platform."
    )
    return f"""# Constraint: {c.name} (layer {c.layer})

<!-- Skeleton written by `csf rules generate --runbook-skeletons` from pack {pack.name} {pack.version}.
     Complete every {TODO}; csf never overwrites this file. -->

{facts}

{c.description or f"{TODO}: one sentence on what this constraint is."}

## Meaning

csf publishes `{c.name}` as the binding constraint when its signal is beyond target in a
sustained way, the link from signal to outcome passed at least {pack.causal.pass_required} of
the five causal tests, and no earlier constraint in the sequence binds. {TODO}: what that means
for this platform's users.

## Impact

{economics}

## Diagnosis

```sh
curl -s localhost:9466/api/v1/status | jq '.constraints[] | select(.name == "{c.name}")'
```
```promql
csf_constraint_pressure_ratio{{constraint="{c.name}"}}
topk(5, csf:{c.name}:signal)
```
{TODO}: the dashboards and queries your team reads first.

## Mitigation

{TODO}: what relieves this constraint, cheapest first.

## Escalation

{TODO}: the team that owns it, and how to reach them.
"""


def outside(runbook_dir: Path, c: Constraint) -> bool:
    """True when `c`'s runbook file (its ``runbook:`` field, e.g. ``../x.md``) resolves outside `runbook_dir`."""
    name = runbook_file(c)
    if name is None:
        return False
    base = runbook_dir.resolve()
    return not (base / name).resolve().is_relative_to(base)


def write_skeletons(pack: Pack, runbook_dir: Path) -> list[Path]:
    """Write a skeleton for every constraint of `missing_runbooks` whose file lies inside
    `runbook_dir` (a ``runbook:`` such as ``../x.md`` is skipped: see `outside`); never
    overwrites. Returns the files written."""
    runbook_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for c in missing_runbooks(pack, runbook_dir):
        if outside(runbook_dir, c):
            continue
        path = runbook_dir / (runbook_file(c) or constraint_runbook_file(c.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:  # 'x': fails rather than overwrite
            fh.write(runbook_skeleton(pack, c))
        written.append(path)
    return written


__all__ = ["missing_runbooks", "outside", "runbook_file", "runbook_skeleton", "write_skeletons"]
