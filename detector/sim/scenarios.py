"""Scenarios of the video platform simulator: timelines of phases, each setting the platform's
levels so the binding constraint moves from phase to phase (`SCENARIOS`, `csf simulate --list`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO

from detector.sim.metrics import DAY, HOUR, METRICS_BY_NAME
from detector.timefmt import format_duration

# --------------------------------------------------------------------------------------
# Scenarios

ABANDON_BETA = 1.5
"""Elasticity of abandonment to p95 start latency (the platform model's; a feedback scenario feeds it back)."""

PRE_MIGRATION_MIX: tuple[float, float, float] = (0.96, 0.04, 0.0)
"""Start shares (tcp_hls, ll_hls, quic_moq) before the QUIC migration: the TCP floor (0.370 s) binds."""
POST_MIGRATION_MIX: tuple[float, float, float] = (0.03, 0.12, 0.85)
"""After the migration: tcp_hls < 5%, so ll_hls (0.280 s < target) sets the floor."""


@dataclass(frozen=True)
class Conditions:
    """Platform levels during a phase; the defaults are a healthy platform (every pressure < 0.85)."""

    latency_p95: float = 0.20
    """Platform p95 video start latency, s (target 0.300)."""
    protocol_share: tuple[float, float, float] = POST_MIGRATION_MIX
    """Start shares of tcp_hls, ll_hls, quic_moq."""
    transcode_p95: float = 15.0
    """Platform p95 transcode wait, s (target 30)."""
    gpu_utilization: float = 0.60
    creator_ratio: float = 0.008
    """Active creators / DAU (the supply constraint applies at >= 0.5%)."""
    irrelevant_mean: float = 0.60
    """Mean irrelevant videos per first session (target 1.0)."""
    incident_rate: float = 4e-6
    """Visible streak incidents per progress action (target 1e-5)."""
    low_tier_share: float = 0.30
    """Share of video starts from low-tier devices (mid and high split the rest 45:25)."""


@dataclass(frozen=True)
class Phase:
    name: str
    start_offset_s: float
    end_offset_s: float
    expected_binding: str | None
    """Constraint the detector should publish once the phase has settled (None = healthy)."""
    description: str = ""
    conditions: Conditions = field(default_factory=Conditions)

    def contains(self, offset_s: float) -> bool:
        return self.start_offset_s <= offset_s < self.end_offset_s


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    description: str
    phases: tuple[Phase, ...]
    dau_start: float = 3e6
    dau_end: float | None = None
    """DAU at the end of the timeline (exponential growth); None = constant."""
    ramp_s: float = 2 * HOUR
    """Levels move linearly from one phase's value to the next over this span after a phase starts."""
    noise: float = 1.0
    """Multiplier on the outcome noise."""
    signal_noise: float = 1.0
    """Multiplier on the within-unit variation of every signal X."""
    feedback: float = 0.0
    """Gain of the abandonment -> latency link (log latency per unit of log abandonment)."""
    latency_effect: float = 1.0
    """Multiplier on the latency -> abandonment elasticity (0 = no within-unit effect)."""
    tier_latency: tuple[float, float, float] = (1.35, 1.0, 0.80)
    """Median latency multiplier of low, mid, high device tiers."""
    tier_extra_abandonment: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Abandonment ratio added for low, mid, high tiers whatever the latency (a tier-level confounder)."""
    omit: frozenset[str] = frozenset()
    """Contract metrics that are never emitted."""

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"scenario {self.name!r} has no phases")
        prev_end = 0.0
        for p in self.phases:
            if p.start_offset_s != prev_end or p.end_offset_s <= p.start_offset_s:
                raise ValueError(
                    f"scenario {self.name!r}: phase {p.name!r} must start where the previous ends"
                )
            prev_end = p.end_offset_s
        gain = self.feedback * ABANDON_BETA * self.latency_effect
        if not 0.0 <= gain < 0.9:
            raise ValueError(
                f"scenario {self.name!r}: feedback x elasticity = {gain:.2f} must be in [0, 0.9) for a stable loop"
            )
        unknown = set(self.omit) - set(METRICS_BY_NAME)
        if unknown:
            raise ValueError(f"scenario {self.name!r} omits unknown metrics {sorted(unknown)}")

    @property
    def duration_s(self) -> float:
        return self.phases[-1].end_offset_s

    def phase_at(self, offset_s: float) -> Phase:
        """The phase playing at `offset_s` (phase 0 before the timeline, the last one after it)."""
        for p in self.phases:
            if offset_s < p.end_offset_s:
                return p
        return self.phases[-1]


_SLOW = Conditions(latency_p95=0.60, protocol_share=PRE_MIGRATION_MIX)


def _sequence() -> ScenarioSpec:
    d = DAY
    phases = (
        Phase(
            "slow_starts",
            0,
            3 * d,
            "latency",
            "p95 start latency ~0.6 s, far above the TCP floor: software fixes can help",
            _SLOW,
        ),
        Phase(
            "tcp_floor",
            3 * d,
            6 * d,
            "protocol",
            "software fixes brought p95 to the TCP floor (~0.37 s): no software headroom left",
            Conditions(latency_p95=0.365, protocol_share=PRE_MIGRATION_MIX),
        ),
        Phase(
            "encoder_quota",
            6 * d,
            9 * d,
            "supply",
            "QUIC migration landed (tcp < 5%); uploads outgrow the GPU quota: p95 transcode ~45 s",
            Conditions(transcode_p95=45.0, gpu_utilization=0.95, creator_ratio=0.011),
        ),
        Phase(
            "cold_start",
            9 * d,
            12 * d,
            "cold_start",
            "GPU quota raised; new users see ~1.6 irrelevant videos per first session",
            Conditions(irrelevant_mean=1.6, creator_ratio=0.011),
        ),
        Phase(
            "streak_incidents",
            12 * d,
            15 * d,
            "consistency",
            "placement fixed; false streak resets at ~3e-5 per action",
            Conditions(incident_rate=3e-5, creator_ratio=0.011),
        ),
        Phase(
            "healthy",
            15 * d,
            18 * d,
            None,
            "client-side resilience shipped: every constraint within target",
            Conditions(creator_ratio=0.011),
        ),
    )
    return ScenarioSpec(
        "sequence",
        "the binding constraint moves latency -> protocol -> supply -> cold_start -> consistency -> healthy "
        "while DAU grows from 3M to 20M",
        phases,
        dau_start=3e6,
        dau_end=20e6,
    )


def _single(name: str, description: str, phase: Phase, **kw: Any) -> ScenarioSpec:
    return ScenarioSpec(name, description, (phase,), **kw)


def _latency_recovers(week: float) -> ScenarioSpec:
    return ScenarioSpec(
        "latency_recovers",
        "after the QUIC migration a player regression makes latency bind for 24 h (p95 ~0.6 s, true "
        "effect, floor 0.28 s so protocol never binds); then a fix brings p95 to ~0.2 s and the binding "
        "constraint is released (short: for paging tests)",
        (
            Phase(
                "slow_starts",
                0,
                24 * HOUR,
                "latency",
                "p95 start latency ~0.6 s on the post-migration protocol mix",
                Conditions(latency_p95=0.60),
            ),
            Phase(
                "recovered",
                24 * HOUR,
                week,
                None,
                "software fix shipped: p95 ~0.2 s, every constraint within target",
                Conditions(),
            ),
        ),
    )


def _confounded(week: float) -> ScenarioSpec:
    mix = (0.15, 0.35, 0.55)
    confounded_phases = tuple(
        Phase(
            f"low_tier_{round(share * 100)}pct",
            i * week / 3,
            (i + 1) * week / 3,
            None,
            f"low-tier devices carry {share:.0%} of starts: slower and more abandoning, "
            "but within a unit abandonment ignores latency",
            Conditions(latency_p95=0.50, protocol_share=PRE_MIGRATION_MIX, low_tier_share=share),
        )
        for i, share in enumerate(mix)
    )
    return ScenarioSpec(
        "confounded",
        "latency beyond target, but device tier drives both latency and abandonment and a tier-mix "
        "shift moves both platform-wide; within a unit abandonment does not respond (a proxy)",
        confounded_phases,
        ramp_s=week / 3,
        latency_effect=0.0,
        tier_latency=(1.8, 1.0, 0.7),
        tier_extra_abandonment=(0.012, 0.003, 0.0),
    )


def _build_scenarios() -> dict[str, ScenarioSpec]:
    week = 7 * DAY
    slow = Phase(
        "slow_starts", 0, week, "latency", "p95 start latency ~0.6 s; everything else healthy", _SLOW
    )
    scenarios = (
        _sequence(),
        _single("healthy", "every constraint within target", Phase("healthy", 0, week, None, "all healthy")),
        _single(
            "latency_binding", "latency binds: p95 ~0.6 s with a true lagged effect on abandonment", slow
        ),
        _latency_recovers(week),
        _confounded(week),
        _single(
            "missing_outcome",
            "like latency_binding, but video_start_abandonments_total is never emitted (observability)",
            Phase("slow_starts", 0, week, "observability", "the latency outcome is not measured", _SLOW),
            omit=frozenset({"video_start_abandonments_total"}),
        ),
        _single(
            "feedback",
            "like latency_binding, plus abandonment raising latency (retries): a two-way link that fails "
            "temporal precedence; the other four tests still pass",
            slow,
            feedback=0.4,
            noise=3.0,
        ),
        _single(
            "noisy",
            "like latency_binding with heavy outcome noise and volatile signals: the effect is real but weak "
            "per point",
            slow,
            noise=8.0,
            signal_noise=1.5,
        ),
    )
    return {s.name: s for s in scenarios}


SCENARIOS: dict[str, ScenarioSpec] = _build_scenarios()


def describe_scenarios(out: TextIO) -> None:
    """Print every scenario with its phases (`csf simulate --list`)."""
    for spec in SCENARIOS.values():
        dau = f"{spec.dau_start / 1e6:g}M" + (f" -> {spec.dau_end / 1e6:g}M" if spec.dau_end else "")
        out.write(f"{spec.name}  ({format_duration(spec.duration_s)}, DAU {dau})\n    {spec.description}\n")
        for p in spec.phases:
            span = f"{format_duration(p.start_offset_s) if p.start_offset_s else '0s'}..{format_duration(p.end_offset_s)}"
            out.write(
                f"    {span:>12}  {p.name:<18} expect {p.expected_binding or 'healthy':<13} {p.description}\n"
            )
        out.write("\n")
