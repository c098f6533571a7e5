"""`from detector import CsfError` catches every error csf raises for bad input or a failed source."""

from __future__ import annotations

from pathlib import Path

import pytest

import detector
from detector import CsfError, DataError, SpecError


def test_the_tree() -> None:
    assert issubclass(detector.PackError, SpecError) and issubclass(detector.ConfigError, SpecError)
    assert issubclass(detector.OpenMetricsError, DataError) and issubclass(detector.OpenMetricsError, ValueError)
    assert issubclass(detector.IngestError, DataError)
    for cls in (SpecError, DataError, detector.SourceError, detector.StateError, detector.WalError):
        assert issubclass(cls, CsfError)
    with pytest.raises(AttributeError):
        _ = detector.NoSuchThing  # type: ignore[attr-defined]


def test_real_raises_are_caught_by_the_root(tmp_path: Path) -> None:
    from detector.service.config import load_config
    from detector.source.openmetrics import load_openmetrics
    from detector.source.prometheus_api import PrometheusSource
    from detector.source.store import SampleStore
    from detector.spec.signals import Signal
    from tests._procs import free_port

    caught: list[type] = []

    def attempt(action) -> None:  # type: ignore[no-untyped-def]
        try:
            action()
        except CsfError as exc:  # the one except an embedding program needs
            caught.append(type(exc))
        else:
            raise AssertionError("expected an error")

    attempt(lambda: detector.load_pack_text("apiVersion: csf/v9\n"))
    bad_cfg = tmp_path / "csf.yaml"
    bad_cfg.write_text("nonsense: 1\n")
    attempt(lambda: load_config(bad_cfg, {}, {}))
    bad_om = tmp_path / "bad.om"
    bad_om.write_text("x 1 2\nnot a sample line\n")
    attempt(lambda: load_openmetrics(bad_om, SampleStore()))
    src = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=1, retries=0)
    attempt(lambda: src.query_range(Signal(kind="gauge", metric="up"), 0.0, 60.0, 60.0))
    src.close()
    from detector.source.wal import WriteAheadLog

    (tmp_path / "wal-owned").mkdir()
    owner = WriteAheadLog(tmp_path / "wal-owned")
    owner.open(SampleStore())
    attempt(lambda: WriteAheadLog(tmp_path / "wal-owned").open(SampleStore()))
    owner.close()
    expected = [
        detector.PackError,
        detector.ConfigError,
        detector.OpenMetricsError,
        detector.SourceError,
        detector.WalError,
    ]
    assert all(issubclass(got, want) for got, want in zip(caught, expected, strict=True)), caught
