"""A pipeline = one pack + one source + its hysteresis counters.

The service's scheduler and `csf backtest` both call `Pipeline.evaluate`, so the
live verdict and the replayed one share one code path. A pipeline reads its source
through `detector.source.incremental.IncrementalSource` unless told not to: each
evaluation asks the source only for the steps the previous ones have not computed,
and the verdict is the one a cold evaluation gives.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable

from opentelemetry.trace import NoOpTracer, Tracer

from detector.decision.decide import HysteresisState, decide
from detector.evidence.gather import gather_evidence
from detector.evidence.results import Evaluation, EvidenceSet, MetaReport
from detector.source.frame import Source
from detector.source.incremental import IncrementalSource
from detector.spec.pack import Pack

DEFAULT_EVALUATION_INTERVAL = 60.0
"""Seconds between a live pipeline's evaluations unless configured (`csf serve`); the
generated alerts' timings follow it."""

Observer = Callable[[Evaluation], None]


class Pipeline:
    def __init__(
        self, name: str, pack: Pack, source: Source, tracer: Tracer | None = None, *, incremental: bool = True
    ) -> None:
        self.name = name
        self.pack = pack
        self.source: Source = IncrementalSource(source) if incremental else source
        self.state = HysteresisState()
        self.latest: Evaluation | None = None
        self._tracer = tracer

    @property
    def binding_changes(self) -> int:
        return self.state.changes

    def evaluate(self, now: float) -> Evaluation:
        """Evaluate at `now` (unix seconds, from the caller's clock) and advance the hysteresis counters."""
        tracer = self._tracer or NoOpTracer()
        with tracer.start_as_current_span(f"csf.evaluate {self.name}") as span:
            evidence, meta = self.observe(now, tracer)
            evaluation = self.conclude(evidence, meta)
            span.set_attributes(
                {
                    "csf.pipeline": self.name,
                    "csf.evaluation_time": now,
                    "csf.cpu_seconds": meta.cpu_seconds,
                    "csf.wall_seconds": meta.wall_seconds,
                    "csf.samples_read": evidence.samples_read,
                    "csf.queries": evidence.queries,
                    "csf.source_up": evidence.source_up,
                    "csf.binding": evaluation.binding or "none",
                    "csf.decision": evaluation.decision,
                }
            )
        return evaluation

    def observe(self, now: float, tracer: Tracer | None = None) -> tuple[EvidenceSet, MetaReport]:
        """The evidence at `now` and what gathering it cost; no hysteresis state is touched (so a
        backtest may gather the evidence of several times in other processes)."""
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        evidence = gather_evidence(self.pack, self.source, now, tracer or NoOpTracer())
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        org = self.pack.organisation
        overhead = None
        if org.analysis_hours is not None and org.capacity_hours:
            overhead = org.analysis_hours / org.capacity_hours
        meta = MetaReport(
            cpu_seconds=cpu,
            wall_seconds=wall,
            queries=evidence.queries,
            samples_read=evidence.samples_read,
            memory_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            overhead_ratio=overhead,
        )
        return evidence, meta

    def conclude(self, evidence: EvidenceSet, meta: MetaReport) -> Evaluation:
        """Decide on `evidence` (the next in time order) and advance the hysteresis counters."""
        evaluation, self.state = decide(self.pack, evidence, self.state, meta, pipeline=self.name)
        self.latest = evaluation
        return evaluation

    def replay(self, times: Iterable[float], observer: Observer | None = None) -> list[Evaluation]:
        """Evaluate at each time in order, carrying hysteresis forward."""
        out = []
        for t in times:
            ev = self.evaluate(t)
            out.append(ev)
            if observer is not None:
                observer(ev)
        return out

    def warm_up(self, now: float, evaluations: int, every: float) -> None:
        """Rebuild hysteresis after a (re)start by replaying the recent past up to, not including, `now`."""
        self.state = HysteresisState()
        times = [now - every * k for k in range(evaluations, 0, -1)]
        self.replay(times)
        # the binding-change count belongs to the live run, not to the warm-up
        self.state = HysteresisState(**{**self.state.__dict__, "changes": 0})
