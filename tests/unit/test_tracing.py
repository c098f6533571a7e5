"""Self-observation: every evaluation is traced; the same measurements feed the meta report."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from detector.decision.pipeline import Pipeline
from detector.evidence.results import TEST_NAMES
from detector.sim.simulator import Simulator
from detector.source.native import NativeSource
from detector.source.store import SampleStore
from detector.spec.load import default_pack
from exporters.otel import tracer, tracer_provider

ORIGIN = 1_780_000_000.0 - (1_780_000_000.0 % 3600)


def _pipeline(provider) -> Pipeline:
    pack = default_pack()
    store = SampleStore(retention=None)
    Simulator("latency_binding", seed=3, origin=ORIGIN).write_to(store, ORIGIN - pack.windows.lookback - 3600, ORIGIN + 1)
    return Pipeline("traced", pack, NativeSource(store), tracer=tracer(provider))


def test_spans_per_evaluation_constraint_and_test():
    exporter = InMemorySpanExporter()
    provider = tracer_provider(extra_processor=SimpleSpanProcessor(exporter))
    p = _pipeline(provider)
    ev = p.evaluate(ORIGIN)
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "csf.evaluate traced"]
    assert len(roots) == 1
    root = roots[0]
    # one account of cost: the span carries the same figures as the meta report
    assert root.attributes["csf.samples_read"] == ev.meta.samples_read > 0
    assert root.attributes["csf.queries"] == ev.meta.queries
    assert root.attributes["csf.cpu_seconds"] == ev.meta.cpu_seconds
    assert root.attributes["csf.binding"] == (ev.binding or "none")
    constraint_spans = {s.attributes["csf.constraint"]: s for s in spans if s.name.startswith("csf.constraint ")}
    assert set(constraint_spans) == {c.name for c in default_pack().constraints if c.kind == "signal"}
    for s in constraint_spans.values():
        assert s.parent is not None and s.parent.span_id == root.context.span_id
    # samples read per constraint add up to no more than the evaluation's total (queries are memoised)
    assert sum(s.attributes["csf.samples_read"] for s in constraint_spans.values()) <= ev.meta.samples_read
    latency = constraint_spans["latency"]
    assert latency.attributes["csf.causal.passed"] == ev.constraint("latency").causal.passed
    tests = [s for s in spans if s.name.startswith("csf.test ") and s.parent.span_id == latency.context.span_id]
    assert [s.attributes["csf.test"] for s in tests] == list(TEST_NAMES)
    for s in tests:
        assert s.attributes["csf.test.result"] == ev.constraint("latency").causal.test(s.attributes["csf.test"]).result


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_spans_are_exported_over_otlp_http():
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        provider = tracer_provider(endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces")
        p = _pipeline(provider)
        p.evaluate(ORIGIN)
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    names = []
    for body in _Collector.received:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert attrs["service.name"] == "csf"
            for ss in rs.scope_spans:
                names.extend(s.name for s in ss.spans)
    assert "csf.evaluate traced" in names
    assert "csf.constraint latency" in names
    assert sum(1 for n in names if n.startswith("csf.test ")) >= 5
