"""Self-observation: OpenTelemetry tracing of every evaluation.

`tracer_provider(endpoint)` builds an SDK TracerProvider (never the global one)
that exports spans over OTLP/HTTP when an endpoint is configured. The pipeline
creates a span per evaluation, per constraint and per causal test; the same
CPU/wall measurements feed the meta-constraint report and
`csf_evaluation_duration_seconds`, so csf gives one account of its own cost.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

from detector import __version__


def tracer_provider(
    endpoint: str | None = None,
    service_name: str = "csf",
    headers: dict[str, str] | None = None,
    extra_processor: SpanProcessor | None = None,
) -> TracerProvider:
    """A TracerProvider exporting to `endpoint` (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name, "service.version": __version__}))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers or {})))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    return provider


def tracer(provider: TracerProvider) -> Tracer:
    return provider.get_tracer("csf.detector", __version__)
