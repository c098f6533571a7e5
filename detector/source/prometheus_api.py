"""`PrometheusSource`: evaluate signals through a Prometheus-compatible HTTP API.

The source compiles a `Signal` with `detector.source.promql.compile_promql` (or sends its
raw ``promql`` override verbatim) and asks ``POST /api/v1/query_range`` for the grid
``start, start+step, ... <= end`` (the grid of `detector.source.native.evaluation_times`).
It works with Prometheus and with anything that serves its query API (Thanos,
Mimir/Cortex with ``tenant`` sent as ``X-Scope-OrgID``, VictoriaMetrics).

Rules
-----
* **Splitting.** Prometheus refuses a range query with more than 11,000 points per
  series; longer grids are split into consecutive requests of at most
  `MAX_POINTS_PER_REQUEST` points and stitched back together.
* **Grid.** Each request carries ``nocache=1``: VictoriaMetrics (with its default
  response cache) would otherwise round ``start`` and ``end`` of a grid of 50 points or
  more to multiples of ``step`` and answer at times csf did not ask for. Prometheus
  ignores the parameter, as it ignores every form field it does not know.
* **Values.** Sample values arrive as strings; ``"NaN"``, ``"+Inf"`` and ``"-Inf"``
  are parsed as such. Points are placed on the requested grid by their timestamp;
  grid points with no returned sample are NaN: the source never invents a value,
  so a series absent from the range is NaN throughout (or no unit at all).
* **Units.** Each result series becomes the unit given by its labels restricted to
  ``signal.by`` (``__name__`` is always dropped), sorted like the native engine.
  Two result series that collapse onto one unit make the query ambiguous and raise
  `SourceError` (a raw ``promql`` override must aggregate to the ``by`` labels).
* **Division kinds.** For ``ratio`` and ``histogram_mean`` signals without a raw
  override, non-finite quotients (x/0) are treated as missing, exactly as
  `detector.source.native` documents; units left without any value are dropped. Every
  other value (``NaN`` from ``histogram_quantile`` included) is kept as returned.
* **Errors.** ``status: error`` responses raise `SourceError` with Prometheus'
  ``errorType`` and ``error``. Client errors (4xx: ``bad_data``, ``execution``) are
  not retried; server errors (5xx, e.g. ``timeout``/``unavailable``), 429,
  connection failures and timeouts are retried up to ``retries`` times with
  exponential backoff (``backoff * 2**attempt`` seconds, capped at 30 s). A body
  that is not the JSON Prometheus documents raises `SourceError` at once.
  ``warnings`` (and Prometheus 3 ``infos``) are logged and otherwise ignored.
* **Secrets.** Bearer tokens, basic-auth passwords and URL credentials never appear
  in logs, exception messages or ``repr``; the URL is shown without its userinfo.
* ``samples_read`` is Prometheus' ``stats.samples.totalQueryableSamples`` when the
  server reports it (``stats=all``), else 0.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np

from detector.source.frame import PROBE_WINDOWS, Labels, SeriesSurvey, SignalFrame, SourceError, survey_series
from detector.source.native import evaluation_times
from detector.source.promql import compile_promql, selector
from detector.spec.signals import Signal
from detector.timefmt import format_duration

log = logging.getLogger(__name__)

MAX_POINTS_PER_REQUEST = 11_000
"""Prometheus' hard limit of resolution points per series in one range query."""

_MAX_BACKOFF = 30.0
_DIVISION_KINDS = ("ratio", "histogram_mean")
SURVEY_TTL = 3600.0
"""A learned sample interval is reused for evaluations up to an hour later (evaluation time)."""
_USER_AGENT = "csf-detector"


def redact_url(url: str) -> str:
    """`url` without user:password@ (safe to log)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def format_timestamp(t: float) -> str:
    """Unix seconds as Prometheus reads them (millisecond precision, no exponent)."""
    return f"{t:.3f}"


def format_step(step: float) -> str:
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a positive finite number of seconds, got {step!r}")
    return f"{step:.3f}".rstrip("0").rstrip(".")


def parse_sample_value(text: object) -> float:
    """A Prometheus JSON sample value ('1.5', 'NaN', '+Inf', '-Inf') as a float."""
    if not isinstance(text, str):
        raise SourceError(f"sample value {text!r} is not a string")
    try:
        return float(text)
    except ValueError as exc:
        raise SourceError(f"sample value {text!r} is not a number") from exc


def _retriable_status(status: int) -> bool:
    return status == 429 or status >= 500


class _GaveUp(SourceError):
    """The server stayed unreachable or kept failing (as opposed to refusing the query)."""


class _Retriable(Exception):
    """One attempt failed in a way that may succeed when repeated."""


class PrometheusSource:
    """`Source` backed by the Prometheus HTTP query API (rules in the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        bearer_token: str | None = None,
        bearer_token_file: str | Path | None = None,
        basic_auth: tuple[str, str] | None = None,
        tenant: str | None = None,
        verify_tls: bool = True,
        name: str = "prometheus",
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"prometheus url must be http(s)://host[:port][/prefix], got {redact_url(url)!r}"
            )
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff!r}")
        if bearer_token is not None and bearer_token_file is not None:
            raise ValueError("give bearer_token or bearer_token_file, not both")
        if (bearer_token is not None or bearer_token_file is not None) and basic_auth is not None:
            raise ValueError("give a bearer token or basic_auth, not both")
        self.url = url.rstrip("/")
        self.name = name
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.tenant = tenant
        self._bearer_token = bearer_token
        self._bearer_token_file = Path(bearer_token_file) if bearer_token_file is not None else None
        self._basic_auth = basic_auth
        self._sleep = sleep
        self._surveys: dict[tuple[str, tuple[tuple[str, ...], ...]], tuple[float, SeriesSurvey]] = {}
        self._survey_failures: dict[tuple[str, tuple[tuple[str, ...], ...]], tuple[float, str]] = {}
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=self.timeout, verify=verify_tls)

    def __repr__(self) -> str:
        return f"PrometheusSource(name={self.name!r}, url={redact_url(self.url)!r})"

    # -- lifecycle

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        token = self._bearer_token
        if self._bearer_token_file is not None:
            try:
                token = self._bearer_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SourceError(
                    f"cannot read bearer token file {self._bearer_token_file}: {exc.strerror}"
                ) from None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.tenant:
            headers["X-Scope-OrgID"] = self.tenant
        return headers

    def _request_options(self) -> dict[str, Any]:
        """Headers, auth and timeout for one request (the token file is read here, per request)."""
        options: dict[str, Any] = {"headers": self._headers(), "timeout": self.timeout}
        if self._basic_auth is not None:
            options["auth"] = httpx.BasicAuth(*self._basic_auth)
        return options

    def _attempt(self, path: str, form: Mapping[str, str]) -> Any:
        where = f"{redact_url(self.url)}{path}"
        try:
            resp = self._client.post(self.url + path, data=dict(form), **self._request_options())
        except httpx.TimeoutException as exc:
            raise _Retriable(f"{where}: timed out after {self.timeout:g}s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retriable(f"{where}: {type(exc).__name__}: {exc}") from None
        body: Any = None
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            msg = f"{where}: HTTP {resp.status_code} {body.get('errorType', '')}: {body.get('error', '')}".rstrip()
            if _retriable_status(resp.status_code):
                raise _Retriable(msg)
            raise SourceError(msg)
        if resp.status_code != 200:
            snippet = resp.text[:200].strip() if body is None else ""
            msg = f"{where}: HTTP {resp.status_code}" + (f": {snippet}" if snippet else "")
            if _retriable_status(resp.status_code):
                raise _Retriable(msg)
            raise SourceError(msg)
        if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
            raise SourceError(f"{where}: response is not a Prometheus API success document")
        for kind in ("warnings", "infos"):
            for w in body.get(kind) or ():
                log.warning("prometheus %s %s for %s: %s", self.name, kind[:-1], path, w)
        return body["data"]

    def _call(self, path: str, form: Mapping[str, str]) -> Any:
        attempt = 0
        while True:
            try:
                return self._attempt(path, form)
            except _Retriable as exc:
                if attempt >= self.retries:
                    raise _GaveUp(f"{exc} (gave up after {attempt + 1} attempts)") from None
                delay = min(_MAX_BACKOFF, self.backoff * (2**attempt))
                log.warning("prometheus %s: %s; retrying in %.2fs", self.name, exc, delay)
                if delay > 0:
                    self._sleep(delay)
                attempt += 1

    # -- Source

    def query_range(self, signal: Signal, start: float, end: float, step: float) -> SignalFrame:
        times = evaluation_times(start, end, step)
        query = signal.promql if signal.promql else compile_promql(signal)
        n_t = len(times)
        by = tuple(signal.by)
        rows: dict[Labels, np.ndarray] = {}
        samples_read = 0
        step_text = format_step(step)
        for i0 in range(0, n_t, MAX_POINTS_PER_REQUEST):
            i1 = min(n_t, i0 + MAX_POINTS_PER_REQUEST)
            chunk_start = float(times[i0])
            form = {
                "query": query,
                "start": format_timestamp(chunk_start),
                "end": format_timestamp(float(times[i1 - 1])),
                "step": step_text,
                "timeout": f"{self.timeout:g}s",
                "stats": "all",
                # VictoriaMetrics otherwise moves a grid of 50+ points onto multiples of the
                # step (for its cache): every point would miss csf's grid. Prometheus ignores it.
                "nocache": "1",
            }
            data = self._call("/api/v1/query_range", form)
            samples_read += _samples_from_stats(data)
            self._place(data, by, times, i0, i1, step, rows)
        division = signal.kind in _DIVISION_KINDS and not signal.promql
        units = sorted(rows)
        if division:
            for u in units:
                rows[u][~np.isfinite(rows[u])] = np.nan
            units = [u for u in units if not np.isnan(rows[u]).all()]
        values = np.stack([rows[u] for u in units]) if units else np.empty((0, n_t))
        return SignalFrame(units=tuple(units), times=times, values=values, samples_read=samples_read)

    def _place(
        self,
        data: Any,
        by: tuple[str, ...],
        times: np.ndarray,
        i0: int,
        i1: int,
        step: float,
        rows: dict[Labels, np.ndarray],
    ) -> None:
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
            raise SourceError(f"range query returned {got!r}, expected a matrix")
        result = data.get("result")
        if not isinstance(result, list):
            raise SourceError("range query result is not a list")
        chunk_start = float(times[i0])
        seen_in_chunk: set[Labels] = set()
        for series in result:
            if not isinstance(series, dict) or not isinstance(series.get("metric", {}), dict):
                raise SourceError("range query result series is not an object with 'metric' and 'values'")
            metric = series.get("metric") or {}
            unit = tuple(sorted((k, str(metric[k])) for k in by if k in metric and metric[k] != ""))
            if unit in seen_in_chunk:
                raise SourceError(
                    f"query returned several series for unit {dict(unit)}; "
                    f"aggregate the query to its 'by' labels {list(by)}"
                )
            seen_in_chunk.add(unit)
            row = rows.get(unit)
            if row is None:
                row = rows[unit] = np.full(len(times), np.nan)
            values = series.get("values")
            if not isinstance(values, list):
                raise SourceError("range query result series has no 'values' list")
            for point in values:
                if not isinstance(point, list | tuple) or len(point) != 2:
                    raise SourceError(f"malformed sample {point!r}")
                ts, raw = point
                if not isinstance(ts, int | float) or isinstance(ts, bool):
                    raise SourceError(f"malformed sample timestamp {ts!r}")
                k = i0 + int(round((float(ts) - chunk_start) / step))
                if k < i0 or k >= i1 or abs(float(times[k]) - float(ts)) > 0.0015:
                    log.debug("prometheus %s: sample at %s is off the requested grid; ignored", self.name, ts)
                    continue
                row[k] = parse_sample_value(raw)

    # -- instant queries

    def query(self, expr: str, t: float) -> list[tuple[Labels, float]]:
        """An instant query's vector at `t` as (labels, value) pairs (a scalar answers one pair)."""
        data = self._call("/api/v1/query", {"query": expr, "time": format_timestamp(t)})
        if not isinstance(data, dict):
            raise SourceError("instant query result is not an object")
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar" and isinstance(result, list) and len(result) == 2:
            return [((), parse_sample_value(result[1]))]
        if kind != "vector" or not isinstance(result, list):
            raise SourceError(f"instant query returned {kind!r}, expected a vector")
        out = []
        for item in result:
            if not isinstance(item, dict) or not isinstance(item.get("value"), list) or len(item["value"]) != 2:
                raise SourceError("instant query result sample is malformed")
            labels = tuple(sorted((str(k), str(v)) for k, v in (item.get("metric") or {}).items()))
            out.append((labels, parse_sample_value(item["value"][1])))
        return out

    def data_range(self, metric: str, now: float) -> tuple[float, float] | None:
        """(oldest, newest) sample time of `metric` up to `now` (None: no sample in ten years).

        Two subqueries over ``timestamp()`` per end: a coarse one (daily steps over ten years)
        finds the day, a fine one (5-minute steps over the two days around it) the time, to
        within a few minutes. Prometheus and VictoriaMetrics both answer them."""
        sel = selector(metric)
        out: list[float] = []
        for agg in ("min", "max"):
            coarse = self.query(f"{agg}({agg}_over_time(timestamp({sel})[3650d:1d]))", now)
            if not coarse or not math.isfinite(coarse[0][1]):
                return None
            at = min(now, coarse[0][1] + 86400.0)
            fine = self.query(f"{agg}({agg}_over_time(timestamp({sel})[2d:5m]))", at)
            value = fine[0][1] if fine and math.isfinite(fine[0][1]) else coarse[0][1]
            out.append(value)
        return out[0], out[1]

    # -- survey

    def survey(
        self, metric: str, matchers: Sequence[tuple[str, ...]], end: float, lookback: float
    ) -> SeriesSurvey:
        """Label sets from ``/api/v1/series`` over the lookback, and the sample interval from
        raw samples (an instant query of a range selector) over the shortest probe window that
        holds enough of them (`detector.source.frame.survey_series`). A survey that found an interval
        is reused for `SURVEY_TTL` seconds of evaluation time. Histogram buckets are probed on
        their ``le="+Inf"`` series only, which keeps the raw query small."""
        key = (metric, tuple(matchers))
        hit = self._surveys.get(key)
        if hit is not None and 0.0 <= end - hit[0] < SURVEY_TTL:
            return hit[1]
        failed = self._survey_failures.get(key)
        if failed is not None and 0.0 <= end - failed[0] < SURVEY_TTL:
            raise SourceError(failed[1])
        try:
            return self._survey(key, end, lookback)
        except _GaveUp:
            raise  # down now, maybe not on the next evaluation
        except SourceError as exc:  # refused (an API without /series or raw queries): stop asking
            self._survey_failures[key] = (end, f"{exc} (not asked again for {SURVEY_TTL:g}s)")
            raise

    def _survey(
        self, key: tuple[str, tuple[tuple[str, ...], ...]], end: float, lookback: float
    ) -> SeriesSurvey:
        metric, matchers = key
        sel = selector(metric, tuple(matchers))
        data = self._call(
            "/api/v1/series",
            {"match[]": sel, "start": format_timestamp(end - lookback), "end": format_timestamp(end)},
        )
        if not isinstance(data, list):
            raise SourceError("series query result is not a list")
        label_sets = sorted(
            {
                tuple(sorted((str(k), str(v)) for k, v in item.items() if k != "__name__"))
                for item in data
                if isinstance(item, dict)
            }
        )
        probe_sel = sel
        if metric.endswith("_bucket") and any(("le", "+Inf") in labels for labels in label_sets):
            probe_sel = selector(metric, tuple(sorted((*matchers, ("le", "+Inf")))))
        probe: list[tuple[float, list[np.ndarray]]] = []
        if label_sets:
            for window in PROBE_WINDOWS:
                stamps = self._raw_timestamps(probe_sel, window, end)
                probe.append((window, stamps))
                if stamps and float(np.median([len(t) for t in stamps])) >= 3:
                    break
        result = survey_series(metric, matchers, label_sets, probe)
        if result.sample_interval is not None:
            self._surveys[key] = (end, result)
        return result

    def _raw_timestamps(self, sel: str, window: float, end: float) -> list[np.ndarray]:
        data = self._call(
            "/api/v1/query", {"query": f"{sel}[{format_duration(window)}]", "time": format_timestamp(end)}
        )
        if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise SourceError("raw sample query did not return a matrix")
        out: list[np.ndarray] = []
        for series in data["result"]:
            values = series.get("values") if isinstance(series, dict) else None
            if not isinstance(values, list):
                raise SourceError("raw sample query result series has no 'values' list")
            ts = [float(p[0]) for p in values if isinstance(p, list | tuple) and len(p) == 2]
            out.append(np.sort(np.array(ts, dtype=np.float64)))
        return out

    # -- health

    def up(self) -> bool:
        """True when the server answers: ``/-/ready`` is 200, or (where that path is absent) ``1`` evaluates."""
        try:
            resp = self._client.get(self.url + "/-/ready", **self._request_options())
        except (httpx.HTTPError, SourceError):
            return False
        if resp.status_code == 200:
            return True
        if resp.status_code not in (404, 405):
            return False
        try:
            data = self._attempt("/api/v1/query", {"query": "1"})
        except (SourceError, _Retriable):
            return False
        return isinstance(data, dict) and data.get("resultType") == "scalar"


def _samples_from_stats(data: Any) -> int:
    try:
        n = data["stats"]["samples"]["totalQueryableSamples"]
    except (KeyError, TypeError):
        return 0
    return int(n) if isinstance(n, int | float) and not isinstance(n, bool) else 0
