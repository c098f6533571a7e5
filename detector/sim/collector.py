"""The simulated platform served live: a prometheus_client collector of the simulator's cumulative
values at the simulated now, and a small HTTP server for ``csf simulate --serve``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from detector.sim.metrics import METRICS_BY_NAME
from detector.sim.simulator import Simulator

# --------------------------------------------------------------------------------------
# Serving the live platform


class SimulatorCollector:
    """prometheus_client collector rendering the simulator's cumulative values at the simulated now.

    Simulated time runs `speed` times faster than `clock` from `wall_start`, where it
    equals `sim_start`.
    """

    def __init__(
        self,
        sim: Simulator,
        *,
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
        sim_start: float | None = None,
        wall_start: float | None = None,
    ) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.sim = sim
        self.clock = clock
        self.speed = float(speed)
        self.wall_start = clock() if wall_start is None else float(wall_start)
        self.sim_start = self.wall_start if sim_start is None else float(sim_start)

    def now(self) -> float:
        """Simulated time of the newest sample being served (on the interval grid)."""
        t = self.sim_start + (self.clock() - self.wall_start) * self.speed
        sim = self.sim
        k = math.floor((t - sim.origin) / sim.interval + 1e-9)
        return sim.origin + k * sim.interval

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        t = self.now()
        families: dict[str, Any] = {}
        pending: dict[tuple[str, tuple[str, ...]], list[tuple[str, float]]] = {}
        for name, typ, labels, _ts, values in self.sim.generate(t, t + self.sim.interval):
            if typ == "histogram":
                base = name.rsplit("_", 1)[0]
                spec = METRICS_BY_NAME[base]
                fam = families.get(base)
                if fam is None:
                    fam = families[base] = HistogramMetricFamily(base, spec.help, labels=list(spec.labels))
                key = (base, tuple(labels[lbl] for lbl in spec.labels))
                if name.endswith("_bucket"):
                    pending.setdefault(key, []).append((labels["le"], float(values[0])))
                elif name.endswith("_sum"):
                    fam.add_metric(list(key[1]), buckets=pending.pop(key), sum_value=float(values[0]))
                continue
            spec = METRICS_BY_NAME[name]
            fam = families.get(name)
            if fam is None:
                cls = CounterMetricFamily if typ == "counter" else GaugeMetricFamily
                fam = families[name] = cls(spec.family, spec.help, labels=list(spec.labels))
            fam.add_metric([labels[lbl] for lbl in spec.labels], float(values[0]))
        yield from families.values()


def serve_simulator(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 9467,
    *,
    speed: float = 1.0,
    clock: Callable[[], float] = time.time,
    sim_start: float | None = None,
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) exposing the live simulated platform on /metrics.

    Call ``serve_forever()`` (e.g. in a thread) and ``shutdown()``/``server_close()``.
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry = CollectorRegistry(auto_describe=False)
    collector = SimulatorCollector(sim, clock=clock, speed=speed, sim_start=sim_start)
    registry.register(collector)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(registry)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server API)
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
