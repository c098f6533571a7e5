"""The errors csf raises for bad input or a failed dependency, under one root.

A program embedding csf catches "any csf error" with ``except CsfError``; a caller's
programming mistake (a negative step, a malformed argument) stays a ``ValueError``.
"Cannot compute" is never an exception: it is an outcome (``INCONCLUSIVE``, ``observe``).

::

    CsfError
    ├── SpecError               a pack or configuration file is invalid
    │   ├── PackError           detector.spec.load: every problem, with file:line:col and field path
    │   └── ConfigError         detector.service.config
    ├── SourceError             detector.source.frame: a data source could not answer (down, timeout, refusal)
    ├── DataError               input data is malformed
    │   ├── OpenMetricsError    detector.source.openmetrics: with the line number (also a ValueError)
    │   └── IngestError         detector.source.ingest: a pushed request refused, with its HTTP status
    ├── StateError              detector.service.state: the state database failed
    └── WalError                detector.source.wal: a push pipeline's write-ahead log directory is unusable

Each subclass is defined next to the code that raises it (and carries that code's
context: issues, line number, status); this module only holds the roots, and imports
nothing, so every stage can use it.
"""

from __future__ import annotations


class CsfError(Exception):
    """Root of every error csf raises for bad input or a failed dependency."""


class SpecError(CsfError):
    """A pack or configuration file is invalid."""


class DataError(CsfError):
    """Input data (a file, a pushed request) is malformed."""


__all__ = ["CsfError", "DataError", "SpecError"]
