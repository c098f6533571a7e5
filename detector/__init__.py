"""csf, the constraint-sequence detector: which one constraint limits the platform now.

The public surface (imported lazily, so ``import detector`` stays cheap)::

    from detector import load_pack, builtin_pack, Pack, Pipeline, Evaluation, CsfError

Errors: `CsfError` is the root of every error csf raises for bad input or a failed
dependency (`detector.errors` draws the tree).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from detector.errors import CsfError, DataError, SpecError

__version__ = "0.1.0"

_LAZY = {
    "load_pack": "detector.spec.load",
    "load_pack_text": "detector.spec.load",
    "builtin_pack": "detector.spec.load",
    "default_pack": "detector.spec.load",
    "PackError": "detector.spec.load",
    "Pack": "detector.spec.pack",
    "Signal": "detector.spec.signals",
    "Pipeline": "detector.decision.pipeline",
    "Evaluation": "detector.evidence.results",
    "SourceError": "detector.source.frame",
    "OpenMetricsError": "detector.source.openmetrics",
    "IngestError": "detector.source.ingest",
    "ConfigError": "detector.service.config",
    "StateError": "detector.service.state",
    "WalError": "detector.source.wal",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'detector' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["CsfError", "DataError", "SpecError", "__version__", *_LAZY]
