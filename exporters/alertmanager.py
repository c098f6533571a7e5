"""Push csf's alerts straight to Alertmanager (optional mode, for setups without Prometheus rules).

`desired_alerts(evaluation)` is a pure function: the alerts an evaluation implies,
with the same names, labels and annotation keys as the generated Prometheus rules
(`rules.generate`): CSFBindingConstraint, CSFConstraintProxy, CSFObservabilityGap,
CSFSourceDown, CSFMetaOverhead (CSFBindingConstraintChanged needs history and is
added by the pusher). CSFDetectorDown and CSFEvaluationStale cannot be pushed by the
process they watch; they exist only as Prometheus rules.

`AlertmanagerPusher` is the thin adapter around it:

* POSTs to ``<url>/api/v2/alerts`` a JSON list of ``{labels, annotations, startsAt,
  endsAt, generatorURL}`` (RFC3339 UTC times);
* re-sends the active alerts every `resend_interval` with ``endsAt`` a few resend
  intervals ahead, so Alertmanager resolves them by itself if csf dies;
* sends ``endsAt = time the alert stopped`` for alerts that stopped, and keeps such
  resolves pending until Alertmanager accepted them;
* on failure backs off exponentially (bounded by `max_backoff`) without blocking the
  caller: every `sync`/`flush` makes at most one HTTP request;
* persists the active set, the pending resolves and the last binding constraint to a
  small JSON file in `state_dir`, so a restarted service re-sends the same label sets
  with the same ``startsAt`` (Alertmanager deduplicates by label set: no second incident).

Alertmanager being down is an outcome (`PushResult.error`), never an exception.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from detector.evidence.results import ConstraintResult, Evaluation
from detector.spec.pack import OBSERVABILITY, Pack
from exporters.alerts import (
    BINDING,
    BINDING_CHANGE_WINDOW,
    BINDING_CHANGED,
    BINDING_UNPRICED,
    META_OVERHEAD,
    OBSERVABILITY_GAP,
    OBSERVABILITY_GAP_PAGE,
    PROXY,
    SOURCE_DOWN,
    AlertKind,
    alert_runbook_url,
    constraint_runbook_url,
    meta_constraint_name,
)

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
"""Sorted (name, value) pairs: the identity of an alert."""
Annotations = tuple[tuple[str, str], ...]

STATE_VERSION = 1
DEFAULT_GENERATOR_URL = "http://localhost:9466/api/v1/status"


# --------------------------------------------------------------------------- formatting


def format_rfc3339(ts: float) -> str:
    """Unix seconds -> RFC3339 UTC with milliseconds, as Alertmanager's API expects ('...T12:00:00.000Z')."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fmt(v: float | None, spec: str = ".2f") -> str:
    if v is None or not math.isfinite(v):
        return "unknown"
    return format(v, spec)


def humanize(v: float | None) -> str:
    """SI-prefixed number with 4 significant digits, like Prometheus' `humanize` template function."""
    if v is None or not math.isfinite(v):
        return "unknown"
    if v == 0 or abs(v) < 1:
        return f"{v:.4g}"
    prefixes = ("", "k", "M", "G", "T", "P", "E", "Z", "Y")
    i = 0
    while abs(v) >= 1000 and i < len(prefixes) - 1:
        v /= 1000
        i += 1
    return f"{v:.4g}{prefixes[i]}"


# --------------------------------------------------------------------------- desired alerts


def _labels(kind: AlertKind, pipeline: str, constraint: str) -> Labels:
    return tuple(
        sorted(
            {
                "alertname": kind.name,
                "constraint": constraint,
                "pipeline": pipeline,
                "severity": kind.severity,
            }.items()
        )
    )


def _annotations(
    kind: AlertKind, pipeline: str, constraint: str, description: str, **urls: str
) -> Annotations:
    out = {"summary": kind.summary_text(pipeline, constraint), "description": description, **urls}
    return tuple(sorted(out.items()))


def _constraint_url(pack: Pack | None, base: str | None, name: str) -> str:
    if pack is not None:
        for c in pack.constraints:
            if c.name == name:
                return constraint_runbook_url(base, c)
    return constraint_runbook_url(base, name)


def _binding_description(pipeline: str, r: ConstraintResult) -> str:
    p = r.pressure
    e = r.economics
    ce = r.causal
    if r.decision == "investigate":  # binding, proven, no revenue model: whether it pays is unknown
        return (
            f"{r.name} (layer {r.layer}) is the published binding constraint of pipeline {pipeline}. "
            f"Pressure {_fmt(p.ratio if p else None)}x target (target {_fmt(r.target, 'g')}), "
            f"{ce.passed if ce else 'unknown'}/5 causal tests passed (Gamma* {_fmt(ce.gamma if ce else None)}). "
            f"{r.explanation}"
        )
    return (
        f"{r.name} (layer {r.layer}) is the published binding constraint of pipeline {pipeline} and csf's "
        f"decision is invest. Pressure {_fmt(p.ratio if p else None)}x target (target {_fmt(r.target, 'g')}), "
        f"{ce.passed if ce else 'unknown'}/5 causal tests passed (Gamma* {_fmt(ce.gamma if ce else None)}), "
        f"revenue at risk ${humanize(e.revenue_at_risk if e else None)}/year, ROI {_fmt(e.roi if e else None)}x "
        f"against threshold {_fmt(e.theta if e else None)}x. {r.explanation}"
    )


def _proxy_description(pipeline: str, r: ConstraintResult, pass_required: int) -> str:
    p = r.pressure
    ce = r.causal
    failed = sorted(t.name for t in ce.tests if t.result != "PASS") if ce else []
    return (
        f"{r.name} on pipeline {pipeline} is beyond target (pressure {_fmt(p.ratio if p else None)}x) but passed "
        f"only {ce.passed if ce else 'unknown'}/5 causal tests (needs {pass_required}); not passed: "
        f"{', '.join(failed) or 'none'}. It is a proxy for something else: do not page or invest on it. "
        f"{r.explanation}"
    )


def desired_alerts(
    evaluation: Evaluation,
    pack: Pack | None = None,
    runbook_base_url: str | None = None,
) -> dict[Labels, Annotations]:
    """The alerts `evaluation` implies (label set -> annotations), excluding CSFBindingConstraintChanged."""
    pipe = evaluation.pipeline
    base = runbook_base_url
    out: dict[Labels, Annotations] = {}
    pass_required = pack.causal.pass_required if pack is not None else 3
    blind_head = evaluation.binding == OBSERVABILITY
    meta_names = {c.name for c in pack.constraints if c.kind == "meta"} if pack is not None else {"meta"}

    for r in evaluation.constraints:
        if r.name in meta_names:
            continue
        curl = _constraint_url(pack, base, r.name)
        if evaluation.binding == r.name and r.decision in ("invest", "investigate"):
            out[_labels(BINDING, pipe, r.name)] = _annotations(
                BINDING_UNPRICED if r.decision == "investigate" else BINDING,
                pipe,
                r.name,
                _binding_description(pipe, r),
                runbook_url=curl,
                alert_runbook_url=alert_runbook_url(base, BINDING),
            )
        if r.state == "proxy":
            out[_labels(PROXY, pipe, r.name)] = _annotations(
                PROXY,
                pipe,
                r.name,
                _proxy_description(pipe, r, pass_required),
                runbook_url=alert_runbook_url(base, PROXY),
                constraint_runbook_url=curl,
            )
        if r.state == "observe" or r.missing:
            kind = OBSERVABILITY_GAP_PAGE if blind_head else OBSERVABILITY_GAP
            out[_labels(kind, pipe, r.name)] = _annotations(
                kind,
                pipe,
                r.name,
                _gap_description(pipe, r, blind_head),
                runbook_url=alert_runbook_url(base, OBSERVABILITY_GAP),
                constraint_runbook_url=curl,
            )

    if not evaluation.source_up:
        out[_labels(SOURCE_DOWN, pipe, OBSERVABILITY)] = _annotations(
            SOURCE_DOWN,
            pipe,
            OBSERVABILITY,
            f"csf's data source for pipeline {pipe} does not answer: every constraint is in state observe and "
            f"the published binding constraint is observability. {evaluation.explanation}",
            runbook_url=alert_runbook_url(base, SOURCE_DOWN),
        )

    out.update(_meta_alert(evaluation, pack, base))
    return out


def _gap_description(pipe: str, r: ConstraintResult, blind_head: bool) -> str:
    if r.diagnoses:
        why = "; ".join(f"diagnosis {d.reason}: {d.message}" for d in r.diagnoses)
    else:
        why = "missing or stale inputs: " + (", ".join(r.missing) or "unknown inputs")
    text = f"csf cannot judge {r.name} on pipeline {pipe}: {why}. Missing inputs are never healthy."
    if blind_head:
        text += (
            " The published binding constraint is observability: csf cannot name any later "
            "bottleneck until this gap is closed."
        )
    return text


def _meta_alert(evaluation: Evaluation, pack: Pack | None, base: str | None) -> dict[Labels, Annotations]:
    """CSFMetaOverhead when the analysis overhead ratio is above the pack's limit."""
    limit = pack.organisation.meta_overhead_limit if pack is not None else 0.5
    ratio = evaluation.meta.overhead_ratio
    if ratio is None or not math.isfinite(ratio) or ratio <= limit:
        return {}
    pipe = evaluation.pipeline
    meta = meta_constraint_name(pack)
    return {
        _labels(META_OVERHEAD, pipe, meta): _annotations(
            META_OVERHEAD,
            pipe,
            meta,
            f"The analysis overhead ratio of pipeline {pipe} (analysis hours / capacity hours) is {ratio:.2f}, "
            f"above the limit {limit:g} set in the pack (organisation.meta_overhead_limit). The framework itself "
            "has become the constraint: stop analysing and act on what is known.",
            runbook_url=alert_runbook_url(base, META_OVERHEAD),
            constraint_runbook_url=_constraint_url(pack, base, meta),
        )
    }


def _changed_alert(
    pipeline: str, binding: str, decision: str, base: str | None
) -> tuple[Labels, Annotations]:
    window = f"{BINDING_CHANGE_WINDOW / 3600:g}h"
    text = (
        f"Within the last {window} the published binding constraint of pipeline {pipeline} moved; it is now "
        f"{binding} (system decision: {decision}). Work planned against the previous binding constraint no "
        "longer pays: re-plan."
    )
    return _labels(BINDING_CHANGED, pipeline, binding), _annotations(
        BINDING_CHANGED, pipeline, binding, text, runbook_url=alert_runbook_url(base, BINDING_CHANGED)
    )


# --------------------------------------------------------------------------- pusher


@dataclass(frozen=True)
class PushResult:
    """What one `sync`/`flush` did. `error` is set when a delivery attempt failed."""

    attempted: bool
    delivered: bool
    active: int
    pending_resolves: int
    error: str | None = None
    next_attempt: float | None = None
    """Earliest time of the next delivery attempt after a failure (unix s)."""


@dataclass
class _Alert:
    annotations: Annotations
    starts_at: float
    ends_at: float | None = None
    """None while active; the time it stopped once resolved."""

    def to_json(self, labels: Labels) -> dict[str, Any]:
        return {
            "labels": [list(kv) for kv in labels],
            "annotations": [list(kv) for kv in self.annotations],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        }


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of pairs")
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ValueError(f"bad pair {item!r}")
        out.append((item[0], item[1]))
    return tuple(sorted(out))


class AlertmanagerPusher:
    """Keeps Alertmanager's view of one pipeline's csf alerts in step with the latest evaluation."""

    def __init__(
        self,
        url: str,
        pipeline: str,
        resend_interval: float = 60.0,
        timeout: float = 5.0,
        *,
        pack: Pack | None = None,
        runbook_base_url: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        generator_url: str | None = DEFAULT_GENERATOR_URL,
        alert_ttl: float | None = None,
        initial_backoff: float = 1.0,
        max_backoff: float = 300.0,
        change_window: float = BINDING_CHANGE_WINDOW,
        client: httpx.Client | None = None,
    ) -> None:
        if not url:
            raise ValueError("Alertmanager URL is empty")
        if resend_interval <= 0 or timeout <= 0:
            raise ValueError("resend_interval and timeout must be positive")
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        self.url = url.rstrip("/")
        self.endpoint = self.url + "/api/v2/alerts"
        self.pipeline = pipeline
        self.resend_interval = float(resend_interval)
        self.timeout = float(timeout)
        self.pack = pack
        self.runbook_base_url = runbook_base_url
        self.generator_url = generator_url
        self.alert_ttl = float(alert_ttl) if alert_ttl else 4 * self.resend_interval
        self.initial_backoff = float(initial_backoff)
        self.max_backoff = float(max_backoff)
        self.change_window = float(change_window)
        self._own_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=self.timeout)
        self._lock = threading.Lock()

        self._active: dict[Labels, _Alert] = {}
        self._resolved: dict[Labels, _Alert] = {}
        self._binding_known = False
        self._binding: str | None = None
        self._changed_at: float | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._last_sent: float | None = None
        self._last_call: float | None = None
        self._call_gap = 0.0
        self._dirty = False

        safe = re.sub(r"[^a-zA-Z0-9_.-]", "_", pipeline) or "default"
        self.state_path = Path(state_dir) / f"alertmanager-{safe}.json" if state_dir is not None else None
        self._load_state()

    # ------------------------------------------------------------------ state file

    def _load_state(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION or data.get("pipeline") != self.pipeline:
                raise ValueError("version or pipeline mismatch")
            active = {
                _pairs(a["labels"]): _Alert(_pairs(a["annotations"]), float(a["starts_at"]))
                for a in data["active"]
            }
            resolved = {
                _pairs(a["labels"]): _Alert(
                    _pairs(a["annotations"]), float(a["starts_at"]), float(a["ends_at"])
                )
                for a in data["resolved"]
            }
            binding = data.get("binding")
            changed_at = data.get("changed_at")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable Alertmanager state %s: %s", self.state_path, exc)
            return
        self._active, self._resolved = active, resolved
        self._binding_known = bool(data.get("binding_known", False))
        self._binding = binding if isinstance(binding, str) else None
        self._changed_at = float(changed_at) if isinstance(changed_at, int | float) else None
        # re-send everything once after a restart: same labels and startsAt, so no new incident
        self._dirty = bool(self._active or self._resolved)

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        data = {
            "version": STATE_VERSION,
            "pipeline": self.pipeline,
            "binding_known": self._binding_known,
            "binding": self._binding,
            "changed_at": self._changed_at,
            "active": [a.to_json(k) for k, a in sorted(self._active.items())],
            "resolved": [a.to_json(k) for k, a in sorted(self._resolved.items())],
        }
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("cannot write Alertmanager state %s: %s", self.state_path, exc)

    # ------------------------------------------------------------------ public API

    @property
    def active(self) -> tuple[Labels, ...]:
        with self._lock:
            return tuple(sorted(self._active))

    @property
    def pending_resolves(self) -> tuple[Labels, ...]:
        with self._lock:
            return tuple(sorted(self._resolved))

    def sync(self, evaluation: Evaluation, now: float) -> PushResult:
        """Bring the active set in line with `evaluation` and deliver what is due (at most one request)."""
        if evaluation.pipeline != self.pipeline:
            raise ValueError(
                f"evaluation of pipeline {evaluation.pipeline!r} sent to pusher of {self.pipeline!r}"
            )
        with self._lock:
            self._note_call(now)
            desired = desired_alerts(evaluation, self.pack, self.runbook_base_url)
            self._track_binding(evaluation, now)
            if (
                self._changed_at is not None
                and evaluation.binding is not None
                and now - self._changed_at < self.change_window
            ):
                labels, ann = _changed_alert(
                    self.pipeline, evaluation.binding, evaluation.decision, self.runbook_base_url
                )
                desired[labels] = ann
            self._apply(desired, now)
            self._save_state()
            return self._deliver(now)

    def flush(self, now: float) -> PushResult:
        """Retry pending deliveries and resends without a new evaluation (call it from a timer)."""
        with self._lock:
            self._note_call(now)
            return self._deliver(now)

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> AlertmanagerPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _note_call(self, now: float) -> None:
        if self._last_call is not None and now > self._last_call:
            self._call_gap = now - self._last_call
        self._last_call = now

    def _track_binding(self, evaluation: Evaluation, now: float) -> None:
        if self._binding_known and evaluation.binding != self._binding and evaluation.binding is not None:
            self._changed_at = now
        self._binding = evaluation.binding
        self._binding_known = True

    def _apply(self, desired: Mapping[Labels, Annotations], now: float) -> None:
        for labels, ann in desired.items():
            alert = self._active.get(labels)
            if alert is not None:
                alert.annotations = ann
                continue
            pending = self._resolved.pop(labels, None)
            if pending is not None:
                # its resolve never reached Alertmanager: the incident simply continues
                self._active[labels] = _Alert(ann, pending.starts_at)
            else:
                self._active[labels] = _Alert(ann, now)
            self._dirty = True
        for labels in [k for k in self._active if k not in desired]:
            alert = self._active.pop(labels)
            alert.ends_at = now
            self._resolved[labels] = alert
            self._dirty = True

    def _payload(self, now: float) -> list[dict[str, Any]]:
        ends = now + max(self.alert_ttl, 3 * self._call_gap)
        out = []
        for labels, alert in sorted(self._active.items()):
            out.append(self._alert_json(labels, alert, ends))
        for labels, alert in sorted(self._resolved.items()):
            end = alert.ends_at if alert.ends_at is not None else now
            out.append(self._alert_json(labels, alert, max(end, alert.starts_at)))
        return out

    def _alert_json(self, labels: Labels, alert: _Alert, ends_at: float) -> dict[str, Any]:
        item: dict[str, Any] = {
            "labels": dict(labels),
            "annotations": dict(alert.annotations),
            "startsAt": format_rfc3339(alert.starts_at),
            "endsAt": format_rfc3339(ends_at),
        }
        if self.generator_url:
            item["generatorURL"] = self.generator_url
        return item

    def _result(self, attempted: bool, delivered: bool, error: str | None = None) -> PushResult:
        return PushResult(
            attempted=attempted,
            delivered=delivered,
            active=len(self._active),
            pending_resolves=len(self._resolved),
            error=error,
            next_attempt=self._next_attempt if self._failures else None,
        )

    def _deliver(self, now: float) -> PushResult:
        resend_due = self._active and (
            self._last_sent is None or now - self._last_sent >= self.resend_interval
        )
        if not (self._dirty or self._resolved or resend_due):
            return self._result(False, False)
        if self._failures and now < self._next_attempt:
            return self._result(False, False, "backing off after a failed delivery")
        payload = self._payload(now)
        if not payload:
            self._dirty = False
            return self._result(False, False)
        error: str | None = None
        try:
            resp = self._client.post(self.endpoint, json=payload, timeout=self.timeout)
            if resp.status_code >= 300:
                error = f"Alertmanager answered HTTP {resp.status_code}: {resp.text[:200].strip()}"
        except httpx.HTTPError as exc:
            error = f"cannot reach Alertmanager at {self.endpoint}: {type(exc).__name__}: {exc}"
        if error is not None:
            self._failures += 1
            delay = min(self.max_backoff, self.initial_backoff * 2 ** (self._failures - 1))
            self._next_attempt = now + delay
            log.warning("%s (attempt %d, next in %.0fs)", error, self._failures, delay)
            return self._result(True, False, error)
        self._failures = 0
        self._next_attempt = 0.0
        self._last_sent = now
        self._dirty = False
        self._resolved.clear()
        self._save_state()
        return self._result(True, True)


__all__ = [
    "AlertmanagerPusher",
    "PushResult",
    "desired_alerts",
    "format_rfc3339",
    "humanize",
]
