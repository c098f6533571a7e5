"""atheris harness: `load_pack_text` returns a Pack or raises PackError, nothing else.

Run: ``python tests/fuzz/fuzz_pack.py -max_total_time=300`` (see `_common`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["detector"]):
    from detector.spec.load import PackError, default_pack_path, load_pack_text

from tests.fuzz._common import run  # noqa: E402


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        load_pack_text(text, source="fuzz.yaml")
    except PackError as exc:
        if not exc.issues:
            raise AssertionError("PackError without issues") from exc


if __name__ == "__main__":
    run("pack", one_input, [default_pack_path().read_bytes(), b"apiVersion: csf/v1\nkind: ConstraintPack\n"])
