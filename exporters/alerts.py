"""The alert catalogue: every alert csf emits, its severity, summary and runbook.

Shared by the rule generator (`rules.generate`: the alerts Prometheus evaluates) and the
Alertmanager pusher (`exporters.alertmanager`: the same alerts without Prometheus), so
the two never drift apart. Plain data and small helpers; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detector.spec.pack import Constraint, Pack

DEFAULT_RUNBOOK_BASE_URL = "https://runbooks.example.com/csf/"
"""Neutral placeholder: point `--runbook-base-url` at wherever you publish `deploy/runbooks/`."""
BINDING_CHANGE_WINDOW = 3600.0
"""CSFBindingConstraintChanged stays active this long after the binding constraint moved."""
SEVERITY_PAGE = "page"
SEVERITY_TICKET = "ticket"
SEVERITY_INFO = "info"


@dataclass(frozen=True)
class AlertKind:
    """One alert of the catalogue. `summary` is a format string over {pipeline} and {constraint}."""

    name: str
    severity: str
    summary: str

    @property
    def runbook(self) -> str:
        """File name of the alert's runbook in deploy/runbooks/."""
        return f"{self.name}.md"

    def summary_text(self, pipeline: str, constraint: str) -> str:
        return self.summary.format(pipeline=pipeline, constraint=constraint)


BINDING = AlertKind(
    "CSFBindingConstraint",
    SEVERITY_PAGE,
    "{constraint} is the binding constraint of {pipeline}: invest in relieving it",
)
BINDING_UNPRICED = AlertKind(
    BINDING.name,
    SEVERITY_PAGE,
    "{constraint} is the binding constraint of {pipeline}: proven, payoff unknown",
)
"""The binding page of a constraint without a revenue model (decision ``investigate``)."""
BINDING_CHANGED = AlertKind(
    "CSFBindingConstraintChanged",
    SEVERITY_INFO,
    "the binding constraint of {pipeline} moved to {constraint}",
)
PROXY = AlertKind(
    "CSFConstraintProxy",
    SEVERITY_TICKET,
    "{constraint} on {pipeline} is beyond target but failed causal validation (proxy): investigate, do not invest",
)
OBSERVABILITY_GAP = AlertKind(
    "CSFObservabilityGap",
    SEVERITY_TICKET,
    "inputs of {constraint} on {pipeline} are missing or stale",
)
OBSERVABILITY_GAP_PAGE = AlertKind(OBSERVABILITY_GAP.name, SEVERITY_PAGE, OBSERVABILITY_GAP.summary)
"""The same alert when the gap hides the head of the sequence (published binding = observability)."""
DETECTOR_DOWN = AlertKind(
    "CSFDetectorDown",
    SEVERITY_PAGE,
    "csf is down for {pipeline}: nobody is watching the binding constraint",
)
EVALUATION_STALE = AlertKind(
    "CSFEvaluationStale",
    SEVERITY_PAGE,
    "csf has stopped evaluating {pipeline}: the published binding constraint is stale",
)
SOURCE_DOWN = AlertKind(
    "CSFSourceDown",
    SEVERITY_PAGE,
    "csf cannot read its data source for {pipeline}: every constraint is unobserved",
)
META_OVERHEAD = AlertKind(
    "CSFMetaOverhead",
    SEVERITY_TICKET,
    "analysis overhead of {pipeline} is above its limit: the framework costs more than it returns",
)

ALERT_KINDS: tuple[AlertKind, ...] = (
    BINDING,
    BINDING_CHANGED,
    PROXY,
    OBSERVABILITY_GAP,
    DETECTOR_DOWN,
    EVALUATION_STALE,
    SOURCE_DOWN,
    META_OVERHEAD,
)
"""Every alert name the generator and the Alertmanager pusher emit (one runbook each)."""

def _file_part(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", name)


def normalise_base_url(base: str | None) -> str:
    """'' or None -> the default; otherwise the base with exactly one trailing slash."""
    if not base:
        return DEFAULT_RUNBOOK_BASE_URL
    return base.rstrip("/") + "/"


def alert_runbook_url(base: str | None, kind: AlertKind) -> str:
    return normalise_base_url(base) + kind.runbook


def constraint_runbook_file(name: str) -> str:
    """Runbook file name of a constraint (also used for 'observability')."""
    return f"constraint-{_file_part(name)}.md"


def constraint_runbook_url(base: str | None, constraint: Constraint | str) -> str:
    """The pack's own `runbook` (absolute URL, or a path joined to the base) or constraint-<name>.md."""
    if isinstance(constraint, Constraint) and constraint.runbook:
        ref = constraint.runbook
        if "://" in ref:
            return ref
        return normalise_base_url(base) + ref.lstrip("/")
    name = constraint.name if isinstance(constraint, Constraint) else constraint
    return normalise_base_url(base) + constraint_runbook_file(name)


def meta_constraint_name(pack: Pack | None) -> str:
    """The pack's meta constraint (the label CSFMetaOverhead carries), 'meta' when it declares none."""
    if pack is not None:
        for c in pack.constraints:
            if c.kind == "meta":
                return c.name
    return "meta"


__all__ = [
    "ALERT_KINDS",
    "BINDING",
    "BINDING_CHANGED",
    "BINDING_CHANGE_WINDOW",
    "DEFAULT_RUNBOOK_BASE_URL",
    "DETECTOR_DOWN",
    "EVALUATION_STALE",
    "META_OVERHEAD",
    "OBSERVABILITY_GAP",
    "OBSERVABILITY_GAP_PAGE",
    "PROXY",
    "SEVERITY_INFO",
    "SEVERITY_PAGE",
    "SEVERITY_TICKET",
    "SOURCE_DOWN",
    "AlertKind",
    "alert_runbook_url",
    "constraint_runbook_file",
    "constraint_runbook_url",
    "meta_constraint_name",
    "normalise_base_url",
]
