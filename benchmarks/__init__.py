"""Reproducible performance measurements of csf: ``python -m benchmarks``.

Every benchmark is a function ``run(size) -> list[Measurement]`` in a module of this
package; `benchmarks.__main__` pins the process to one core (before numpy starts its
BLAS threads), runs the chosen benchmarks, prints a table and writes JSON. Sizes:
``smoke`` (seconds; what CI runs through tests/integration/test_benchmarks_smoke.py), ``quick``
and ``full`` (the figures in BENCHMARKS.md).

Nothing here is imported by the product, and this module imports no numpy, so that the
entry point can choose the CPU affinity before any BLAS library starts.
"""

SIZES = ("smoke", "quick", "full")

__all__ = ["SIZES"]
