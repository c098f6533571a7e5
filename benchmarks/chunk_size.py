"""Size and speed of the chunk codec (`detector.source.chunks`) on the simulator's data.

``python -m benchmarks.chunk_size [--days 7] [--sizes 120,240,480,1024] [--no-codecs] [--no-pin]``

The default pack's platform (scenario ``sequence``, seed 1, 1-minute samples, every
series of the simulator) is written for `days` into a `SampleStore`; every series is
cut into chunks of N samples (the last one shorter) and encoded. Reported per N: encoded
bytes / samples (raw is 16 B/sample), encode and decode throughput in samples/s on one
core (process CPU time), and where the bytes go: the share of timestamps (the same
chunks with all-zero values: timestamps plus the fixed per-chunk overhead) and bytes per
sample by kind of series. With codecs, the alternatives (zstd levels, lz4, raw planes)
at one chunk size. `run` returns everything as a dict.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import pin_to_one_core

SIZES = (120, 240, 480, 1024)
TARGET = 3.0
"""Bytes per sample the codec aims at on this data."""
CODECS = (("zstd", 1), ("zstd", 3), ("zstd", 9), ("lz4", 0), ("raw", 0))
COMPARE_SIZE = 240


def simulate(days: float) -> list[tuple[str, Any, Any, Any]]:
    """(name, labels, timestamps, values) of every series: `days` of the default pack's simulator,
    filled into a `SampleStore` the way the service's simulator feed does (6-hour pieces)."""
    from benchmarks.data import DAY, ORIGIN
    from detector.sim.simulator import Simulator
    from detector.source.store import SampleStore

    store = SampleStore(retention=None)
    sim = Simulator("sequence", seed=1, origin=ORIGIN, interval=60.0, history=days * DAY)
    t, end = ORIGIN - days * DAY, ORIGIN
    while t < end:
        t1 = min(t + 6 * 3600.0, end)
        sim.write_to(store, t, t1)
        t = t1
    return [(name, labels, ts, vals) for _jid, name, labels, ts, vals in store.snapshot()]


def kind_of(name: str) -> str:
    """The kind of series a metric name is (what its values look like)."""
    for suffix, kind in (("_bucket", "histogram buckets"), ("_sum", "histogram sums"), ("_count", "histogram counts")):
        if name.endswith(suffix):
            return kind
    return "counters" if name.endswith("_total") else "gauges"


def chunked(series: list[tuple[str, Any, Any, Any]], n: int) -> list[tuple[str, Any, Any]]:
    """(kind, timestamps, values) of every chunk of n samples."""
    return [
        (kind_of(name), ts[i : i + n], vals[i : i + n])
        for name, _labels, ts, vals in series
        for i in range(0, len(ts), n)
    ]


def measure(chunks: list[tuple[str, Any, Any]], codec: str = "zstd", level: int = 3) -> dict[str, Any]:
    """Bytes and one-core throughput of encoding and decoding `chunks` (checked bit for bit)."""
    import numpy as np

    from detector.source.chunks import decode_chunk, encode_chunk

    c0 = time.process_time()
    encoded = [encode_chunk(ts, vals, codec=codec, level=level) for _kind, ts, vals in chunks]
    c1 = time.process_time()
    decoded = [decode_chunk(data) for data in encoded]
    c2 = time.process_time()
    for (_kind, ts, vals), (got_ts, got_vals) in zip(chunks, decoded, strict=True):
        if got_ts.tobytes() != ts.tobytes() or got_vals.tobytes() != vals.tobytes():
            raise AssertionError("a chunk did not round-trip bit for bit")
    samples = sum(len(ts) for _kind, ts, _vals in chunks)
    by_kind: dict[str, list[int]] = {}
    for (kind, ts, _vals), data in zip(chunks, encoded, strict=True):
        acc = by_kind.setdefault(kind, [0, 0])
        acc[0] += len(data)
        acc[1] += len(ts)
    ts_only = sum(len(encode_chunk(ts, np.zeros(len(ts)), codec=codec, level=level)) for _k, ts, _v in chunks)
    total = sum(len(data) for data in encoded)
    return {
        "chunks": len(chunks),
        "samples": samples,
        "bytes": total,
        "bytes_per_sample": total / samples,
        "timestamp_and_overhead_bytes_per_sample": ts_only / samples,
        "encode_samples_per_s": samples / max(c1 - c0, 1e-9),
        "decode_samples_per_s": samples / max(c2 - c1, 1e-9),
        "by_kind": {
            kind: {"series_samples": s, "bytes_per_sample": b / s, "share_of_bytes": b / total}
            for kind, (b, s) in sorted(by_kind.items())
        },
    }


def value_profile(series: list[tuple[str, Any, Any, Any]]) -> dict[str, float]:
    """What the values are: the share of samples that are integers, or have <= 3 decimals."""
    import numpy as np

    vals = np.concatenate([v for *_, v in series])
    finite = vals[np.isfinite(vals)]
    return {
        "samples": float(len(vals)),
        "integer_share": float(np.mean(finite == np.round(finite))),
        "three_decimals_share": float(np.mean(np.round(finite, 3) == finite)),
    }


def run(days: float = 7.0, sizes: Sequence[int] = SIZES, codecs: bool = True) -> dict[str, Any]:
    """Every figure, as a dict (see the module docstring)."""
    series = simulate(days)
    out: dict[str, Any] = {
        "days": days,
        "series": len(series),
        "raw_bytes_per_sample": 16.0,
        "target_bytes_per_sample": TARGET,
        "values": value_profile(series),
        "by_chunk_size": {n: measure(chunked(series, n)) for n in sizes},
    }
    if codecs:
        chunks = chunked(series, COMPARE_SIZE)
        out["codecs"] = {
            f"{codec}-{level}" if codec == "zstd" else codec: measure(chunks, codec, level)
            for codec, level in CODECS
        }
    return out


def render(result: dict[str, Any]) -> str:
    """The result as a small text table."""
    lines = [
        f"{result['series']} series, {result['days']:g} days at 60 s, "
        f"{int(result['values']['samples']):,} samples; raw 16 B/sample; target <= {TARGET:g} B/sample",
        f"values: {result['values']['integer_share']:.1%} integers, "
        f"{result['values']['three_decimals_share']:.1%} with <= 3 decimals",
        "",
        f"{'chunk':>6} {'B/sample':>9} {'ts+ovh':>7} {'ratio':>6} {'encode/s':>10} {'decode/s':>10}",
    ]
    for n, m in result["by_chunk_size"].items():
        lines.append(_row(str(n), m))
    largest = result["by_chunk_size"][max(result["by_chunk_size"])]
    lines += ["", f"by kind of series (chunks of {max(result['by_chunk_size'])}):"]
    for kind, k in largest["by_kind"].items():
        lines.append(
            f"  {kind:<18} {k['bytes_per_sample']:6.2f} B/sample  {k['share_of_bytes']:6.1%} of bytes  "
            f"{k['series_samples']:>10,} samples"
        )
    if "codecs" in result:
        lines += ["", f"codecs (chunks of {COMPARE_SIZE}):"]
        lines += [_row(name, m) for name, m in result["codecs"].items()]
    return "\n".join(lines)


def _row(label: str, m: dict[str, Any]) -> str:
    return (
        f"{label:>6} {m['bytes_per_sample']:9.3f} {m['timestamp_and_overhead_bytes_per_sample']:7.3f} "
        f"{16.0 / m['bytes_per_sample']:5.1f}x {m['encode_samples_per_s']:10.3g} {m['decode_samples_per_s']:10.3g}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chunk_size", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated chunk sizes")
    parser.add_argument("--no-codecs", action="store_true", help="skip the comparison of codecs")
    parser.add_argument("--no-pin", action="store_true", help="do not pin this process to one CPU")
    args = parser.parse_args(argv)
    if not args.no_pin:
        pin_to_one_core()  # before numpy is imported (by run)
    sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    result = run(args.days, sizes, codecs=not args.no_codecs)
    print(render(result))
    return result


if __name__ == "__main__":
    main()
