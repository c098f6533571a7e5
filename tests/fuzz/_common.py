"""Shared entry point of the atheris harnesses in this directory (not collected by pytest).

Each harness is a script: ``python tests/fuzz/fuzz_<target>.py [libFuzzer flags]``, e.g.
``-max_total_time=300`` (seconds) or ``-runs=100000``, optionally with a corpus directory
(``tests/fuzz/corpus/<target>``, created by `seeds`; libFuzzer adds what it finds). A
harness calls the target with bytes from libFuzzer and lets only the target's own typed
error pass; anything else is a crash that libFuzzer reports, saving the input as
``tests/fuzz/artifacts/<target>-crash-<sha1>``. Both folders are git-ignored.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

CORPUS = Path(__file__).resolve().parent / "corpus"


def seeds(target: str, examples: list[bytes]) -> Path:
    """Write the seed inputs of `target` into its corpus directory (idempotent); returns it."""
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(examples):
        path = folder / f"seed-{i}"
        if not path.exists():
            path.write_bytes(data)
    return folder


def run(target: str, one_input: Callable[[bytes], None], examples: list[bytes]) -> None:
    """Start libFuzzer on `one_input`; without a directory argument the seed corpus is used."""
    argv = list(sys.argv)
    if not any(a.startswith("-artifact_prefix=") for a in argv[1:]):
        artifacts = CORPUS.parent / "artifacts"
        artifacts.mkdir(exist_ok=True)
        argv.insert(1, f"-artifact_prefix={artifacts}/{target}-")
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(str(seeds(target, examples)))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
