"""The closed, compressed part of one stored series (`detector.source.store`).

A store created with ``chunk_samples=C`` keeps the newest samples of each series raw (its
*head*, at least C of them once the series is that long) and moves older ones, C at a
time, into a `ChunkList`: chunks of `detector.source.chunks`, in time order, each with its
first and last timestamp, its size and a serial number. Retention drops whole chunks and
hides the samples of the first chunk older than the cutoff (`skip`), so the list reads
exactly as the raw samples it replaced would after the same retention.

Decoded chunks are kept in a `DecodeCache` (shared by the store's series, bounded in
samples, least recently used first out), so a window that keeps reading the same chunk
(the newest closed one, typically) decodes it once.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from detector.source.chunks import decode_chunk, encode_chunk

_SERIALS = itertools.count(1)


class _Chunk(NamedTuple):
    t_first: float
    t_last: float
    n: int
    data: bytes
    serial: int
    """Never reused: the key of the decoded chunk in a `DecodeCache`."""


class DecodeCache:
    """Decoded chunks by serial, at most `max_samples` samples, least recently used evicted first."""

    def __init__(self, max_samples: int = 1 << 20) -> None:
        self.max_samples = max_samples
        self._items: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._samples = 0

    def get(self, chunk: _Chunk) -> tuple[np.ndarray, np.ndarray]:
        hit = self._items.get(chunk.serial)
        if hit is not None:
            self._items.move_to_end(chunk.serial)
            return hit
        ts, vals = decode_chunk(chunk.data)
        ts.flags.writeable = False
        vals.flags.writeable = False
        self._items[chunk.serial] = (ts, vals)
        self._samples += chunk.n
        while self._samples > self.max_samples and len(self._items) > 1:
            _, (old_ts, _) = self._items.popitem(last=False)
            self._samples -= len(old_ts)
        return ts, vals

    def nbytes(self) -> int:
        return 16 * self._samples


class ChunkList:
    """Compressed, closed samples of one series, oldest first (rules in the module doc)."""

    __slots__ = ("chunks", "skip", "samples", "nbytes")

    def __init__(self) -> None:
        self.chunks: list[_Chunk] = []
        self.skip = 0
        """Samples of the first chunk older than the retention cutoff (hidden)."""
        self.samples = 0
        """Visible samples."""
        self.nbytes = 0

    def __len__(self) -> int:
        return self.samples

    def add(self, ts: np.ndarray, vals: np.ndarray) -> None:
        """Append a chunk of samples newer than every stored one."""
        data = encode_chunk(ts, vals)
        self.chunks.append(_Chunk(float(ts[0]), float(ts[-1]), len(ts), data, next(_SERIALS)))
        self.samples += len(ts)
        self.nbytes += len(data)

    def first_time(self, cache: DecodeCache) -> float | None:
        if not self.chunks:
            return None
        if self.skip == 0:
            return self.chunks[0].t_first
        ts, _ = cache.get(self.chunks[0])
        return float(ts[self.skip])

    def drop_before(self, cutoff: float, cache: DecodeCache) -> int:
        """Forget samples older than `cutoff`; returns how many."""
        dropped = 0
        while self.chunks and self.chunks[0].t_last < cutoff:
            gone = self.chunks.pop(0)
            dropped += gone.n - self.skip
            self.nbytes -= len(gone.data)
            self.skip = 0
        if self.chunks and self.chunks[0].t_first < cutoff:
            ts, _ = cache.get(self.chunks[0])
            k = int(np.searchsorted(ts, cutoff, side="left"))
            if k > self.skip:
                dropped += k - self.skip
                self.skip = k
        self.samples -= dropped
        return dropped

    def encoded(self, cache: DecodeCache) -> list[tuple[bytes, int]]:
        """(chunk, sample count) of the visible samples, oldest first: the stored chunks as
        they are, the first one re-encoded without its hidden samples."""
        out = [(c.data, c.n) for c in self.chunks]
        if out and self.skip:
            ts, vals = cache.get(self.chunks[0])
            out[0] = (encode_chunk(ts[self.skip :], vals[self.skip :]), self.chunks[0].n - self.skip)
        return out

    def since(self, t: float, cache: DecodeCache) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The visible samples of every chunk that holds one at or after `t` (whole chunks,
        in order; the caller concatenates them with the head)."""
        ts_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        lasts = [c.t_last for c in self.chunks]
        first = int(np.searchsorted(lasts, t, side="left")) if lasts else 0
        for i in range(first, len(self.chunks)):
            ts, vals = cache.get(self.chunks[i])
            if i == 0 and self.skip:
                ts, vals = ts[self.skip :], vals[self.skip :]
            ts_parts.append(ts)
            val_parts.append(vals)
        return ts_parts, val_parts


__all__ = ["ChunkList", "DecodeCache"]
