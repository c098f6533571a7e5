"""atheris harness: the remote_write and OTLP decoders (and the store behind them) raise only
`IngestError` with a 4xx status; decoded requests are stored without any exception.

The first input byte picks the decoder: remote_write (snappy), OTLP protobuf, OTLP JSON,
OTLP protobuf+gzip. Run: ``python tests/fuzz/fuzz_ingest.py -max_total_time=300``.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["detector"]):
    import cramjam

    from detector.source.ingest import IngestError
    from detector.source.ingest.otlp import DeltaAccumulator, decode_request, store_translation, translate
    from detector.source.ingest.remote_write import decode_write_request, store_series
    from detector.source.store import SampleStore

from tests.fuzz._common import run  # noqa: E402

LIMIT = 1 << 20


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, body = data[0] % 4, data[1:]
    store = SampleStore(retention=None)
    try:
        if kind == 0:
            store_series(store, decode_write_request(body, LIMIT))
        else:
            ctype = "application/json" if kind == 2 else "application/x-protobuf"
            encoding = "gzip" if kind == 3 else None
            req, _ = decode_request(body, ctype, encoding, LIMIT)
            store_translation(store, translate(req, DeltaAccumulator()))
    except IngestError as exc:
        if not 400 <= exc.status < 500:
            raise AssertionError(f"decode error with status {exc.status}") from exc


def _seeds() -> list[bytes]:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    from detector.source.ingest.remote_pb import messages

    rw = messages().WriteRequest()
    ts = rw.timeseries.add()
    ts.labels.add(name="__name__", value="up")
    ts.labels.add(name="job", value="a")
    ts.samples.add(timestamp=1_700_000_000_000, value=1.0)
    otlp = metrics_service_pb2.ExportMetricsServiceRequest()
    m = otlp.resource_metrics.add().scope_metrics.add().metrics.add(name="q", unit="s")
    m.gauge.data_points.add(time_unix_nano=1_700_000_000_000_000_000, as_double=1.0)
    pb = otlp.SerializeToString()
    return [
        b"\x00" + bytes(cramjam.snappy.compress_raw(rw.SerializeToString())),
        b"\x01" + pb,
        b'\x02{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"q","gauge":{"dataPoints":'
        b'[{"timeUnixNano":"1700000000000000000","asDouble":1}]}}]}]}]}',
        b"\x03" + gzip.compress(pb, mtime=0),
    ]


if __name__ == "__main__":
    run("ingest", one_input, _seeds())
