"""Series identities and sample batches, checked once: names, labels, stale markers.

What every writer of a `detector.source.store.SampleStore` shares: the Prometheus
stale marker (`STALE_NAN`, `is_stale_marker`), the validation of metric and label
names (``ValueError`` naming the label), `SeriesRef` (a validated series identity with a
canonical token) and `RefBatch` (many series' samples, converted once, for
`SampleStore.append_refs`). The ingestion rules themselves are in the store's docstring.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from detector.source.frame import Labels

STALE_NAN_BITS = 0x7FF0000000000002
"""Bit pattern of the Prometheus stale marker (a signalling NaN)."""

STALE_NAN: float = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])
"""The Prometheus stale marker as a float. Compare with `is_stale_marker`, never with ``==``."""
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
def is_stale_marker(values: object) -> np.ndarray:
    """Boolean mask (same shape as `values`) of the samples that are Prometheus stale markers."""
    arr = np.asarray(values, dtype=np.float64)
    if not arr.flags.c_contiguous:
        arr = arr.copy()
    return arr.view(np.uint64) == np.uint64(STALE_NAN_BITS)


def float_bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def is_stale_scalar(x: float) -> bool:
    return x != x and float_bits(x) == STALE_NAN_BITS


def validate_metric_name(name: str) -> str:
    if not isinstance(name, str) or not _METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")
    return name


def validate_label_name(name: str) -> str:
    if not isinstance(name, str) or not _LABEL_NAME.match(name):
        raise ValueError(f"invalid label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
    if name.startswith("__"):
        raise ValueError(f"invalid label name {name!r}: names starting with '__' are reserved")
    return name


def validate_labels(labels: Mapping[str, str]) -> Labels:
    out: list[tuple[str, str]] = []
    for key, value in labels.items():
        validate_label_name(key)
        if not isinstance(value, str):
            raise ValueError(f"label {key!r}: value must be a string, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"label {key!r}: value is not valid UTF-8") from exc
        if value != "":
            out.append((key, value))
    return tuple(sorted(out))


class SeriesRef(NamedTuple):
    """A validated series identity (`series_ref`), for `SampleStore.append_refs`.

    `token` is a canonical text of (name, labels): one string per series, whose hash Python
    keeps, so a caller holding on to its refs (a decoder cache) finds a series in one
    dictionary probe.
    """

    name: str
    labels: Labels
    token: str


def series_token(name: str, key: Labels) -> str:
    return repr((name, key))


def series_ref(name: str, labels: Mapping[str, str]) -> SeriesRef:
    """The `SeriesRef` of a series; validates as `SampleStore.append` does (ValueError)."""
    validate_metric_name(name)
    key = validate_labels(labels)
    return SeriesRef(name, key, series_token(name, key))

class RefBatch:
    """Samples of many series for `SampleStore.append_refs`, checked and converted once.

    Series k is ``refs[k]`` with samples ``timestamps[bounds[k]:bounds[k + 1]]`` (seconds,
    finite) and the same slice of `values` (float64, bits kept).
    """

    __slots__ = ("refs", "bounds", "timestamps", "values", "_t", "_v", "_increasing")

    def __init__(
        self, refs: Sequence[SeriesRef], bounds: Sequence[int] | np.ndarray, timestamps: np.ndarray, values: np.ndarray
    ) -> None:
        ts = np.asarray(timestamps, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64)
        if ts.ndim != 1 or ts.shape != vals.shape:
            raise ValueError(f"timestamps {ts.shape} and values {vals.shape} must be equal-length 1-D arrays")
        barr = np.asarray(bounds, dtype=np.int64)
        if barr.shape != (len(refs) + 1,) or barr[0] != 0 or barr[-1] != len(ts):
            raise ValueError("bounds must hold len(refs) + 1 offsets from 0 to len(timestamps)")
        if (barr[1:] < barr[:-1]).any():
            raise ValueError("bounds must be non-decreasing")
        b: list[int] = barr.tolist()
        if not np.isfinite(ts).all():
            raise ValueError("timestamps must be finite numbers of seconds")
        self.refs = refs
        self.bounds = b
        self.timestamps = ts
        self.values = vals
        self._t: list[float] = ts.tolist()
        self._v: list[float] = vals.tolist()
        """Python floats (same bits) for the one-sample path."""
        self._increasing = ts[1:] > ts[:-1]

    def __len__(self) -> int:
        return len(self.refs)


# --------------------------------------------------------------------------- samples of one append


def one_sample(timestamps: object, values: object) -> tuple[float, float] | None:
    """(t, v) when the arguments are one float64 sample with a finite time (a scrape or
    remote_write sample), else None. Values keep their bits (NaN payloads included)."""
    if type(timestamps) is np.ndarray and type(values) is np.ndarray:
        if timestamps.shape != (1,) or values.shape != (1,):
            return None
        if timestamps.dtype != np.float64 or values.dtype != np.float64:
            return None
        t, v = float(timestamps[0]), float(values[0])
    elif type(timestamps) is float and type(values) is float:
        t, v = timestamps, values
    else:
        return None
    return (t, v) if t - t == 0.0 else None


def as_samples(timestamps: object, values: object) -> tuple[np.ndarray, np.ndarray]:
    ts = np.atleast_1d(np.asarray(timestamps, dtype=np.float64))
    vals = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if ts.ndim != 1 or vals.ndim != 1 or ts.shape != vals.shape:
        raise ValueError(f"timestamps {ts.shape} and values {vals.shape} must be scalars or equal-length 1-D")
    if not np.isfinite(ts).all():
        raise ValueError("timestamps must be finite numbers of seconds")
    return ts, vals


def classify_samples(
    ts: np.ndarray, vals: np.ndarray, newest: tuple[float, np.float64] | None
) -> tuple[np.ndarray, int, int]:
    """Mask of accepted samples, and the duplicate / out-of-order counts (rules in the module doc)."""
    n = len(ts)
    before = np.empty(n, dtype=np.float64)
    before[0] = -np.inf if newest is None else newest[0]
    if n > 1:
        np.maximum.accumulate(ts[:-1], out=before[1:])
        np.maximum(before[1:], before[0], out=before[1:])
    accepted = ts > before
    rejected = ~accepted
    if not rejected.any():
        return accepted, 0, 0
    # The newest sample before i is the last accepted one before i (or the stored newest).
    idx = np.where(accepted, np.arange(n), -1)
    last_acc = np.empty(n, dtype=np.int64)
    last_acc[0] = -1
    if n > 1:
        np.maximum.accumulate(idx[:-1], out=last_acc[1:])
    bits = vals.view(np.uint64)
    newest_bits = np.empty(n, dtype=np.uint64)
    has_prev = last_acc >= 0
    newest_bits[has_prev] = bits[last_acc[has_prev]]
    if newest is not None:
        newest_bits[~has_prev] = np.asarray(newest[1], dtype=np.float64).view(np.uint64)
    else:
        newest_bits[~has_prev] = 0
    same_time = ts == before
    duplicate = rejected & same_time & (bits == newest_bits)
    n_dup = int(duplicate.sum())
    return accepted, n_dup, int(rejected.sum()) - n_dup

__all__ = [
    "as_samples",
    "classify_samples",
    "one_sample",
    "STALE_NAN",
    "STALE_NAN_BITS",
    "RefBatch",
    "SeriesRef",
    "is_stale_marker",
    "series_ref",
    "validate_label_name",
    "validate_metric_name",
]
